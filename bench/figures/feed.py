"""The live feed under load: how soon a watcher sees an import, and what open streams cost.

* ``feed_latency_p50_ms`` / ``feed_latency_p99_ms``: one ``/feed/stream`` client follows the
  archive while 16 exporters (the scaling figure's fleet) replicate their nights to it; for every
  item, the time it arrived minus the time its transaction committed (``committed_at``, from
  PostgreSQL's commit timestamps), as the issue defines it. An item without one (a server
  without ``track_commit_timestamp``) counts from its row being written (``logged_at``, inside
  the importing transaction, so also the rest of that transaction and its commit); the data
  text says how many did, and gives the percentiles from row write too. Both clocks are this
  machine's.
* ``feed_subscribers_import_ratio``: the fleet's import rate with 500 idle streams open against
  the same server vs none, side by side in pairs (the issue's 500; ``--quick`` opens 50). The
  streams filter on a camera that never reports: open, idle, and each checked against every
  batch of commits the listener reads (they cost imports only that check, never a wake).
* ``feed_memory_per_subscriber_kib``: the server's RSS (master + workers) with the 500 streams
  open minus without, per stream.
"""
from __future__ import annotations

import base64
import json
import socket
import statistics
import threading
import time

import requests
import urllib3

from .. import ours
from ..harness import Figure, alternate, median_ratio, percentile
from . import Context, log
from .scaling import Fleet

IDLE_STREAMS = 500
READ_BYTES = 64 * 1024
TIMEOUT = (10, 600)


class Watcher(threading.Thread):
    """A /feed/stream client recording each item's delay from its commit and from its row
    being written."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.response = requests.get(url + "/feed/stream", auth=(ours.IMPORT_USER, ours.IMPORT_PASSWORD),
                                     stream=True, timeout=TIMEOUT)
        self.response.raise_for_status()
        # Closing the response waits for the reading thread to let go of the stream, which it
        # does only when something arrives (the next heartbeat: up to 25 s of the run spent
        # waiting); shutting the socket down ends that read at once.
        self._sock = self.response.raw.connection.sock
        self.delays_ms: list[float] = []         # from commit (from row write when not known)
        self.written_delays_ms: list[float] = []  # from row write
        self.uncommitted = 0                      # items without committed_at
        self.items = 0

    def run(self) -> None:
        # Whatever has arrived, at once: iter_lines(chunk_size=1) cost ~3 ms of CPU per item
        # (10 s for a full run's 3000), so on a busy machine the figure measured this client.
        pending = b""
        try:
            while chunk := self.response.raw.read1(READ_BYTES):
                now_ms = time.time() * 1000
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"data: {") and b'"logged_at"' in line:
                        self._record(now_ms, json.loads(line[6:]))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, AttributeError, ValueError):
            pass  # the stream ended (close() shuts its socket down)

    def _record(self, now_ms: float, item: dict) -> None:
        written = now_ms - item["logged_at"]
        committed = item.get("committed_at")
        if committed is None:
            self.uncommitted += 1
        self.written_delays_ms.append(written)
        self.delays_ms.append(written if committed is None else now_ms - committed)
        self.items += 1

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(timeout=10)
        self.response.close()

    def describe(self) -> str:
        """What the latency figures measured from, for their data text."""
        if not self.delays_ms:
            return "no items"
        written = self.written_delays_ms
        if not self.uncommitted:
            source = "from commit (committed_at)"
        elif self.uncommitted < self.items:
            source = f"from commit (committed_at), {self.uncommitted} without it from row write (logged_at)"
        else:
            source = "from row write (logged_at): the server gave no committed_at"
        return (f"{source}; from row write p50 {percentile(written, 50):.1f} ms, "
                f"p99 {percentile(written, 99):.1f} ms")


def open_idle_streams(url: str, count: int) -> list[socket.socket]:
    """``count`` open /feed/stream connections that never match anything (and are never read)."""
    host, port = url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(f"{ours.IMPORT_USER}:{ours.IMPORT_PASSWORD}".encode()).decode()
    request = (f"GET /feed/stream?camera=nobody-bench HTTP/1.1\r\nHost: bench\r\n"
               f"Authorization: Basic {credentials}\r\nAccept: text/event-stream\r\n\r\n").encode()
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(request)
        socks.append(sock)
    for sock in socks:  # each answered 200 and started its stream
        head = sock.recv(4096)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"an idle stream was refused: {head[:80]!r}")
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    spec = ctx.sizes.scaling_node
    streams = 50 if ctx.quick else IDLE_STREAMS
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-feed.log") as server:
            fleet = Fleet(ctx, spec, server, central_db, prefix="node-f")
            try:
                log(f"feed: latency with {ctx.sizes.exporters} exporters x {spec.describe()}")
                watcher = Watcher(server.url)
                watcher.start()
                for _ in range(ctx.pairs):
                    fleet.run(ctx.sizes.exporters)
                time.sleep(1.0)
                watcher.close()
                delays, measured_from = watcher.delays_ms, watcher.describe()

                log(f"feed: import rate with {streams} idle streams vs none")
                rss = {"open": [], "closed": []}
                cpu = {"open": [], "closed": []}  # server CPU seconds per run: steadier than rates here

                def measured(side: str) -> float:
                    time.sleep(0.5)
                    rss[side].append(server.rss_bytes())
                    used = server.cpu_seconds()
                    rate = fleet.run(ctx.sizes.exporters)
                    cpu[side].append(server.cpu_seconds() - used)
                    return rate

                def with_streams(_):
                    socks = open_idle_streams(server.url, streams)
                    try:
                        return measured("open")
                    finally:
                        close_all(socks)

                def without(_):
                    return measured("closed")

                out = alternate({"ours": with_streams, "baseline": without}, ctx.pairs)
            finally:
                fleet.close()
    finally:
        central_db.close()
    data = (f"{ctx.sizes.exporters} exporters, each {spec.describe()}; {len(delays)} items on one stream, "
            f"{measured_from}")
    figures = []
    if delays:
        figures += [Figure("feed_latency_p50_ms", round(percentile(delays, 50), 1), data=data),
                    Figure("feed_latency_p99_ms", round(percentile(delays, 99), 1), "<= 250", data, "ms")]
    else:
        figures += [Figure(n, None, reason="the stream received no items")
                    for n in ("feed_latency_p50_ms", "feed_latency_p99_ms")]
    figures.append(Figure("feed_subscribers_import_ratio", median_ratio(out["ours"], out["baseline"]), ">= 0.9",
                          f"import rate of {ctx.sizes.exporters} exporters with {streams} idle streams open vs none; "
                          f"server CPU per run {_cpu_range(cpu['open'])} s with them, "
                          f"{_cpu_range(cpu['closed'])} s without",
                          "entities/s", ours=out["ours"], baseline=out["baseline"]))
    per = (statistics.median(rss["open"]) - statistics.median(rss["closed"])) / streams / 1024
    figures.append(Figure("feed_memory_per_subscriber_kib", round(max(per, 0.0), 1),
                          data=f"server RSS with {streams} streams open minus none, per stream"))
    return figures


def _cpu_range(seconds: list[float]) -> str:
    return f"{min(seconds):.1f}–{max(seconds):.1f}" if seconds else "n/a"
