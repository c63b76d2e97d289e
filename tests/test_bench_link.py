"""bench/link.py carries resets as a real line does (issue 18): a reset from the server reaches
the client as a reset, and ``reset_every`` resets each connection after about N bytes."""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from bench.link import LinkEmulator


def _resetting_server(after: int) -> tuple[socket.socket, threading.Thread]:
    """A server that reads ``after`` bytes, then resets the connection (RST)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        got = 0
        while got < after:
            got += len(conn.recv(4096))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def _send_until_refused(port: int, seconds: float) -> tuple[int, bool]:
    """(bytes sent, whether the connection failed) within ``seconds``."""
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        try:
            while time.monotonic() - started < seconds:
                sock.sendall(b"x" * 16384)
                sent += 16384
        except OSError:
            return sent, True
    return sent, False


def test_a_reset_from_the_server_reaches_the_client():
    server, _ = _resetting_server(10_000)
    with server, LinkEmulator(server.getsockname()[1], rate_mbit=20, rtt_ms=10) as link:
        sent, failed = _send_until_refused(link.port, 5.0)
    assert failed, f"the client sent {sent:,} bytes into a connection the server had reset"
    assert link.resets == 1


@pytest.mark.parametrize("every", [64 * 1024, 256 * 1024])
def test_reset_every_resets_each_connection_after_about_n_bytes(every):
    sink = socket.create_server(("127.0.0.1", 0))

    def drain():
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [None for _ in iter(lambda: _recv(c), b"")], daemon=True).start()

    threading.Thread(target=drain, daemon=True).start()
    with sink, LinkEmulator(sink.getsockname()[1], rate_mbit=100, rtt_ms=2, reset_every=every, seed=1) as link:
        for _ in range(3):
            _, failed = _send_until_refused(link.port, 10.0)
            assert failed
        assert link.resets == 3
        assert 3 * 0.75 * every - 16384 * 3 <= link.bytes_up <= 3 * 1.25 * every


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""
