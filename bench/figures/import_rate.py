"""Metadata-only import rate through HTTP, against plain psycopg2 inserts of the same rows.

Ours (the judged ``import_vs_raw_sql``): the path the exporter takes when the server offers it,
protocol version 2: ``POST /import/v2/import`` with BATCH events per request, imported in one
transaction, set-wise under one savepoint (one by one only when the database refuses a part). ``import_v1_vs_raw_sql`` (reported): version 1, one
``POST /import`` per event, so every request is parse + auth + checks + one transaction +
answer. One client thread with a keep-alive ``requests.Session`` either way: the figure is
per-entity cost, not parallelism (the baseline is one connection too). Baseline: the rows our import writes for such an event
(``event``, three ``event_meta``, ``import_record``), inserted by psycopg2 into a scratch
database with our schema (``migrations.migrate``), one transaction per event, on the same
PostgreSQL. The ratio is ours' rate over the baseline's (higher is better).
"""
from __future__ import annotations

import datetime as _dt
import json
import random
import time
import uuid

import psycopg2
import requests

from meteorpi_db.migrations import migrate
from meteorpi_db.pool import ConnectionPool
from meteorpi_model import Event, Meta, night_offset_seconds

from .. import ours
from ..cluster import Site
from ..harness import Figure, alternate, median_ratio
from ..night import NIGHT_START, camera_status
from . import SEED, Context, log

CAMERA = "bench-import"
TIMEOUT = (10, 60)
INSERT_EVENT = """
INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type)
VALUES (%(event_id)s, %(camera_id)s, %(status_id)s, %(event_time)s, %(event_offset)s, %(event_type)s)
"""
INSERT_META = """
INSERT INTO event_meta (event_id, meta_index, meta_key, string_value, number_value, date_value)
VALUES (%(event_id)s, %(meta_index)s, %(meta_key)s, %(string_value)s, %(number_value)s, NULL)
"""
INSERT_IMPORT = """
INSERT INTO import_record (entity_id, entity_type, user_id) VALUES (%(event_id)s, 'event', %(user_id)s)
"""
RAW_TABLES = "import_record, event_meta, event, status_region, camera_status"


def make_events(count: int, seed: int):
    """(status, events): ``count`` metadata-only events of one camera, fixed seed."""
    rng = random.Random(seed)
    status = camera_status(CAMERA)
    events = []
    for i in range(count):
        events.append(Event(
            camera_id=CAMERA, status_id=status.status_id, event_type="meteorpi:meteor",
            event_time=NIGHT_START + _dt.timedelta(seconds=1 + i),
            event_id=uuid.UUID(int=rng.getrandbits(128)),
            meta=[Meta(key="meteorpi:duration", value=round(rng.uniform(0.2, 3.0), 3)),
                  Meta(key="meteorpi:peak_magnitude", value=round(rng.uniform(-4.0, 3.0), 2)),
                  Meta(key="meteorpi:classification", value=rng.choice(["meteor", "plane", "satellite"]))]))
    return status, events


class HttpImport:
    """Ours: event bodies posted one by one to the running server."""

    def __init__(self, ctx: Context, server: ours.ServerProcess, central_db, status, events):
        self.ctx, self.server, self.central_db, self.status = ctx, server, central_db, status
        self.bodies = [json.dumps({"type": "event", "event": e.as_dict()}) for e in events]
        self.session = requests.Session()
        self.session.auth = (ours.IMPORT_USER, ours.IMPORT_PASSWORD)
        self.session.headers["Content-Type"] = "application/json"

    def run(self, _round: int) -> float:
        ours.reset_central(self.central_db)
        self.central_db.import_camera_status(self.status)  # "their status held"
        url = self.server.url + "/import"
        self.session.get(self.server.url + "/", timeout=TIMEOUT)  # open the keep-alive connection
        bad = 0
        t0 = time.perf_counter()
        for body in self.bodies:
            answer = self.session.post(url, data=body, timeout=TIMEOUT)
            if answer.status_code != 200 or answer.json().get("state") != "complete":
                bad += 1
        elapsed = time.perf_counter() - t0
        if bad:
            self.ctx.error(f"import_vs_raw_sql: {bad} of {len(self.bodies)} imports not complete", bad)
        return len(self.bodies) / elapsed


BATCH = 100


class BatchHttpImport(HttpImport):
    """Ours over the fast path: BATCH events per POST /import/v2/import."""

    def __init__(self, ctx: Context, server: ours.ServerProcess, central_db, status, events):
        super().__init__(ctx, server, central_db, status, events)
        self.bodies = [json.dumps({"events": [e.as_dict() for e in events[i:i + BATCH]]})
                       for i in range(0, len(events), BATCH)]
        self.count = len(events)

    def run(self, _round: int) -> float:
        ours.reset_central(self.central_db)
        self.central_db.import_camera_status(self.status)
        url = self.server.url + "/import/v2/import"
        self.session.get(self.server.url + "/", timeout=TIMEOUT)
        bad = 0
        t0 = time.perf_counter()
        for body in self.bodies:
            answer = self.session.post(url, data=body, timeout=TIMEOUT)
            results = answer.json().get("results", []) if answer.status_code == 200 else []
            bad += sum(1 for r in results if r.get("state") != "complete") + (0 if results else BATCH)
        elapsed = time.perf_counter() - t0
        if bad:
            self.ctx.error(f"import_vs_raw_sql: {bad} of {self.count} batch imports not complete", bad)
        return self.count / elapsed


class RawInsert:
    """Baseline: the same rows, psycopg2, one connection, one transaction per event."""

    def __init__(self, site: Site, status, events):
        self.url, self.status = site.url, status
        pool = ConnectionPool(site.url, maxconn=2)
        try:
            migrate(pool)  # our schema, on a scratch database
        finally:
            pool.close()
        self.db = site.open()  # only to put the status back after each reset
        longitude = status.location.long
        self.rows = [({"event_id": e.event_id, "camera_id": e.camera_id, "status_id": e.status_id,
                       "event_time": e.event_time, "event_offset": night_offset_seconds(e.event_time, longitude),
                       "event_type": str(e.event_type), "user_id": ours.IMPORT_USER},
                      [{"event_id": e.event_id, "meta_index": i, "meta_key": str(m.key),
                        "string_value": m.value if m.type == "string" else None,
                        "number_value": m.value if m.type == "number" else None} for i, m in enumerate(e.meta)])
                     for e in events]

    def close(self) -> None:
        self.db.close()

    def run(self, _round: int) -> float:
        with self.db.transaction() as cur:  # reset, outside the timing
            cur.execute(f"TRUNCATE {RAW_TABLES} CASCADE")
        self.db.import_camera_status(self.status)
        conn = psycopg2.connect(self.url, connect_timeout=10)
        try:
            t0 = time.perf_counter()
            for event, metas in self.rows:
                with conn, conn.cursor() as cur:
                    cur.execute(INSERT_EVENT, event)
                    for meta in metas:
                        cur.execute(INSERT_META, meta)
                    cur.execute(INSERT_IMPORT, event)
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        return len(self.rows) / elapsed


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    status, events = make_events(ctx.sizes.import_events, SEED + 2)
    central = ctx.cluster.site("central")
    raw = ctx.cluster.site("rawsql")
    central_db = central.open()
    ours.reset_central(central_db)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-import.log") as server:
            log(f"import: {len(events)} metadata-only events per run")
            baseline = RawInsert(raw, status, events)
            try:
                out = alternate({"ours": BatchHttpImport(ctx, server, central_db, status, events).run,
                                 "baseline": baseline.run,
                                 "v1": HttpImport(ctx, server, central_db, status, events).run}, ctx.pairs)
            finally:
                baseline.close()
    finally:
        central_db.close()
    data = f"{len(events)} events x 3 meta, no files; one HTTP client thread (keep-alive) vs one psycopg2 connection"
    return [Figure("import_vs_raw_sql", median_ratio(out["ours"], out["baseline"]), ">= 0.5",
                   data + f"; protocol 2, {BATCH} events per request", "entities/s",
                   ours=out["ours"], baseline=out["baseline"]),
            Figure("import_v1_vs_raw_sql", median_ratio(out["v1"], out["baseline"]), "reported",
                   data + "; protocol 1, one event per request", "entities/s",
                   ours=out["v1"], baseline=out["baseline"])]
