"""The link emulator: a TCP proxy on 127.0.0.1 that behaves like a home uplink.

Camera nodes upload over 10–50 Mbit/s links tens of milliseconds away; on loopback a
request-per-file protocol looks free. So both our exporter and rsync go through this proxy,
which for each direction (shared by every connection through it, as one physical link is):

- paces bytes to the configured rate with a token bucket whose depth is one read (16 KiB), so
  a bulk transfer cannot burst past the rate;
- then holds each paced chunk for half the round trip before delivering it.

Reading stops while the bucket is empty, so back-pressure reaches the sender through TCP as it
would at a real bottleneck. ``calibrate`` measures the emulator itself (a bulk transfer and a
small request-response through it), so a printed figure always comes with proof that the link
was what it claims.
"""
from __future__ import annotations

import asyncio
import random
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass

READ_SIZE = 16 * 1024
START_TIMEOUT_SECONDS = 10.0


class Pacer:
    """One direction of the link: a token bucket at ``rate`` bytes/s, then a fixed delay."""

    def __init__(self, rate_bytes_per_s: float, delay_s: float, burst_bytes: int = READ_SIZE):
        self.rate = rate_bytes_per_s
        self.delay = delay_s
        self.burst_s = burst_bytes / rate_bytes_per_s
        self.free_at = 0.0  # when the bottleneck has sent everything accepted so far

    def admit(self, now: float, size: int) -> tuple[float, float]:
        """(deliver_at, wait): when this chunk leaves the far end, and how long the reader
        should pause before taking more (the bucket is empty until then)."""
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        wait = max(0.0, self.free_at - now - self.burst_s)
        return self.free_at + self.delay, wait


@dataclass
class Calibration:
    """What the emulator measured of itself."""
    rate_mbit: float          # configured
    rtt_ms: float             # configured
    measured_rate_mbit: float
    measured_rtt_ms: float

    @property
    def ok(self) -> bool:
        """Rate within 10% and round trip within 10% (or 3 ms) of the configured values."""
        rate_ok = abs(self.measured_rate_mbit - self.rate_mbit) <= 0.1 * self.rate_mbit
        rtt_ok = abs(self.measured_rtt_ms - self.rtt_ms) <= max(0.1 * self.rtt_ms, 3.0)
        return rate_ok and rtt_ok

    def describe(self) -> str:
        return (f"link emulator: configured {self.rate_mbit:g} Mbit/s, {self.rtt_ms:g} ms RTT; "
                f"measured {self.measured_rate_mbit:.2f} Mbit/s, {self.measured_rtt_ms:.1f} ms RTT "
                f"({'within 10%' if self.ok else 'OUT OF TOLERANCE'})")


class LinkEmulator:
    """``with LinkEmulator(target_port, rate_mbit=20, rtt_ms=40) as link:`` connect to link.port."""

    def __init__(self, target_port: int, rate_mbit: float, rtt_ms: float, target_host: str = "127.0.0.1",
                 reset_every: int | None = None, seed: int = 0):
        self.target = (target_host, target_port)
        self.rate_mbit = rate_mbit
        self.rtt_ms = rtt_ms
        # A poor line: each connection is reset (RST both ways) after a random 0.75–1.25 ×
        # ``reset_every`` bytes from the client, as a flaky DSL or 4G uplink does.
        self.reset_every = reset_every
        self._rng = random.Random(seed)
        self.resets = 0
        self.bytes_up = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LinkEmulator":
        """Listen on 127.0.0.1 (a free port) in a background thread."""
        self._thread = threading.Thread(target=self._run, name="link-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or self._error is not None:
            raise RuntimeError(f"link emulator did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_SECONDS)

    def __enter__(self) -> "LinkEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        rate = self.rate_mbit * 1e6 / 8
        half = self.rtt_ms / 2000.0
        up, down = Pacer(rate, half), Pacer(rate, half)
        tasks: set[asyncio.Task] = set()

        async def handle(client_r, client_w):
            task = asyncio.current_task()
            tasks.add(task)
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                client_w.close()
                tasks.discard(task)
                return
            for w in (client_w, server_w):
                _nodelay(w)
            reset_done: list[bool] = []
            budget = (int(self.reset_every * self._rng.uniform(0.75, 1.25)) if self.reset_every else None)

            def reset_both() -> None:
                """A reset seen on either side (or the link's own) reaches both ends as an RST:
                a half-close instead would leave the client sending into a dead connection."""
                if reset_done:
                    return
                reset_done.append(True)
                self.resets += 1
                for w in (client_w, server_w):
                    _abort(w)

            def count(n: int) -> None:
                self.bytes_up += n

            try:
                await asyncio.gather(_pipe(client_r, server_w, up, reset_both, budget, count),
                                     _pipe(server_r, client_w, down, reset_both))
            except asyncio.CancelledError:
                pass  # the emulator is stopping
            finally:
                for w in (client_w, server_w):
                    w.close()
                tasks.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), dropping whatever was not sent."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pacer: Pacer,
                on_reset=None, budget: int | None = None, on_bytes=None) -> None:
    """Read, pace, delay, deliver; half-close the far side at EOF (rsync relies on it). A reset
    read here (or ``budget`` bytes passed) calls ``on_reset``, which resets both sides."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver():
        while True:
            deliver_at, data = await queue.get()
            pause = deliver_at - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        passed = 0
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                if on_reset is not None:
                    on_reset()
                    return
                data = b""
            if data and budget is not None and passed + len(data) >= budget:
                if on_reset is not None:
                    on_reset()
                    return
            passed += len(data)
            if on_bytes is not None:
                on_bytes(len(data))
            now = loop.time()
            if not data:
                queue.put_nowait((now + pacer.delay, None))
                break
            deliver_at, wait = pacer.admit(now, len(data))
            queue.put_nowait((deliver_at, data))
            if wait > 0:
                await asyncio.sleep(wait)
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()


# -- calibration ------------------------------------------------------------------------------
def calibrate(rate_mbit: float, rtt_ms: float, bulk_bytes: int | None = None, pings: int = 7) -> Calibration:
    """Measure a bulk transfer and small request-responses through a fresh emulator.

    The bulk time runs from the first byte sent to the sink's one-byte acknowledgement of the
    last; one round trip (measured separately) is taken off, leaving the bottleneck's time.
    """
    rate = rate_mbit * 1e6 / 8
    bulk_bytes = bulk_bytes or int(rate * 1.0)  # about a second of transfer
    with _EchoSink() as sink, LinkEmulator(sink.port, rate_mbit, rtt_ms) as link:
        with socket.create_connection(("127.0.0.1", link.port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(pings):
                t0 = time.perf_counter()
                s.sendall(b"P")
                _recv_exact(s, 1)
                rtts.append(time.perf_counter() - t0)
            rtt = statistics.median(rtts)
            t0 = time.perf_counter()
            s.sendall(b"B" + bulk_bytes.to_bytes(8, "big"))
            block = b"\0" * 65536
            left = bulk_bytes
            while left:
                n = min(left, len(block))
                s.sendall(block[:n])
                left -= n
            _recv_exact(s, 1)
            elapsed = time.perf_counter() - t0
    transfer = max(elapsed - rtt, 1e-9)
    return Calibration(rate_mbit, rtt_ms, (bulk_bytes + 9) * 8 / transfer / 1e6, rtt * 1000)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("peer closed during calibration")
        out += chunk
    return out


class _EchoSink:
    """A loopback server for calibration: ``P`` → echoes ``P``; ``B`` + 8-byte length → reads
    that many bytes, then answers ``A``."""

    def __init__(self):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "_EchoSink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while True:
                    kind = conn.recv(1)
                    if not kind:
                        return
                    if kind == b"P":
                        conn.sendall(b"P")
                    elif kind == b"B":
                        left = int.from_bytes(_recv_exact(conn, 8), "big")
                        while left:
                            chunk = conn.recv(min(left, 1 << 20))
                            if not chunk:
                                return
                            left -= len(chunk)
                        conn.sendall(b"A")
            except OSError:
                return
