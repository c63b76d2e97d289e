"""What the exporter reads of a target's answers: everything a batch's answer may hold, and no
more than that, for no longer than its read timeout. A camera node reads the answers of URLs
that an operator typed; a typo, a captive portal or a file server must not fill its memory or
keep it waiting for ever."""
from __future__ import annotations

import datetime
import http.server
import socket
import struct
import time

import pytest

from meteorpi_model import Meta

from .export_fixtures import add_export, export_round, night, stub_server


def test_a_batch_of_many_events_is_answered_in_full(node, central, tmp_path):
    """500 events of four files: the check's answer lists 2,500 ids (about 90 KB), more than a
    single answer is allowed; the bound grows with what the batch asked, so the night goes
    (it was refused as "not a JSON object" on every round, for ever)."""
    registered = night(node, tmp_path, events=500, files_per_event=4, standalone=0, file_size=64)
    add_export(node, central.import_url, "event")
    totals = export_round(node)
    assert totals.ok and totals.completed == 500, totals.failures[:3]
    assert central.check(node).ok
    assert len(registered.all_files) == 2000


def test_a_batch_never_names_more_files_than_the_server_takes_in_one_request(node, central, tmp_path,
                                                                             monkeypatch):
    """The server takes at most wire.MAX_FILES_PER_UPLOAD files in a check or an upload; events
    may hold 256 files each, and small files make a 32 MiB upload of thousands. Here the limit
    is 25 on both sides: batches and uploads are cut to it, the rest follows in the next, and
    the night arrives (a batch naming more was refused whole on every round)."""
    from meteorpi_model import wire
    from meteorpi_server import batch_routes
    monkeypatch.setattr(wire, "MAX_FILES_PER_UPLOAD", 25)
    monkeypatch.setattr(batch_routes, "MAX_FILES_PER_UPLOAD", 25)
    night(node, tmp_path, events=20, files_per_event=4, standalone=10, file_size=64)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    totals = export_round(node)
    assert totals.ok and totals.completed == 20 + 10, totals.failures[:3]  # events, then stand-alone files
    assert central.check(node).ok


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every request 200 in the way ``how`` says: ``endless`` (bytes for as long as
    the client reads) or ``trickle`` (a byte every 0.2 s of a body announced as 1 MB)."""
    how = "endless"
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.how == "trickle":
            self.send_header("Content-Length", "1000000")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                if self.how == "trickle":
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
                else:
                    self.wfile.write(b"[" * 65536)
        except OSError:
            pass

    def _cut(self):
        """Headers and the first bytes of a 1000-byte answer, then a reset: the link broke."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"protocol"')
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.how == "cut":
            if length:
                self.rfile.read(length)
            return self._cut()
        return self._answer()

    do_GET = do_POST = _dispatch

    def log_message(self, *args):
        pass


def _one_event_to(url: str, node, tmp_path, **settings):
    """A night of one event exported to ``url`` once, failures not deferred: (totals, seconds)."""
    night(node, tmp_path, events=1, files_per_event=1, standalone=0)
    add_export(node, f"{url}/import", "event")
    started = time.monotonic()
    totals = export_round(node, defer_on_failure_seconds=0, **settings)
    return totals, time.monotonic() - started


@pytest.fixture
def answering():
    with stub_server(_Answering) as url:
        yield url


@pytest.mark.timeout(60)
def test_an_answer_without_end_is_not_read_past_what_an_answer_holds(node, tmp_path, answering):
    _Answering.how = "endless"
    totals, seconds = _one_event_to(answering, node, tmp_path)
    assert seconds < 20
    assert not totals.ok and "more than a meteorpi answer holds" in totals.failures[0]


@pytest.mark.timeout(60)
def test_an_answer_that_trickles_ends_within_the_read_timeout(node, tmp_path, answering):
    """Each byte comes within the read timeout, so only a deadline on the whole answer ends it."""
    _Answering.how = "trickle"
    totals, seconds = _one_event_to(answering, node, tmp_path, read_timeout_seconds=1.0)
    assert seconds < 15
    assert not totals.ok and "did not finish its answer to" in totals.failures[0]
    assert "within 1s" in totals.failures[0]


def test_an_import_larger_than_the_server_takes_goes_in_halves(node, central, tmp_path, monkeypatch):
    """An archive may take smaller bodies than a batch's import (server.max_body_bytes): its
    413 splits the import until each part fits, instead of failing the batch on every round.
    One entity too large by itself fails alone, saying why."""
    monkeypatch.setattr(central.db.config.server, "max_body_bytes", 6000)  # the config outlives the test
    made = night(node, tmp_path, events=12, files_per_event=2, standalone=0, file_size=64)
    first = made.events[0]
    big = node.register_event(first.camera_id, first.event_time + datetime.timedelta(seconds=1),
                              first.event_type, event_meta=[Meta(key=f"note{i}", value="x" * 3000) for i in range(3)])
    add_export(node, central.import_url, "event")
    totals = export_round(node)
    assert totals.completed == 12 and totals.failed == 1, totals.failures[:3]
    assert big.event_id.hex in totals.failures[0] and "HTTP 413" in totals.failures[0]


@pytest.mark.timeout(60)
def test_a_link_cut_while_the_answer_arrives_is_a_cut_like_any_other(node, tmp_path, answering):
    """The answer is read a piece at a time from urllib3, whose errors are not requests': a
    reset in the middle of one must end the task as a cut (retried later), not escape as an
    error the exporter does not expect."""
    _Answering.how = "cut"
    totals, _ = _one_event_to(answering, node, tmp_path)
    assert not totals.ok and totals.failures and "cannot reach" in totals.failures[0], totals.failures


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers everything with a redirect to ``location`` (an archive moved to https, say)."""
    location = "https://archive.example.org/import/v2"
    seen: list[str] = []

    def _redirect(self):
        _Redirecting.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(301)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("location, shown", [
    ("https://archive.example.org/import/v2", "a redirect to https://archive.example.org/import/v2"),
    ("/elsewhere", "a redirect to http://127.0.0.1:"),                      # made absolute
    ("https://u:SECRET@evil.example/x\x1b[2J", "u:***@evil.example/x\\x1b[2J"),  # redacted, escaped
])
def test_a_redirect_is_reported_not_followed(node, tmp_path, location, shown):
    """requests would follow it: a POST sent on as a GET, or its body (the node's data) sent on
    to wherever it points, with the password kept from http to https. The node follows none and
    says where it was sent, so the operator can set the target to it."""
    _Redirecting.location, _Redirecting.seen = location, []
    with stub_server(_Redirecting) as url:
        totals, _ = _one_event_to(url, node, tmp_path)
    assert not totals.ok and "HTTP 301" in totals.failures[0] and shown in totals.failures[0], totals.failures
    assert "SECRET" not in totals.failures[0] and "\x1b" not in totals.failures[0]
    assert all(seen.startswith(("GET /import/v2", "POST /import")) for seen in _Redirecting.seen)
