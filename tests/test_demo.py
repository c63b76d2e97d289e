"""`meteorpi demo` as a user runs it: a child process, exit status 0 only when the central
archive equals the node's, byte for byte."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT = 120


def _demo(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
    return subprocess.run([sys.executable, "-m", "meteorpi_server", "demo", "--events", "3", "--files-per-event", "2",
                           "--file-size", "64K", "--standalone-files", "2", *args],
                          env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT)


def _data_dir(output: str) -> Path:
    return Path(re.search(r"meteorpi demo in (\S+)", output).group(1))


def test_demo_survives_a_server_crash_and_verifies_the_archive():
    """One demo run covers the whole path: the central server is SIGKILLed mid-upload and
    restarted, the export still converges, verification passes, the data dir is removed."""
    result = _demo("--kill-server")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "PASSED" in out
    assert "SIGKILLed mid-upload" in out and "connection" in result.stderr
    assert re.search(r"events\s+3\s+3\s+3", out) and re.search(r"files\s+8\s+8\s+8", out)
    assert re.search(r"file bytes \(MD5 via GET /files/<id>/data\)\s+8\s+8\s+8", out)
    assert not _data_dir(out).exists()
