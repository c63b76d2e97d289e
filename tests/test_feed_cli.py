"""``meteorpi feed``: the feed in a terminal, from the local database or a remote archive."""
from __future__ import annotations

import json
import signal
import threading

from .export_fixtures import cli_env, meteorpi, night, start_meteorpi, wait_for
from .server_fixtures import READER


def test_feed_prints_what_was_registered_and_resumes_after_a_cursor(node, tmp_path):
    registered = night(node, tmp_path, events=2, files_per_event=1, standalone=0, camera_id="cam-cli")
    done = meteorpi("feed", "--json", "--kind", "event", env=cli_env(node))
    assert done.returncode == 0, done.stdout + done.stderr
    items = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(i["id"] for i in items) == sorted(e.event_id.hex for e in registered.events)
    resumed = meteorpi("feed", "--json", "--kind", "event", "--after", items[0]["cursor"], env=cli_env(node))
    assert [json.loads(line)["id"] for line in resumed.stdout.splitlines()] == [items[1]["id"]]
    human = meteorpi("feed", "--camera", "cam-cli", "--kind", "event", env=cli_env(node))
    assert human.stdout.count("meteorpi:meteor") == 2 and items[1]["cursor"] in human.stdout


def test_feed_follow_prints_new_imports_as_they_commit(node, tmp_path):
    proc = start_meteorpi("feed", "--follow", "--json", "--kind", "event", env=cli_env(node))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        # Listening is not enough: until the follower knows where the feed ends, an import
        # could land before its starting point (a race the CI machine once lost).
        wait_for(lambda: any(line.startswith("following the feed after ") for line in lines), 20,
                 "the follower to say from where it follows")
        assert _listening(node)
        registered = night(node, tmp_path, events=1, files_per_event=1, standalone=0)
        wait_for(lambda: any(registered.events[0].event_id.hex in line for line in lines), 10,
                 "the follower to print the new event")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def _listening(db) -> bool:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'meteorpi-feed' "
                    "AND datname = current_database()")
        return cur.fetchone()[0] > 0


def test_feed_from_a_remote_archive_and_one_line_errors(server, api, records):
    status = records.status()
    api.post(status)
    url = server.url
    done = meteorpi("feed", "--json", "--url", url, "--user", READER[0], "--password-stdin",
                    "--camera", records.camera_id, env={**cli_env(server.db)}, input=READER[1] + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [status["status"]["status_id"]]
    wrong = meteorpi("feed", "--url", url, "--user", READER[0], "--password-stdin", env=cli_env(server.db),
                     input="wrong\n")
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr and "Traceback" not in wrong.stderr
    bad = meteorpi("feed", "--after", "nonsense", env=cli_env(server.db))
    assert bad.returncode == 2 and "--after" in bad.stderr and "Traceback" not in bad.stderr
