"""``export run``: ``--limit-rate`` caps the whole run, however many uploads are in flight, and a
stop (SIGINT, SIGTERM) ends the uploads in flight at once, keeps what arrived, and says truly
what is left."""
from __future__ import annotations

import re
import signal
import time

from meteorpi_export.protocol_v2 import UPLOADS_IN_FLIGHT
from meteorpi_export.uploads import UPLOAD_BYTES
from tests.export_fixtures import add_export, cli_env, meteorpi, night, start_meteorpi

MIB = 1024 * 1024
FILE_SIZE = 4 * MIB
# Enough files for UPLOADS_IN_FLIGHT uploads of UPLOAD_BYTES at once: the case that was paced
# per upload, each getting the whole cap.
FILES = (UPLOADS_IN_FLIGHT * UPLOAD_BYTES) // FILE_SIZE + 1


def _big_night(node, tmp_path):
    events = FILES // 2
    return night(node, tmp_path, events=events, files_per_event=2, standalone=FILES - 2 * events,
                 file_size=FILE_SIZE)


def _sent_and_seconds(summary: str) -> tuple[float, float]:
    m = re.search(r"([\d.]+) (B|KiB|MiB|GiB) sent, \d+ requests, ([\d.]+) s", summary)
    assert m, summary
    scale = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}[m.group(2)]
    return float(m.group(1)) * scale, float(m.group(3))


def test_limit_rate_holds_for_the_whole_run_not_each_upload(node, central, tmp_path):
    _big_night(node, tmp_path)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    cap = 24 * MIB
    run = meteorpi("export", "run", "--once", "--limit-rate", "24M", env=cli_env(node), timeout=120)
    assert run.returncode == 0, run.stderr
    sent, seconds = _sent_and_seconds(run.stderr)
    assert sent >= FILES * FILE_SIZE
    assert sent / seconds <= 1.3 * cap, f"{sent / MIB:.0f} MiB in {seconds:.1f} s: over the {cap / MIB:.0f} MiB/s cap"
    assert central.check(node).ok


def test_sigint_ends_uploads_in_flight_and_says_what_is_still_due(node, central, tmp_path):
    _big_night(node, tmp_path)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    # ~10 s of uploads at the cap: a stop that waited for the batch would take most of them.
    proc = start_meteorpi("export", "run", "--once", "--limit-rate", "10M", env=cli_env(node))
    try:
        time.sleep(3.5)
        assert proc.poll() is None, proc.stdout.read()
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 3.0, f"the stop took {took:.1f} s\n{output}"
    due = sum(p.due for p in node.get_export_progress())
    assert due > 0, output
    assert proc.returncode == 1 and f"stopped by a signal with {due} export(s) still due" in output, output
    assert "Traceback" not in output
    # Nothing lost: the next run sends the rest, and the archive then holds everything whole.
    again = meteorpi("export", "run", "--once", env=cli_env(node), timeout=120)
    assert again.returncode == 0, again.stderr
    assert central.check(node).ok
