"""A TCP proxy on 127.0.0.1 that breaks connections on purpose: reset, stall, slow drip.

bench/link.py emulates a healthy link (delay, a rate shared by every connection); it neither
resets nor blackholes one, so the faults live here. Each connection takes the ``Plan`` in force
when it was accepted:

* ``reset_after=N`` — forward the first N client bytes, then abort both sides with a TCP RST
  (SO_LINGER 0), as a NAT box or a flaky uplink does mid-upload;
* ``stall_after=N`` — forward the first N client bytes, then deliver nothing either way while
  keeping both sockets open (a blackhole): only timeouts can end it. The proxy notes when the
  server answered or closed (its timeout fired) and when the client gave up (its own fired);
* ``reset_around(N, rng)`` — a plan maker for ``proxy.plan``: each connection is reset after
  a random 0.75–1.25 × N client bytes, as a poor DSL or 4G line does every few MB;
* ``drip_bytes_per_second=R`` — forward client bytes at R bytes/s per connection (a very slow
  client), answers at full speed.

Threads, not asyncio: one thread per connection selects over both sockets (so a reset is a
real RST: no other thread still holds the socket), which is plenty for a test.
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tests.server_fixtures import close_socket

CHUNK = 16 * 1024
DRIP_CHUNK = 256


@dataclass(frozen=True)
class Plan:
    reset_after: int | None = None
    stall_after: int | None = None
    drip_bytes_per_second: float | None = None
    rate_bytes_per_second: float | None = None  # client bytes paced like a link (16 KiB pieces)


def reset_around(n: int, rng, rate: float = 8 * 1024 * 1024) -> Callable[[], Plan]:
    """``proxy.plan = reset_around(n, random.Random(seed))``: every connection is reset after a
    random 0.75–1.25 × ``n`` bytes from the client, which are paced at ``rate`` bytes/s. Paced,
    as a real link is: unpaced, loopback fills the server's socket buffer with megabytes that
    the RST then discards unread, which no WAN link does at 20 Mbit/s."""
    return lambda: Plan(reset_after=max(1, int(n * rng.uniform(0.75, 1.25))), rate_bytes_per_second=rate)


@dataclass
class Connection:
    """What happened on one proxied connection (times from time.monotonic())."""
    plan: Plan
    opened_at: float = field(default_factory=time.monotonic)
    sent_up: int = 0
    reset: bool = False
    stalled_at: float | None = None
    server_answered_at: float | None = None   # first server bytes after the stall began
    server_closed_at: float | None = None
    client_closed_at: float | None = None


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` clients connect to ``proxy.port``; set ``proxy.plan``
    (a Plan, or a callable making one for each new connection)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.plan = Plan()
        self.connections: list[Connection] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._running = False
        self._listener.close()
        self.drop_all()
        self._thread.join(5)

    def drop_all(self) -> None:
        """Close every open connection (ends stalls and drips)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            close_socket(sock)

    @property
    def bytes_up(self) -> int:
        """Client bytes forwarded so far, over every connection (what the link carried)."""
        return sum(c.sent_up for c in self.connections)

    @property
    def resets(self) -> int:
        return sum(c.reset for c in self.connections)

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _abort(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(True)
            conn = Connection(self.plan() if callable(self.plan) else self.plan)
            with self._lock:
                self.connections.append(conn)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(conn, client, upstream), daemon=True).start()

    def _pump(self, conn: Connection, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions of one connection in one thread (select), applying its plan."""
        plan = conn.plan
        limit = plan.reset_after if plan.reset_after is not None else plan.stall_after
        size = DRIP_CHUNK if plan.drip_bytes_per_second else CHUNK
        readers, next_read = [client, upstream], 0.0
        try:
            while readers and self._running:
                waiting = [s for s in readers if s is not client or time.monotonic() >= next_read]
                ready, _, _ = select.select(waiting, [], [], min(0.05, max(0.0, next_read - time.monotonic()))
                                            if client not in waiting else 0.05)
                for sock in ready:
                    data = sock.recv(size if sock is client else CHUNK)
                    if sock is client:
                        if not data:
                            readers.remove(client)
                            if conn.stalled_at is not None:
                                conn.client_closed_at = time.monotonic()
                            else:
                                upstream.shutdown(socket.SHUT_WR)
                            continue
                        if conn.stalled_at is not None:
                            continue  # swallowed
                        if limit is not None and conn.sent_up + len(data) >= limit:
                            upstream.sendall(data[:max(0, limit - conn.sent_up)])
                            conn.sent_up = limit
                            if plan.reset_after is not None:
                                conn.reset = True
                                _abort(client)
                                _abort(upstream)
                                return
                            conn.stalled_at = time.monotonic()
                            continue
                        upstream.sendall(data)
                        conn.sent_up += len(data)
                        pace = plan.drip_bytes_per_second or plan.rate_bytes_per_second
                        if pace:
                            next_read = time.monotonic() + len(data) / pace
                    else:
                        if conn.stalled_at is not None and data and conn.server_answered_at is None:
                            conn.server_answered_at = time.monotonic()
                        if not data:
                            conn.server_closed_at = time.monotonic()
                            readers.remove(upstream)
                            if conn.stalled_at is None:
                                client.shutdown(socket.SHUT_WR)
                            continue
                        if conn.stalled_at is None:
                            client.sendall(data)
        except (OSError, ValueError):  # ValueError: drop_all closed a socket under select (fd -1)
            pass
        finally:
            for sock in (client, upstream):
                close_socket(sock)


def _abort(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()

