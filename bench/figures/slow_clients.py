"""Normal imports while slow clients hold connections open: ``slow_clients_import_p99_ms``.

A camera on a bad link, or anyone on the internet, may open connections and send nothing, or a
byte a second. ``meteorpi serve`` (2 workers, the defaults) gets 4 x (workers x 8), i.e. 64,
such connections: a third idle after connecting, a third sending their request head a byte a
second, a third sending a complete head and then their body a byte a second. A connection the
server closes (its head or body deadline passed) is opened again at once, so 64 stay open for
the whole measurement. Meanwhile one client imports events one by one (``POST /import``, one
event each, keep-alive, as a version-1 exporter does) and times each request from its own side.
The figure is the 99th percentile of those latencies; the same imports without slow clients
are reported beside it.
"""
from __future__ import annotations

import base64
import json
import selectors
import socket
import threading
import time

import requests

from .. import ours
from ..harness import Figure, percentile
from . import SEED, Context, log
from .import_rate import make_events

SLOW_CONNECTIONS = 64
TIMEOUT = (10, 60)
GIVE_UP_AFTER = 3  # failed imports in a row: the rest would only wait out their timeouts too
HEAD = b"POST /import HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"


class SlowCrowd(threading.Thread):
    """``count`` slow connections to ``url``, kept open (reopened when the server ends one)."""

    def __init__(self, url: str, count: int):
        super().__init__(daemon=True, name="slow-crowd")
        host, port = url.rsplit("/", 1)[1].split(":")
        self.address = (host, int(port))
        credentials = base64.b64encode(f"{ours.IMPORT_USER}:{ours.IMPORT_PASSWORD}".encode())
        # (sent at once, then one byte a second of): idle, head trickle, body trickle
        self.kinds = [(b"", b""), (b"", HEAD * 100),
                      (HEAD + b"Authorization: Basic " + credentials + b"\r\n\r\n", b"{" * 100000)]
        self.selector = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.reopened = 0
        for i in range(count):
            self._open(i % len(self.kinds))

    def _open(self, kind: int) -> None:
        sock = socket.create_connection(self.address, timeout=10)
        sock.sendall(self.kinds[kind][0])
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, [kind, 0])

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                self._reopen(key)  # the server answered or closed: its deadline passed
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for key in list(self.selector.get_map().values()):
                    kind, sent = key.data
                    trickle = self.kinds[kind][1]
                    if trickle:
                        try:
                            key.fileobj.send(trickle[sent:sent + 1])
                            key.data[1] += 1
                        except OSError:
                            self._reopen(key)

    def _reopen(self, key) -> None:
        self.selector.unregister(key.fileobj)
        key.fileobj.close()
        self.reopened += 1
        if not self.stop.is_set():
            self._open(key.data[0])

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def timed_imports(ctx: Context, url: str, bodies: list[str]) -> list[float]:
    """Milliseconds of each ``POST /import`` of ``bodies``, one after another, keep-alive."""
    session = requests.Session()
    session.auth = (ours.IMPORT_USER, ours.IMPORT_PASSWORD)
    session.headers["Content-Type"] = "application/json"
    latencies, bad, in_a_row = [], 0, 0
    for body in bodies:
        if in_a_row >= GIVE_UP_AFTER:
            latencies.append(TIMEOUT[1] * 1000.0)  # counted as answered at the timeout, at best
            bad += 1
            continue
        t0 = time.perf_counter()
        try:
            answer = session.post(url + "/import", data=body, timeout=TIMEOUT)
            ok = answer.status_code == 200 and answer.json().get("state") == "complete"
        except requests.RequestException:
            ok = False
        latencies.append((time.perf_counter() - t0) * 1000.0)
        bad += not ok
        in_a_row = 0 if ok else in_a_row + 1
    session.close()
    if bad:
        ctx.error(f"slow_clients_import_p99_ms: {bad} of {len(bodies)} imports not complete", bad)
    return latencies


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    count = 40 if ctx.quick else 300
    status, events = make_events(2 * count, SEED + 5)
    bodies = [json.dumps({"type": "event", "event": e.as_dict()}) for e in events]
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    central_db.import_camera_status(status)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-slow-clients.log") as server:
            timed_imports(ctx, server.url, bodies[:5])  # warm: workers loaded, login remembered
            quiet = timed_imports(ctx, server.url, bodies[5:count])
            crowd = SlowCrowd(server.url, SLOW_CONNECTIONS)
            crowd.start()
            try:
                time.sleep(1.0)  # every slow connection open and trickling
                loaded = timed_imports(ctx, server.url, bodies[count:])
            finally:
                crowd.close()
    finally:
        central_db.close()
    log(f"slow clients: p99 {percentile(loaded, 99):.0f} ms with {SLOW_CONNECTIONS} slow connections, "
        f"{percentile(quiet, 99):.0f} ms without; {crowd.reopened} reopened after their deadline")
    data = (f"{len(loaded)} POST /import (one event each, keep-alive, client side) while {SLOW_CONNECTIONS} "
            f"connections stay open idle / sending their head / their body at 1 byte/s, against 2 workers; "
            f"p99 without them {percentile(quiet, 99):.0f} ms; {crowd.reopened} slow connections reopened "
            f"after the server ended them")
    return [Figure("slow_clients_import_p99_ms", round(percentile(loaded, 99), 1), "<= 2000", data, "ms",
                   ours=loaded, baseline=quiet)]
