"""``meteorpi export``: configuring exports, and running the exporter once or on a schedule."""
from __future__ import annotations

import signal
import time

import pytest
from click.testing import CliRunner

from meteorpi_server.cli import main
from tests.export_fixtures import add_export, cli_env, meteorpi, night, start_meteorpi, wait_for
from tests.server_fixtures import IMPORTER

SECRET = "correct-horse-battery"


def _cli(node, *args, input=None):
    return CliRunner().invoke(main, list(args), env=cli_env(node), input=input)


def test_add_list_enable_disable_delete(node):
    """The whole life of a configuration, and the password never printed."""
    result = _cli(node, "export", "add", "central", "--target", "https://archive.example.org/import",
                  "--user", "importer", "--type", "event", "--camera", "cam-a", "--camera", "cam-b",
                  "--after", "2015-06-30T00:00:00", "--event-type", "meteorpi:meteor", "--password-stdin",
                  input=SECRET + "\n")
    assert result.exit_code == 0, result.output
    config = node.get_export_configuration("central")
    assert (config.password, config.search.camera_ids, str(config.search.event_type)) == \
        (SECRET, ["cam-a", "cam-b"], "meteorpi:meteor")
    result = _cli(node, "export", "add", "frames", "--target", "https://archive.example.org/import",
                  "--user", "importer", "--type", "file", input=f"{SECRET}\n{SECRET}\n")  # prompted twice
    assert result.exit_code == 0, result.output
    listing = _cli(node, "export", "list")
    assert listing.exit_code == 0
    assert "central" in listing.output and "frames" in listing.output and "camera_ids=cam-a,cam-b" in listing.output
    assert SECRET not in listing.output
    assert _cli(node, "export", "disable", "central").exit_code == 0
    assert "disabled" in _cli(node, "export", "list").output
    assert _cli(node, "export", "enable", "central").exit_code == 0
    assert node.get_export_configuration("central").enabled
    assert _cli(node, "export", "delete", "frames").exit_code == 0
    assert [c.name for c in node.get_export_configurations()] == ["central"]


@pytest.mark.parametrize("args, message", [
    (["export", "enable", "nope"], "no export configuration 'nope'"),
    (["export", "delete", "nope"], "no export configuration 'nope'"),
    (["export", "add", "x", "--target", "ftp://x/import", "--user", "u", "--type", "event", "--password-stdin"],
     "--target ftp://x/import is not an http:// or https:// URL"),
    (["export", "add", "x", "--target", "https://x/import", "--user", "u", "--type", "file",
      "--event-type", "meteor", "--password-stdin"], "--event-type applies to --type event only"),
    (["export", "add", "x", "--target", "https://x/import", "--user", "u", "--type", "event",
      "--after", "yesterday", "--password-stdin"], "not an ISO 8601 time"),
])
def test_bad_input_is_one_line_error(node, args, message):
    result = _cli(node, *args, input="pw\n")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert SECRET not in result.output


def test_adding_a_taken_name_is_refused_unless_replaced(node):
    add_export(node, "https://x/import", "event", name="central")
    args = ["export", "add", "central", "--target", "https://y/import", "--user", "u", "--type", "event",
            "--password-stdin"]
    refused = _cli(node, *args, input="new-pw\n")
    assert refused.exit_code == 1 and "Error: an export configuration named 'central' already exists" in refused.output
    assert _cli(node, *args, "--replace", input="new-pw\n").exit_code == 0
    assert node.get_export_configuration("central").password == "new-pw"


def test_run_once_exports_everything_due_and_exits_zero(node, central, tmp_path):
    night(node, tmp_path, events=2, standalone=1)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    result = meteorpi("export", "run", "--once", env=cli_env(node))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed 3, failed 0" in result.stderr and "requests" in result.stderr
    assert central.check(node).ok


def test_run_once_exits_non_zero_with_the_reason_when_a_task_fails(node, tmp_path):
    from meteorpi_server.demo import free_port
    night(node, tmp_path, events=1, standalone=0)
    add_export(node, f"http://127.0.0.1:{free_port()}/import", "event", auth=(IMPORTER[0], SECRET))
    result = meteorpi("export", "run", "--once", env=cli_env(node))
    assert result.returncode == 1
    assert "Error: 1 export(s) failed; first: event" in result.stderr and "connection refused" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_scheduled_run_picks_up_new_entities_and_stops_on_sigterm(node, central, tmp_path):
    """`export run` keeps marking: what is registered after it started arrives too."""
    add_export(node, central.import_url, "event")
    proc = start_meteorpi("export", "run", env=cli_env(node, METEORPI_EXPORT_INTERVAL_SECONDS="1"))
    try:
        time.sleep(1.0)
        registered = night(node, tmp_path, events=2, standalone=0)
        deadline = time.monotonic() + 30
        while central.counts()[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert central.counts()[0] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "export run stopped: completed 2, failed 0" in output
    assert {e.event_id for e in registered.events} == set(node.get_export_task_states("to-events"))


def _lock_holder(node) -> str:
    try:
        return (node.file_store.root / "exporter.lock").read_text().strip()
    except FileNotFoundError:
        return ""


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    return output


def _wait_until_waiting(proc, log_path) -> None:
    """Until ``proc`` says it waits for the exporter holding the lock: its SIGTERM handler is
    installed by then (a fixed sleep lost that race on a loaded machine)."""
    wait_for(lambda: "waiting for the exporter" in log_path.read_text() or proc.poll() is not None, 60,
             "the second exporter to wait for the lock")
    assert proc.poll() is None, log_path.read_text()


def test_one_exporter_per_node_a_second_is_refused_or_waits(node, central, tmp_path):
    """A cron `--once` overlapping the service would send every task twice: it is refused,
    naming the exporter in the way; a second service waits and takes over when the first stops."""
    add_export(node, central.import_url, "event")
    env = cli_env(node, METEORPI_EXPORT_INTERVAL_SECONDS="1")
    first = start_meteorpi("export", "run", env=env)
    waiting = None
    try:
        wait_for(lambda: _lock_holder(node) == str(first.pid), 30, "the first exporter to take the lock")
        refused = meteorpi("export", "run", "--once", env=env)
        assert refused.returncode == 1
        assert f"Error: another exporter (pid {first.pid}) is already sending this node's exports" \
            in refused.stderr and "Traceback" not in refused.stderr
        waiting_log = tmp_path / "waiting.log"
        waiting = start_meteorpi("export", "run", env=env, stdout=waiting_log.open("w"))
        _wait_until_waiting(waiting, waiting_log)
        assert waiting.poll() is None and _lock_holder(node) == str(first.pid)
        assert first.poll() is None
        assert "export run stopped" in _stop(first)
        wait_for(lambda: _lock_holder(node) == str(waiting.pid), 30, "the waiting exporter to take over")
        night(node, tmp_path, events=2, standalone=0)
        wait_for(lambda: central.counts()[0] == 2, 30, "the night to arrive through the second exporter")
        quitter_log = tmp_path / "quitter.log"
        quitter = start_meteorpi("export", "run", env=env, stdout=quitter_log.open("w"))
        _wait_until_waiting(quitter, quitter_log)
        quitter.send_signal(signal.SIGTERM)
        quitter.wait(30)
        output = quitter_log.read_text()
        assert quitter.returncode == 0 and "stopped before another exporter on this node finished" in output, output
    finally:
        for proc in (first, waiting):
            if proc is not None and proc.poll() is None:
                _stop(proc)
    assert waiting.returncode == 0
    assert _lock_holder(node) == ""  # released, and no stale pid left to mislead


def test_an_exporter_lock_that_cannot_be_opened_is_a_one_line_error(node):
    blocker = node.file_store.root / "exporter.lock"
    blocker.unlink(missing_ok=True)
    blocker.mkdir()  # as good as a store the running user may not write to (tests run as root)
    try:
        result = _cli(node, "export", "run", "--once")
    finally:
        blocker.rmdir()
    assert result.exit_code == 1
    assert f"Error: cannot open the exporter lock {blocker}" in result.output and "Traceback" not in result.output
