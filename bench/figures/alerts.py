"""Alerts: how soon a coincidence reaches a webhook, and how fast the matcher links events.

* ``alert_latency_p99_ms``: ``meteorpi serve`` (its own notifier process, as deployed) with
  one coincidence watch whose webhook is a receiver on this machine verifying every signature.
  Two cameras 120 km apart import an event each over HTTP, 1.5 s apart in event time; the
  figure is the receipt time of the signed notification minus the time the second event's feed
  row was written (``logged_at``, inside the importing transaction: the figure includes its
  commit). One round at a time, as meteors come; both clocks are this machine's.
* ``coincidence_matching_events_per_s``: events inserted set-wise for 10 cameras 50 km apart
  on a line, every third moment seen by three neighbouring cameras; the matcher
  (``match_round``, one coincidence watch subscribed) run until it has read them all, in this
  process; events matched per second of that.
"""
from __future__ import annotations

import copy
import datetime as _dt
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from standardwebhooks import Webhook

from meteorpi_db.matcher import MatchSettings
from meteorpi_model import CameraStatus
from meteorpi_model.watch import Watch
from meteorpi_server.demo import ServeProcess

from .. import ours
from ..harness import Figure, percentile
from . import Context, log

NIGHT = _dt.datetime(2026, 8, 12, 22, 0, tzinfo=_dt.timezone.utc)
KM_PER_DEGREE_LAT = 111.195
ROUNDS, QUICK_ROUNDS = 60, 5
MATCH_EVENTS, QUICK_MATCH_EVENTS = 30_000, 3_000
WAIT_SECONDS = 20
STATUS = {"lens": "bench", "sensor": "bench", "software_version": 1, "valid_from": 1_000_000_000_000,
          "location": {"lat": 52.0, "long": 0.1, "gps": True, "error": 10.0},
          "orientation": {"alt": 60.0, "az": 0.0, "rot": 0.0, "error": 0.5, "width": 40.0}}


class Receiver:
    """Webhook receiver: records (arrival time, payload) of every correctly signed POST."""

    def __init__(self, secret: str):
        self.webhook = Webhook(secret)
        self.arrivals: list[tuple[float, dict]] = []
        self.bad = 0
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                try:
                    payload = receiver.webhook.verify(body, dict(self.headers))
                except Exception:  # noqa: BLE001 - any verification failure counts as bad
                    payload = None
                with receiver.lock:
                    if payload is None:
                        receiver.bad += 1
                    else:
                        receiver.arrivals.append((now, payload))
                    receiver.lock.notify_all()
                self.send_response(200 if payload is not None else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.arrivals) >= count, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _status(camera_id: str, lat: float) -> dict:
    body = copy.deepcopy(STATUS)
    body.update(status_id=uuid.uuid4().hex, camera_id=camera_id)
    body["location"]["lat"] = lat
    return body


def _latency(ctx: Context, central, db) -> tuple[list[float], int]:
    rounds = QUICK_ROUNDS if ctx.quick else ROUNDS
    db.create_or_update_user("bench-watcher", "bench-watcher-pw", ["user"])
    receiver = None
    server = ServeProcess(central.url, central.data_dir, workers=2, log_path=ctx.cluster.root / "serve-alerts.log",
                          env={"METEORPI_LOGGING_LEVEL": "WARNING", "METEORPI_NOTIFY_ALLOW_PRIVATE_TARGETS": "true"})
    server.start(ours.READY_TIMEOUT_SECONDS)
    try:
        http = requests.Session()
        http.auth = (ours.IMPORT_USER, ours.IMPORT_PASSWORD)
        statuses = [_status("bench-alert-a", 52.0), _status("bench-alert-b", 52.0 + 120 / KM_PER_DEGREE_LAT)]
        for status in statuses:
            http.post(server.url + "/import", json={"type": "status", "status": status}, timeout=30).raise_for_status()
        _, secret, _ = db.create_watch(Watch(name="bench-coincidences", kind="coincidence",
                                             webhook="http://127.0.0.1:9/placeholder"), "bench-watcher")
        receiver = Receiver(secret)
        with db.transaction() as cur:  # the receiver's port is known only now
            cur.execute("UPDATE watch SET webhook_url = %(url)s WHERE name = 'bench-coincidences'",
                        {"url": receiver.url})
        second_ids = []
        for i in range(rounds):
            base_ms = int(NIGHT.timestamp() * 1000) + i * 60_000
            for status, offset in zip(statuses, (0, 1500)):
                event_id = uuid.uuid4().hex
                body = {"type": "event", "event": {"event_id": event_id, "camera_id": status["camera_id"],
                                                   "status_id": status["status_id"], "event_time": base_ms + offset,
                                                   "event_type": "meteorpi:meteor", "files": [], "meta": []}}
                http.post(server.url + "/import", json=body, timeout=30).raise_for_status()
            second_ids.append(event_id)
            if not receiver.wait_for(i + 1, WAIT_SECONDS):
                ctx.error(f"alerts: round {i} got no notification within {WAIT_SECONDS}s")
                break
        with db.transaction() as cur:
            cur.execute("SELECT entity_id, extract(epoch FROM logged_at) FROM feed_log "
                        "WHERE kind = 'event' AND entity_id = ANY(%(ids)s::uuid[])", {"ids": second_ids})
            logged = {row[0].hex: float(row[1]) for row in cur.fetchall()}
        delays = []
        for arrived, payload in receiver.arrivals:
            members = payload["data"]["coincidence"]["members"]
            last = [m["event_id"] for m in members if m["event_id"] in logged]
            if last:
                delays.append((arrived - logged[last[0]]) * 1000)
        return delays, receiver.bad
    finally:
        server.stop()
        if receiver is not None:
            receiver.close()


def _matching_rate(ctx: Context, db) -> float:
    n = QUICK_MATCH_EVENTS if ctx.quick else MATCH_EVENTS
    statuses = []
    for c in range(10):
        status = CameraStatus.from_dict(_status(f"bench-match-{c}", 50.0 + c * 50 / KM_PER_DEGREE_LAT))
        db.import_camera_status(status)
        statuses.append(status)
    db.create_or_update_user("bench-matcher", "bench-matcher-pw", ["user"])
    db.create_watch(Watch(name="bench-match", kind="coincidence", webhook="https://example.org/bench",
                          max_per_hour=100_000), "bench-matcher")
    db.match_round(MatchSettings())  # the cursor row, before the clock starts
    while db.match_round(MatchSettings()).more:
        pass
    # Event i is at second i on camera i % 10; every third second two neighbours see it too.
    with db.transaction() as cur:
        cur.execute("""
            INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type)
            SELECT gen_random_uuid(), s.camera_id, s.status_id, %(night)s + (i / 3) * interval '10 seconds'
                   + (i %% 3) * interval '1 second', 0, 'meteorpi:meteor'
            FROM generate_series(0, %(n)s - 1) AS i
            JOIN unnest(%(cameras)s::text[], %(statuses)s::uuid[]) WITH ORDINALITY AS s(camera_id, status_id, k)
              ON s.k = ((i / 3) %% 8) + (i %% 3) + 1
        """, {"night": NIGHT, "n": n, "cameras": [s.camera_id for s in statuses],
              "statuses": [s.status_id.hex for s in statuses]})
    started = time.perf_counter()
    matched = 0
    while True:
        result = db.match_round(MatchSettings())
        matched += result.items
        if not result.more:
            break
    elapsed = time.perf_counter() - started
    groups = db.get_coincidences(limit=1)["count"]
    if groups != n // 3:
        ctx.error(f"alerts: {groups} coincidence groups from {n} events, expected {n // 3}")
    return matched / elapsed


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    central = ctx.cluster.site("central")
    db = central.open()
    ours.reset_central(db)
    try:
        log("alerts: coincidence webhook latency through meteorpi serve")
        delays, bad = _latency(ctx, central, db)
        if bad:
            ctx.error(f"alerts: {bad} webhook deliveries failed signature verification")
        ours.reset_central(db)
        log("alerts: matcher throughput")
        rates = [_matching_rate(ctx, db) for _ in range(1)]
    finally:
        db.close()
    figures = []
    data = f"{len(delays)} coincidences, 2 cameras 120 km and 1.5 s apart, one signed webhook each"
    if delays:
        figures.append(Figure("alert_latency_p99_ms", round(percentile(delays, 99), 1), "<= 2000", data, "ms",
                              ours=[round(d, 1) for d in delays]))
    else:
        figures.append(Figure("alert_latency_p99_ms", None, reason="no notification arrived"))
    n = QUICK_MATCH_EVENTS if ctx.quick else MATCH_EVENTS
    figures.append(Figure("coincidence_matching_events_per_s", round(rates[0]), "reported",
                          f"{n} events of 10 cameras, a third of them in 3-camera coincidences", "events/s"))
    return figures
