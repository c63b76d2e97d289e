"""The central server SIGKILLed again and again during a replication, restarted each time: the
exporter carries on and the central archive ends up equal to the node, byte for byte, with
every entity once, no duplicate rows and no temp file counted as held."""
from __future__ import annotations

import random
import time

import pytest

from tests.server_fixtures import IMPORTER

from .checks import compare_archives, temp_written_since
from .replication import BackgroundExporter, export_to, more_work, pending

# (protocol, kills in CI, kills in --long); version 2 is what exporters use by default.
PLANS = [pytest.param(True, 20, 200, id="fast-path"), pytest.param(False, 10, 100, id="protocol-1")]
SEED = 20261123


@pytest.mark.parametrize("fast_path, ci_kills, long_kills", PLANS)
def test_central_server_sigkilled_at_random_moments_converges(make_database, served, tmp_path, tally, scale,
                                                              fast_path, ci_kills, long_kills):
    """`meteorpi serve` SIGKILLed (master and workers) at seeded random moments while the
    exporter replicates, restarted after each kill: afterwards node and central are equal."""
    kills = scale(ci_kills, long_kills)
    rng = random.Random(SEED + kills + fast_path)
    node, central = make_database("rel_node"), make_database("rel_central")
    server = served(central, workers=1)
    export_to(node, f"{server.url}/import", IMPORTER)
    in_flight, during, restarted = 0, 0, time.time()
    # Uploads paced to 1.5 MB/s: a batch of work takes a few tenths of a second on the wire, so the
    # kills land in status, upload and import requests alike.
    with BackgroundExporter(node, fast_path=fast_path, rate_limit=1.5e6) as exporter:
        for kill in range(kills):
            while pending(node) < 8:  # always something on the wire when the kill comes
                more_work(node, tmp_path, events=3, files_per_event=2, standalone=2, file_size=24 * 1024,
                          seed=rng.randrange(10 ** 6))
            time.sleep(rng.uniform(0.05, 0.6))
            while not pending(node):  # it finished early: the kill waits for the next replication
                more_work(node, tmp_path, events=3, files_per_event=2, standalone=2, file_size=24 * 1024,
                          seed=rng.randrange(10 ** 6))
                time.sleep(rng.uniform(0.02, 0.2))
            in_flight += temp_written_since(central, restarted)
            during += pending(node) > 0
            server.kill()
            tally.add("kills")
            assert exporter.error is None, exporter.error
            time.sleep(rng.uniform(0, 0.3))  # the exporter meets a dead server for a while
            server.start()
            restarted = time.time()
        seconds = exporter.wait_converged(timeout=120)
    result = compare_archives(node, central, server.url)
    tally.add("faults", kills)
    tally.add("lost", result.lost)
    tally.add("duplicated", result.duplicated)
    tally.measure("entities replicated", result.entities)
    tally.measure("files / bytes compared", f"{result.files} / {result.bytes}")
    tally.measure("kills while an upload was being written", in_flight)
    tally.measure("kills while tasks were pending", during)
    tally.measure("temp files left by kills (never counted as held)", result.temp_files_left)
    tally.measure("tasks failed and retried", exporter.totals.failed + exporter.totals.confused)
    tally.measure("seconds to converge after the last kill", round(seconds, 1))
    assert not result.problems, result.problems[:10]
    assert result.lost == 0 and result.duplicated == 0
    # The restarted server removed what the killed one was receiving (79 left by 20 kills before
    # it did); one may remain when a killed worker was still inside an fsync at the last restart.
    assert result.temp_files_left <= 1
    assert exporter.totals.completed >= result.entities
    # The kills land on a replication at work. The loop above only kills once it has seen work
    # pending, but the fast path completes a whole batch in one commit, so the queue can empty in
    # the milliseconds between that look and the kill: 4 kills in 200 of a --long run, 2 in 20 of
    # one CI run on a fast machine. Half is what a harness that kills an idle server cannot reach.
    assert during >= kills // 2
    assert result.entities > kills  # it carried on between kills, not only after the last
