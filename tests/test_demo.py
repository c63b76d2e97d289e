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


def test_demo_serve_keeps_the_central_archive_open_in_a_browser_until_sigterm():
    """``--serve``: after the demo the archive's pages answer at the printed URL, showing the
    night just replicated; SIGTERM stops the server and the demo ends normally."""
    import signal
    import requests
    env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
    proc = subprocess.Popen([sys.executable, "-m", "meteorpi_server", "demo", "--events", "3", "--files-per-event", "1",
                             "--file-size", "16K", "--standalone-files", "0", "--serve"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"Serving the central archive \(verified\) at (http://127\.0\.0\.1:\d+)/", line)
            if found:
                break
        assert found, "".join(lines)
        url = found.group(1)
        page = requests.get(url + "/", headers={"Accept": "text/html"}, timeout=30)
        assert page.status_code == 200 and "demo-cam-1" in page.text
        assert page.text.count('<li id="event-') == 3
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=DEMO_TIMEOUT)[0]
        assert proc.returncode == 0, rest
        assert "PASSED" in rest and not _data_dir("".join(lines)).exists()
        try:
            requests.get(url + "/", timeout=2)
            raise AssertionError("the central server still answers after the demo ended")
        except requests.ConnectionError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
