"""``meteorpi feed`` against servers that misbehave, and its options checked before any request:
credentials never printed, never sent in clear to a public host unasked, and a remote feed that
does not advance is given up on (or backed off from), never printed or polled for ever."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .export_fixtures import cli_env, meteorpi, stub_server

ITEM = {"cursor": "5-1", "kind": "status", "op": "insert", "id": "ab" * 16, "camera_id": "cam",
        "summary": {}, "logged_at": 0, "committed_at": 0}


class _Stub:
    """A /feed server answering ``answer(query)`` to every request, counting them."""

    def __init__(self, answer):
        self.requests = 0
        self.authorized: list[str | None] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                stub.requests += 1
                stub.authorized.append(self.headers.get("Authorization"))
                body = json.dumps(answer(self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    made = []

    def make(answer):
        made.append(_Stub(answer))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_a_server_repeating_the_same_cursor_with_items_is_given_up_on(node, stub):
    server = stub(lambda path: {"items": [ITEM], "cursor": "5-1", "up_to_date": False})
    run = meteorpi("feed", "--url", server.url, "--after", "5-1", env=cli_env(node), timeout=30)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "the server's cursor does not advance" in run.stderr and run.stderr.count("\n") == 1
    assert len(run.stdout.splitlines()) <= 3 and server.requests <= 3


def test_a_server_that_is_never_up_to_date_and_sends_nothing_is_given_up_on(node, stub):
    server = stub(lambda path: {"items": [], "cursor": "0-0", "up_to_date": False})
    run = meteorpi("feed", "--url", server.url, env=cli_env(node), timeout=30)
    assert run.returncode == 1 and "the server's cursor does not advance" in run.stderr
    assert server.requests <= 3


def test_without_follow_the_feed_stops_once_caught_up(node, stub):
    server = stub(lambda path: {"items": [ITEM], "cursor": "5-1", "up_to_date": True})
    run = meteorpi("feed", "--url", server.url, env=cli_env(node), timeout=30)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1 and server.requests == 1


def test_follow_backs_off_from_a_server_that_answers_at_once_with_nothing(node, stub):
    from .export_fixtures import start_meteorpi
    server = stub(lambda path: {"items": [], "cursor": "0-0", "up_to_date": False})
    proc = start_meteorpi("feed", "--follow", "--url", server.url, "--after", "0-0", env=cli_env(node))
    try:
        time.sleep(3)
    finally:
        proc.terminate()
        proc.wait(10)
    assert 2 <= server.requests <= 6, server.requests  # 0.5 + 1 + 2 s of pauses, not thousands


@pytest.mark.parametrize("message, shown", [
    ("the cursor is ahead of this feed's newest item", "the cursor is ahead of this feed's newest item"),
    ("\x1b]0;owned\x07\x1b[2J", "\\x1b]0;owned"),
    (None, "the cursor is not in the feed any more"),
])
def test_told_to_refetch_it_says_why_in_the_servers_words_as_text(node, stub, message, shown):
    """A server's reason reaches the user (a cursor too old and one from another archive need
    different actions), in one line, never as terminal control sequences."""
    answer = {"must_refetch": True, "cursor": "9-1", **({"message": message} if message else {})}
    server = stub(lambda path: answer)
    run = meteorpi("feed", "--url", server.url, "--after", "5-1", env=cli_env(node), timeout=30)
    assert _one_line(run, shown) and run.stderr.count("\n") == 1
    assert "\x1b" not in run.stderr and "--follow starts from the newest item" in run.stderr


def test_credentials_in_the_url_are_never_printed(node):
    run = meteorpi("feed", "--url", "http://u:URLSECRET@127.0.0.1:1", env=cli_env(node), timeout=30)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "URLSECRET" not in run.stdout + run.stderr and "u:***@" in run.stderr


def test_a_password_is_not_sent_in_clear_to_a_public_host_unless_asked(node, stub):
    refused = meteorpi("feed", "--url", "http://archive.example.org", "--user", "reader", "--password-stdin",
                       env=cli_env(node), input="PW\n", timeout=30)
    assert refused.returncode != 0 and "plain HTTP" in refused.stderr and "--insecure-http" in refused.stderr
    assert "Traceback" not in refused.stderr
    # Asked: it goes, with a warning. 0.0.0.0 is no loopback or private network by rule, yet on
    # Linux a connection to it reaches this host's listeners: a public host that is the stub.
    server = stub(lambda path: {"items": [], "cursor": "0-0", "up_to_date": True})
    public = server.url.replace("127.0.0.1", "0.0.0.0")
    assert _one_line(meteorpi("feed", "--url", public, "--user", "reader", "--password-stdin",
                              env=cli_env(node), input="PW\n", timeout=30), "plain HTTP")
    assert server.requests == 0
    warned = meteorpi("feed", "--url", public, "--user", "reader", "--password-stdin", "--insecure-http",
                      env=cli_env(node), input="PW\n", timeout=30)
    assert warned.returncode == 0, warned.stderr
    assert "goes in clear over plain HTTP" in warned.stderr and server.authorized[-1]


def _one_line(run, reason: str) -> bool:
    assert run.returncode != 0 and reason in run.stderr and "Traceback" not in run.stderr, run.stderr
    return True


@pytest.mark.parametrize("args, reason", [
    (["--camera", "\x1b[31m"], "--camera"),
    (["--camera", ""], "--camera"),
    (["--event-type", ""], "--event-type"),
    (["--event-type", "bad type"], "--event-type"),
    (["--after", "9" * 25 + "-0"], "out of range"),
    (["--after", "9223372036854775807-0"], "ahead of this feed's newest item"),
])
def test_feed_options_are_checked_before_anything_is_read(node, args, reason):
    run = meteorpi("feed", *args, env=cli_env(node), timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert reason in run.stderr and "Traceback" not in run.stderr and "\x1b" not in run.stderr
    assert run.stdout == ""


class _Endless(BaseHTTPRequestHandler):
    """Answers 200 with bytes for as long as the client reads: not a feed, whatever the URL says."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"{" * 65536)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
def test_an_answer_without_end_is_refused_not_read_into_memory(node):
    with stub_server(_Endless) as url:
        run = meteorpi("feed", "--url", url, env=cli_env(node), timeout=50)
    assert _one_line(run, "more than a feed's answer holds")
