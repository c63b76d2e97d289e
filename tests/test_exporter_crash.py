"""Crashes: an exporter SIGKILLed mid-upload, a central server SIGKILLed mid-run. Either way the
node's archive converges at the central server, byte for byte, with nothing duplicated."""
from __future__ import annotations

import signal

from meteorpi_server.demo import ServeProcess, replicate
from meteorpi_server.progress import ProgressDisplay
from tests.export_fixtures import add_export, cli_env, exporter, meteorpi, night, start_meteorpi, wait_for
from tests.server_fixtures import IMPORTER, READER, add_users

MIB = 1024 * 1024


def _size(path) -> int:
    """Size of a temp file the live server may publish or discard at any moment (then 0)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_exporter_killed_mid_upload_then_restarted_converges(node, central, tmp_path):
    """SIGKILL while a file's bytes are in flight: the task stays pending, a new run completes
    everything, and the central archive holds each entity once."""
    night(node, tmp_path, events=2, files_per_event=1, standalone=1, file_size=MIB)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    incoming = central.db.file_store.tmp
    proc = start_meteorpi("export", "run", "--once", "--limit-rate", "256K", env=cli_env(node))
    try:
        wait_for(lambda: any(_size(p) > 0 for p in incoming.iterdir()), 30, "an upload in flight")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    progress = {p.config.name: p for p in node.get_export_progress()}
    assert sum(p.pending for p in progress.values()) == 3  # nothing marked done that was not
    result = meteorpi("export", "run", "--once", env=cli_env(node))
    assert result.returncode == 0, result.stderr
    check = central.check(node)
    assert check.ok, check.problems
    assert central.counts() == (2, 3)
    wait_for(lambda: not any(incoming.iterdir()), 10, "the half-received upload to be discarded")


def test_central_server_killed_and_restarted_mid_run_converges(node, make_database, tmp_path):
    """`meteorpi serve` SIGKILLed while receiving bytes, then restarted: failed tasks are retried
    after their deferral and the archive arrives whole."""
    central = make_database("export_central")
    add_users(central)
    server = ServeProcess(central.url, central.file_store.root.parent, workers=1)
    server.start()
    try:
        registered = night(node, tmp_path, events=2, files_per_event=2, standalone=1, file_size=256 * 1024)
        add_export(node, f"{server.url}/import", "event", auth=IMPORTER)
        add_export(node, f"{server.url}/import", "file", auth=IMPORTER)
        sent = {"bytes": 0, "killed": False}

        def on_bytes(n: int) -> None:
            sent["bytes"] += n
            if not sent["killed"] and sent["bytes"] > registered.total_bytes // 3:
                sent["killed"] = True
                server.kill()
        with ProgressDisplay(bar=False) as display, exporter(node, defer_on_failure_seconds=1) as e:
            e.on_bytes = on_bytes
            totals, pending = replicate(e, display, registered.entities, server, timeout=60)
        assert sent["killed"]
        assert pending == 0 and totals.failed >= 1 and totals.completed == registered.entities
        from meteorpi_server.archive_check import check_archive
        check = check_archive(node, central, server.url, READER)
        assert check.ok, check.problems
    finally:
        server.stop()
