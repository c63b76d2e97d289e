"""PostgreSQL stopped abruptly (`pg_ctl stop -m immediate`) under a running `meteorpi serve`
while a node replicates to it, then started again: 503 JSON with Retry-After meanwhile, the same
server processes serve again once it is back, and nothing half-imported remains.

The central database lives on an embedded cluster of its own (in the test's temp directory), so
stopping it disturbs nothing else of the session.
"""
from __future__ import annotations

import random
import time
import uuid

import psutil
import pytest
import requests

from meteorpi_db import Config, MeteorDatabase, embedded
from meteorpi_model import EventSearch
from meteorpi_db.database import ensure_database
from tests.export_fixtures import wait_for
from tests.feed_client import StreamClient
from tests.server_fixtures import IMPORTER, READER, TIMEOUT

from .checks import compare_archives
from .replication import BackgroundExporter, export_to, more_work

SEED = 5_0303


@pytest.fixture
def own_cluster(tmp_path):
    """(EmbeddedPostgres, MeteorDatabase) on a cluster this test may crash."""
    pg = embedded.EmbeddedPostgres(tmp_path / "cluster")
    pg.attach()
    ensure_database(pg.uri("postgres"), "central")
    config = Config(data_dir=str(tmp_path / "central"))
    db = MeteorDatabase(url=pg.uri("central"), file_store_path=tmp_path / "central" / "files", config=config)
    yield pg, db
    db.close()
    pg.start()  # a failed test may leave it stopped; detach stops it for good
    pg.detach()


def _process_ids(server) -> set[int]:
    master = psutil.Process(server.proc.pid)
    return {master.pid} | {child.pid for child in master.children(recursive=True)}


def _status_body(vectors: dict) -> dict:
    body = {"type": "status", "status": dict(vectors["status"]["status"])}
    body["status"]["status_id"] = uuid.uuid4().hex
    body["status"]["camera_id"] = f"cam-{uuid.uuid4().hex[:8]}"
    return body


def test_postgres_stopped_immediately_under_the_server(own_cluster, make_database, served, tmp_path, vectors,
                                                       tally, scale):
    """Each outage: reads and imports answer 503 JSON with Retry-After (never another 5xx);
    after `pg_ctl start` the same master and worker processes answer 200; the exporter's failed
    tasks are retried and the archive converges with no partial event, file or upload."""
    pg, central = own_cluster
    outages = scale(3, 20)
    rng = random.Random(SEED)
    node = make_database("rel_node")
    server = served(central, workers=2)
    processes = _process_ids(server)
    export_to(node, f"{server.url}/import", IMPORTER)
    http = requests.Session()
    unavailable = 0
    start = http.get(server.url + "/feed", auth=READER, timeout=TIMEOUT).json()["cursor"]
    stream = StreamClient(server.url, start)  # open across every outage
    # Paced to 4 MB/s so each outage lands while bytes or imports are in flight.
    with BackgroundExporter(node, rate_limit=4e6) as exporter:
        for outage in range(outages):
            more_work(node, tmp_path, events=4, files_per_event=2, standalone=2, file_size=256 * 1024,
                      seed=rng.randrange(10 ** 6))
            time.sleep(rng.uniform(0.02, 0.4))
            pg.stop(mode="immediate")
            tally.add("faults")
            down_since = time.monotonic()
            for request in (lambda: http.get(server.url + "/cameras", auth=READER, timeout=TIMEOUT),
                            lambda: http.post(server.url + "/import", json=_status_body(vectors), auth=IMPORTER,
                                              timeout=TIMEOUT),
                            lambda: http.get(server.url + "/cameras", auth=("nobody", "x"), timeout=TIMEOUT)):
                r = request()
                tally.add("inputs")
                if r.status_code >= 500 and r.status_code != 503:
                    tally.add("server_errors")
                assert r.status_code == 503, r.text
                assert r.json() == {"state": "failed", "message": "database unavailable, retry later"}
                assert int(r.headers["Retry-After"]) > 0
                unavailable += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - down_since)))  # the exporter meets the outage too
            pg.start()
            wait_for(lambda: http.get(server.url + "/cameras", auth=READER, timeout=TIMEOUT).status_code == 200,
                     30, "the server to serve again")
            assert _process_ids(server) == processes, "the server restarted a process to recover"
        seconds = exporter.wait_converged(timeout=120)
    result = compare_archives(node, central, server.url)
    # The feed caught up by itself: every event the archive now holds, once, on the open stream.
    held = {e.event_id.hex for e in central.search_events(EventSearch(limit=0))["events"]}
    try:
        wait_for(lambda: held <= {i["id"] for i in stream.items}, 30, "the open stream to show every event")
        streamed = [i["id"] for i in stream.items if i["kind"] == "event"]
        assert len(streamed) == len(set(streamed)) and set(streamed) == held
    finally:
        stream.close()
    tally.add("lost", result.lost)
    tally.add("duplicated", result.duplicated)
    tally.measure("503 answers during outages", unavailable)
    tally.measure("exporter tasks failed during outages and retried", exporter.totals.failed)
    tally.measure("entities replicated", result.entities)
    tally.measure("seconds to converge after the last outage", round(seconds, 1))
    assert not result.problems, result.problems[:10]
    assert not any(central.file_store.tmp.iterdir()), "an upload interrupted by an outage left its temp file"
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback"):][:3000]
