"""The exporter (`meteorpi export run`, a real process) SIGKILLed mid-upload again and again,
restarted each time: the node's archive converges at the central server, nothing duplicated,
nothing skipped, and every half-received upload discarded."""
from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from tests.export_fixtures import cli_env, meteorpi, start_meteorpi, wait_for
from tests.server_fixtures import IMPORTER

from .checks import compare_archives, temp_files
from .replication import export_to, more_work, pending

SEED = 7_2026


@pytest.mark.parametrize("fast_path", [pytest.param(True, id="fast-path"), pytest.param(False, id="protocol-1")])
def test_exporter_sigkilled_mid_upload_converges(make_database, served, tmp_path, tally, scale, fast_path):
    """`meteorpi export run --once --limit-rate 1M` SIGKILLed at a seeded random moment after an
    upload has begun, restarted, again and again; a last run finishes the work."""
    kills = scale(4, 40)
    rng = random.Random(SEED + fast_path)
    node, central = make_database("rel_node"), make_database("rel_central")
    server = served(central, workers=1)
    export_to(node, f"{server.url}/import", IMPORTER)
    env = {**cli_env(node, METEORPI_EXPORT_FAST_PATH=str(fast_path).lower()), "METEORPI_LOGGING_LEVEL": "WARNING"}
    mid_upload = 0
    for kill in range(kills):
        if pending(node) < 3:
            more_work(node, tmp_path, events=2, files_per_event=2, standalone=2, file_size=512 * 1024,
                      seed=rng.randrange(10 ** 6))
        proc = start_meteorpi("export", "run", "--once", "--limit-rate", "1M", env=env, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: bool(temp_files(central)) or proc.poll() is not None, 30, "an upload to begin")
            time.sleep(rng.uniform(0, 0.5))
            mid_upload += bool(temp_files(central))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        tally.add("kills")
    result = meteorpi("export", "run", "--once", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert pending(node) == 0
    wait_for(lambda: not temp_files(central), 15, "half-received uploads to be discarded")
    comparison = compare_archives(node, central, server.url)
    progress = node.get_export_progress()
    skipped = sum(p.skipped for p in progress)
    tally.add("faults", kills)
    tally.add("lost", comparison.lost)
    tally.add("duplicated", comparison.duplicated)
    tally.measure("kills while an upload was in flight", mid_upload)
    tally.measure("entities replicated", comparison.entities)
    assert not comparison.problems, comparison.problems[:10]
    assert skipped == 0
    assert mid_upload >= kills // 2  # most kills really landed mid-upload
