"""``export add``: a target is judged as the sender reads it, and every option is checked before
anything is stored — bad input is one line naming what is wrong, never a traceback, and a
password never goes in clear to a public host unless ``--insecure-http`` was given."""
from __future__ import annotations

import socket
import threading

import pytest

from meteorpi_model import ExportConfiguration, EventSearch
from tests.export_fixtures import cli_env, meteorpi, night

SECRET = "correct-horse-battery"


def _add(node, target: str, *flags: str):
    return meteorpi("export", "add", "central", "--target", target, "--user", "importer", "--type", "event",
                    "--password-stdin", *flags, env=cli_env(node), input=SECRET + "\n")


def _one_line_error(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("target, reason", [
    # urllib.parse reads host 127.0.0.1, requests sends to evil.example: refused, even with --insecure-http
    ("http://evil.example\\@127.0.0.1/import", "backslash"),
    ("https://evil.example\\@127.0.0.1/import", "backslash"),
    ("http://evil.example%5C@127.0.0.1/import", "user-info"),
    ("http://127.0.0.1#@evil.example/import", "#fragment"),
    ("http://127.0.0.1/import?x=1", "?query"),
    ("http://[::1/import", "Invalid IPv6 URL"),
    ("http://[::1]:99999/import", "port"),
    ("http://127.0.0.1:0/import", "port"),
    ("http://127.0.0.1:x/import", "port"),
    ("http:///import", "no host"),
    ("http://127.0.0.1/imp\x1b[31mort", "control character"),
    ("http://127.0.0.1/imp ort", "a space"),
    ("http://u:URLSECRET@[::1/import", "Invalid IPv6 URL"),
])
def test_a_target_the_sender_would_read_otherwise_or_not_at_all_is_refused(node, target, reason):
    result = _add(node, target, "--insecure-http")
    message = _one_line_error(result)
    assert reason in message and "--target" in message
    assert "\x1b" not in message and "URLSECRET" not in message
    assert node.get_export_configurations() == []


def test_the_public_host_is_the_one_requests_sends_to(node):
    """Without the backslash trick the host the check sees is the host requests connects to."""
    message = _one_line_error(_add(node, "http://evil.example/%5C@127.0.0.1/import"))
    assert "plain HTTP" in message and "--insecure-http" in message


def _listener() -> tuple[socket.socket, list]:
    """A socket on 127.0.0.1 standing for a public host: records whether anyone connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    accepted: list = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            accepted.append(conn.recv(4096))
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return sock, accepted


def test_a_stored_ambiguous_target_is_never_sent_to(node, tmp_path):
    """A configuration stored before the check (or by other means) fails with the reason,
    and nothing, let alone the password, reaches the host requests would have used."""
    evil, accepted = _listener()
    try:
        port = evil.getsockname()[1]
        night(node, tmp_path, events=1, standalone=0)
        node.create_export_configuration(ExportConfiguration(
            name="old", target_url=f"http://127.0.0.1:{port}\\@127.0.0.2:9/import", user_id="importer",
            password=SECRET, type="event", search=EventSearch()))
        run = meteorpi("export", "run", "--once", env=cli_env(node))
    finally:
        evil.close()
    assert run.returncode == 1 and "backslash" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert accepted == []
    assert SECRET not in run.stdout + run.stderr


@pytest.mark.parametrize("flags, reason", [
    (["--event-type", "bad type"], "--event-type"),
    (["--event-type", ""], "--event-type"),
    (["--event-type", "meteorpi:\x1b[31m"], "--event-type"),
    (["--event-type", ":meteor"], "--event-type"),
    (["--camera", "\x1b[31m"], "camera_ids"),
    (["--camera", ""], "camera_ids"),
    (["--description", "two\nlines"], "--description contains a control character (\\n)"),
    (["--description", "red \x1b[31m"], "--description contains a control character (\\x1b)"),
])
def test_search_options_and_description_are_checked_as_the_model_checks_them(node, flags, reason):
    message = _one_line_error(_add(node, "https://archive.example.org/import", *flags))
    assert reason in message and "\x1b" not in message
    assert node.get_export_configurations() == []


def test_export_list_shows_the_description(node):
    added = _add(node, "https://archive.example.org/import", "--description", "to the society's archive")
    assert added.returncode == 0, added.stderr
    listing = meteorpi("export", "list", env=cli_env(node))
    assert "central: to the society's archive" in listing.stdout
