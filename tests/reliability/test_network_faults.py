"""Network faults between exporter and server, through a TCP fault proxy (fault_proxy.py):
connections reset mid-upload, a stalled connection that only timeouts can end (on both sides),
and very slow clients that must not hold up the others."""
from __future__ import annotations

import hashlib
import random
import statistics
import threading
import time
import uuid

import pytest
import requests


from tests.export_fixtures import wait_for
from tests.server_fixtures import IMPORTER, READER, TIMEOUT, Api, Records, deliver

from .checks import compare_archives, temp_files
from .fault_proxy import FaultProxy, Plan
from .replication import BackgroundExporter, export_to, more_work, pending

SEED = 4_0404
SERVER_TIMEOUT_SECONDS = 2


@pytest.mark.parametrize("fast_path", [pytest.param(True, id="fast-path"), pytest.param(False, id="protocol-1")])
def test_connections_reset_mid_upload_then_converge(make_database, served, tmp_path, tally, scale, fast_path):
    """Every connection through the proxy is reset (RST) after a seeded random number of bytes,
    for many rounds; then the link heals and the archive converges, with no partial upload kept."""
    rng = random.Random(SEED + fast_path)
    node, central = make_database("rel_node"), make_database("rel_central")
    server = served(central, workers=1)
    more_work(node, tmp_path, events=4, files_per_event=2, standalone=3, file_size=96 * 1024, seed=1)
    wanted = scale(15, 150)
    with FaultProxy(server.port) as proxy:
        # Each connection is reset after a seeded random count of bytes: anywhere from the first
        # request line to the middle of the second file's bytes.
        proxy.plan = lambda: Plan(reset_after=rng.randrange(100, 150 * 1024))
        export_to(node, f"{proxy.url}/import", IMPORTER)
        with BackgroundExporter(node, fast_path=fast_path) as exporter:
            for attempt in range(wanted * 5):
                if proxy.resets >= wanted:
                    break
                if not pending(node):  # the link let everything through: give it more to carry
                    more_work(node, tmp_path, events=2, files_per_event=2, standalone=1, file_size=96 * 1024,
                              seed=rng.randrange(10 ** 6))
                before = proxy.resets
                wait_for(lambda: proxy.resets > before or not pending(node), 30, "a reset")
            proxy.plan = Plan()
            proxy.drop_all()  # the link heals: the next connection carries everything
            exporter.wait_converged(timeout=60)
        resets = proxy.resets
    wait_for(lambda: not temp_files(central), 10, "partial uploads to be discarded")
    result = compare_archives(node, central, server.url)
    tally.add("faults", resets)
    tally.add("lost", result.lost)
    tally.add("duplicated", result.duplicated)
    tally.measure("entities replicated", result.entities)
    assert not result.problems, result.problems[:10]
    assert resets >= scale(15, 150)


def test_stalled_connection_is_ended_by_timeouts_on_both_sides(make_database, served, tmp_path, tally):
    """A connection that goes silent mid-upload: the exporter gives up after its read timeout;
    the server drops the request after server.timeout_seconds, keeps no temp file (only the
    durable prefix of the file, for the exporter to continue from), and serves everyone else
    meanwhile; the exporter continues the file from that prefix on a new connection, which
    stalls in turn only after the rest has passed (issue 18: before, it failed the task and
    resent from 0 into the same stall for ever)."""
    node, central = make_database("rel_node"), make_database("rel_central")
    server = served(central, workers=1, METEORPI_SERVER_TIMEOUT_SECONDS=str(SERVER_TIMEOUT_SECONDS))
    more_work(node, tmp_path, events=1, files_per_event=1, standalone=0, file_size=256 * 1024, seed=2)
    client_timeout = 1.5
    with FaultProxy(server.port) as proxy:
        export_to(node, f"{proxy.url}/import", IMPORTER)
        proxy.plan = Plan(stall_after=200 * 1024)  # past the JSON requests, inside the file's bytes
        with BackgroundExporter(node, read_timeout=client_timeout) as exporter:
            wait_for(lambda: any(c.stalled_at for c in proxy.connections), 30, "the stall")
            stalled = next(c for c in proxy.connections if c.stalled_at)
            during = requests.get(server.url + "/cameras", auth=READER, timeout=TIMEOUT)  # direct, meanwhile
            assert during.status_code == 200
            wait_for(lambda: stalled.client_closed_at and stalled.server_closed_at, 30, "both sides to give up")
            exporter.wait_converged(timeout=60)  # the link still stalls every connection at 200 KiB
    client_waited = stalled.client_closed_at - stalled.stalled_at
    server_waited = stalled.server_closed_at - stalled.stalled_at
    tally.add("faults")
    tally.measure("client gave up after (s)", round(client_waited, 2))
    tally.measure("server gave up after (s)", round(server_waited, 2))
    assert client_timeout * 0.8 <= client_waited < client_timeout + 3
    assert SERVER_TIMEOUT_SECONDS * 0.8 <= server_waited < SERVER_TIMEOUT_SECONDS + 5
    assert exporter.totals.failed == 0, exporter.totals.failures
    wait_for(lambda: not temp_files(central), 10, "the stalled upload's temp file to be discarded")
    result = compare_archives(node, central, server.url)
    tally.add("lost", result.lost)
    assert not result.problems, result.problems


def _slow_upload(url: str, size: int, results: list) -> None:
    """One multipart upload of ``size`` bytes with a Content-Length, through a dripping link."""
    data = b"s" * size
    file_id = uuid.uuid4().hex
    boundary = "slowb0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s\"\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    try:
        r = requests.post(f"{url}/import/data/{file_id}/{hashlib.md5(data).hexdigest()}", data=body, auth=IMPORTER,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=120)
        results.append(r.status_code)
    except requests.RequestException as e:
        results.append(type(e).__name__)


def test_very_slow_clients_do_not_block_others(make_database, served, vectors, tally, scale):
    """Six clients upload through a link dripping 2 KB/s each (a 1 MiB file would take nine
    minutes); meanwhile other clients, direct, complete whole protocol exchanges promptly."""
    central = make_database("rel_central")
    server = served(central, workers=1)  # one process, server.threads (8) threads
    slow_clients, exchanges = 6, scale(10, 100)
    latencies = []
    with FaultProxy(server.port) as proxy:
        proxy.plan = Plan(drip_bytes_per_second=2048)
        outcomes: list = []
        threads = [threading.Thread(target=_slow_upload, args=(proxy.url, 1024 * 1024, outcomes), daemon=True)
                   for _ in range(slow_clients)]
        for t in threads:
            t.start()
        wait_for(lambda: len(temp_files(central)) >= slow_clients, 30, "every slow upload to be in progress")
        records, api = Records(vectors), Api(server.url)
        status = records.status()
        for _ in range(exchanges):
            event, files = records.event(status, sizes=[4096, 4096])
            started = time.monotonic()
            exchange = deliver(api, event, {status["status"]["status_id"]: status}, files)
            latencies.append(time.monotonic() - started)
            assert exchange.answers[-1] == "complete"
        still_dripping = len(temp_files(central))
        proxy.drop_all()
        for t in threads:
            t.join(30)
    wait_for(lambda: not temp_files(central), 15, "the dropped slow uploads to be discarded")
    tally.add("faults", slow_clients)
    tally.add("inputs", exchanges)
    tally.measure("fast exchanges beside 6 slow clients: median / max seconds",
                  f"{statistics.median(latencies):.2f} / {max(latencies):.2f}")
    assert still_dripping == slow_clients  # the slow ones were still uploading all along
    assert max(latencies) < 10 and statistics.median(latencies) < 2
    assert not central.has_file_data(uuid.UUID(int=0))
