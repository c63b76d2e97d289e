"""Another Flask application embeds the import API with a receiver of its own."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import re
import tracemalloc
import uuid

import pytest
import requests
from flask import Flask

from meteorpi_model import get_md5_hash
from meteorpi_server import BaseImportReceiver, FileData, ImportRequest, MeteorApp, add_routes

from .export_fixtures import add_export, exporter, night
from .server_fixtures import IMPORTER, TIMEOUT, Api, deliver, serve_in_thread


class MemoryReceiver(BaseImportReceiver):
    """Keeps what it receives in dicts: the protocol, decided without any database writes."""

    def __init__(self):
        self.statuses, self.events, self.bytes = {}, {}, {}
        self.importers = []

    def receive_status(self, import_request: ImportRequest):
        self.statuses[import_request.entity_id] = import_request.entity
        return None  # the default for a status: continue

    def receive_event(self, import_request: ImportRequest):
        event = import_request.entity
        if event.event_id.hex.startswith("bad"):  # a bug that quotes what it choked on, as many do
            raise RuntimeError("a receiver bug on " + ", ".join(str(m.value) for m in event.meta))
        if event.status_id not in self.statuses:
            return import_request.response_need_status()
        for f in event.files:
            if f.file_id not in self.bytes:
                return import_request.response_need_file_data(f.file_id)
        self.events[event.event_id] = event
        self.importers.append(self.get_importing_user_id())
        return None  # the default for an event: complete

    def receive_file_data(self, file_id, file_data, md5_hex):
        data = b"".join(file_data)
        if hashlib.md5(data).hexdigest() != md5_hex:
            return ImportRequest(None, file_id).response_failed("MD5 mismatch")
        self.bytes[file_id] = data
        return None


@pytest.fixture
def host_app(live_server):
    """A host application with a page of its own and the import API under /api/import."""
    flask_app = Flask("host")

    @flask_app.route("/hello")
    def hello():
        return "hello from the host"

    receiver = MemoryReceiver()
    add_routes(MeteorApp(db=live_server.db, app=flask_app), handler=receiver, url_path="/api/import")
    url, http_server = serve_in_thread(flask_app)
    yield url, receiver
    http_server.shutdown()


def test_host_app_imports_through_its_own_receiver(live_server, host_app, records):
    """The full exchange runs against the custom receiver; the database is left alone; the
    host's own routes still answer."""
    url, receiver = host_app
    status = records.status()
    event, files = records.event(status, sizes=[100, 200])
    exchange = deliver(Api(url, import_path="/api/import"), event, {status["status"]["status_id"]: status}, files)
    assert exchange.answers == ["need_status", "continue", "need_file_data", "continue",
                                "need_file_data", "continue", "complete"]
    event_id = uuid.UUID(event["event"]["event_id"])
    assert receiver.events[event_id].as_dict() == event["event"]
    assert receiver.importers == ["importer"]
    assert {f.hex: receiver.bytes[f] for f in receiver.bytes} == files
    assert not live_server.db.has_event_id(event_id)
    assert requests.get(url + "/hello", timeout=TIMEOUT).text == "hello from the host"


def test_receiver_fault_is_500_json_and_logged_with_traceback(host_app, records, caplog):
    """An unexpected fault answers 500 {"state": "failed", "message": "internal error"}: the
    traceback goes to the log, never into the response."""
    url, _ = host_app
    status = records.status()
    event, _ = records.event(status)
    event["event"]["event_id"] = "bad" + uuid.uuid4().hex[3:]
    caplog.set_level(logging.ERROR, logger="meteorpi.server")
    r = requests.post(url + "/api/import", json=event, auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == 500
    assert r.json() == {"state": "failed", "message": "internal error"}
    assert "Traceback" not in r.text and "receiver bug" not in r.text
    logged = [rec for rec in caplog.records if rec.name == "meteorpi.server" and rec.exc_info]
    assert logged and "a receiver bug" in str(logged[0].exc_info[1])


def test_a_fault_quoting_the_request_reaches_the_log_escaped(host_app, records, caplog):
    """A fault's message may quote what the client sent (here a meta value holding a line
    break, a forged log line and an ESC sequence): the traceback in the log shows it escaped,
    on the exception's one line, so the client writes no line of the log and no escape reaches
    an operator's terminal."""
    url, _ = host_app
    status = records.status()
    event, _ = records.event(status)
    event["event"]["event_id"] = "bad" + uuid.uuid4().hex[3:]
    forged = "x\r\n2026-12-02 10:00:00,000 INFO meteorpi.server: all is well\x1b[2K\x9b"
    event["event"]["meta"][1]["value"] = forged
    caplog.set_level(logging.ERROR, logger="meteorpi.server")
    r = requests.post(url + "/api/import", json=event, auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == 500
    logged = caplog.text
    assert "a receiver bug on" in logged and "Traceback" in logged
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", logged), logged
    assert not any(line.startswith("2026-12-02 10:00:00,000") for line in logged.splitlines()), logged
    assert r"x\r\n2026-12-02 10:00:00,000 INFO meteorpi.server: all is well\x1b[2K\x9b" in logged


def test_embedded_routes_still_require_the_import_role(host_app):
    url, _ = host_app
    r = requests.post(url + "/api/import", json={"type": "status"}, timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["message"]


# -- receivers written for the original meteorpi importer -------------------------------------
EVENTS_ONLY = "this archive keeps events only"
LARGE_UPLOAD = 48 * 1024 * 1024


class OriginalStyleReceiver(BaseImportReceiver):
    """Written against the original importer API, unchanged: the answers that need no request
    are called on the class, the request is fetched with ``process_request()``, the importing
    user is asked of the class, and uploads are kept with ``file_data.save(path)``."""

    def __init__(self, directory):
        self.directory = directory
        self.statuses, self.events, self.importers = {}, {}, []

    def path_for(self, file_id):
        return os.path.join(self.directory, file_id.hex)

    def receive_status(self, import_request):
        status = ImportRequest.process_request().entity
        self.statuses[status.status_id] = status

    def receive_event(self, import_request):
        event = ImportRequest.process_request().entity
        if event.status_id not in self.statuses:
            return import_request.response_need_status()
        for record in event.files:
            if not os.path.isfile(self.path_for(record.file_id)):
                return ImportRequest.response_need_file_data(record.file_id)
        self.events[event.event_id] = event
        self.importers.append(BaseImportReceiver.get_importing_user_id())

    def receive_file_record(self, import_request):
        return ImportRequest.response_failed(EVENTS_ONLY)

    def receive_file_data(self, file_id, file_data, md5_hex):
        path = self.path_for(file_id)
        file_data.save(path)
        if get_md5_hash(path) != md5_hex:
            os.remove(path)
        return ImportRequest.response_continue_after_file()


@pytest.fixture
def original_style_host(live_server, tmp_path):
    """A host application serving an original-style receiver at /archive/import."""
    flask_app = Flask("original-style-host")
    receiver = OriginalStyleReceiver(tmp_path / "received")
    os.mkdir(receiver.directory)
    config = live_server.db.config
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, max_upload_bytes=LARGE_UPLOAD))
    add_routes(MeteorApp(db=live_server.db, app=flask_app, config=config), handler=receiver,
               url_path="/archive/import")
    url, http_server = serve_in_thread(flask_app)
    yield url + "/archive/import", receiver
    http_server.shutdown()
    http_server.server_close()


def test_original_style_receiver_gets_a_nodes_night_from_the_exporter(node, original_style_host, tmp_path):
    """The real exporter replicates a night to a receiver written for the original API: it gets
    every event with the importing user, every file saved byte for byte (nothing else left in
    its directory), and its class-level response_failed refuses the stand-alone file with its
    own message."""
    import_url, receiver = original_style_host
    registered = night(node, tmp_path, events=2, files_per_event=2, standalone=1)
    add_export(node, import_url, "event")
    add_export(node, import_url, "file")
    reports = []
    with exporter(node) as e:
        e.on_task = reports.append
        e.mark_all()
        totals = e.export_due()
    assert (totals.completed, totals.failed, totals.confused) == (2, 1, 0), [r.message for r in reports]
    [refused] = [r for r in reports if r.task.entity_type == "file"]
    assert refused.message.endswith(EVENTS_ONLY)
    assert {e.event_id: e.as_dict() for e in registered.events} == \
        {i: e.as_dict() for i, e in receiver.events.items()}
    assert receiver.importers == ["importer", "importer"]
    files = [f for e in registered.events for f in e.files]
    assert sorted(os.listdir(receiver.directory)) == sorted(f.file_id.hex for f in files)
    for f in files:
        with open(receiver.path_for(f.file_id), "rb") as saved:
            assert saved.read() == node.file_path_for_id(f.file_id).read_bytes()


def test_class_level_response_failed_answers_its_message(original_style_host, records):
    """ImportRequest.response_failed(message) called on the class answers exactly that message."""
    import_url, _ = original_style_host
    body, _ = records.file(records.status())
    r = requests.post(import_url, json=body, auth=IMPORTER, timeout=TIMEOUT)
    assert (r.status_code, r.json()) == (200, {"state": "failed", "message": EVENTS_ONLY})


def _multipart(chunks, boundary=b"b0undary", closed=True):
    """A multipart/form-data body whose part ``file`` holds ``chunks``, produced as it is sent."""
    yield (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
           b"Content-Type: application/octet-stream\r\n\r\n")
    yield from chunks
    if closed:
        yield b"\r\n--" + boundary + b"--\r\n"


def test_file_data_save_streams_a_large_upload_to_disk(original_style_host):
    """file_data.save(path) writes a 48 MiB upload byte for byte while the process holds a
    small part of it in memory at any time (client and server both counted)."""
    import_url, receiver = original_style_host
    rng, md5, file_id = random.Random(12), hashlib.md5(), uuid.uuid4()
    pieces = [rng.randbytes(1024 * 1024) for _ in range(3)]
    for i in range(LARGE_UPLOAD // len(pieces[0])):
        md5.update(pieces[i % 3])
    chunks = (pieces[i % 3] for i in range(LARGE_UPLOAD // len(pieces[0])))
    tracemalloc.start()
    try:
        r = requests.post(f"{import_url}/data/{file_id.hex}/{md5.hexdigest()}", data=_multipart(chunks),
                          headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
                          auth=IMPORTER, timeout=TIMEOUT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (r.status_code, r.json()) == (200, {"state": "continue"})
    assert os.path.getsize(receiver.path_for(file_id)) == LARGE_UPLOAD
    assert get_md5_hash(receiver.path_for(file_id)) == md5.hexdigest()
    assert peak < LARGE_UPLOAD // 4, f"peak {peak} bytes traced"


def test_file_data_save_of_a_broken_upload_leaves_nothing(original_style_host):
    """An upload cut off before its closing boundary answers 400, and file_data.save leaves no
    file, whole or partial, in the receiver's directory."""
    import_url, receiver = original_style_host
    data = os.urandom(300_000)
    r = requests.post(f"{import_url}/data/{uuid.uuid4().hex}/{hashlib.md5(data).hexdigest()}",
                      data=b"".join(_multipart([data], closed=False)),
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
                      auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == 400 and "multipart" in r.json()["message"]
    assert os.listdir(receiver.directory) == []


def test_file_data_save_writes_to_an_open_file_or_a_path(tmp_path):
    """Both targets werkzeug's FileStorage.save took: an open binary file, or a path (written
    whole under a temporary name, so nothing else is left beside it)."""
    with open(tmp_path / "opened", "wb") as out:
        FileData(iter([b"meteor ", b"bytes"])).save(out)
    FileData(iter([b"meteor ", b"bytes"])).save(str(tmp_path / "by-path"), buffer_size=4)
    assert sorted(os.listdir(tmp_path)) == ["by-path", "opened"]
    assert {(tmp_path / n).read_bytes() for n in ("by-path", "opened")} == {b"meteor bytes"}


@pytest.fixture
def original_style_view(live_server):
    """A host's own import view, written as the original routes were: process_request() with
    no argument reads the request being served. Returns (URL, the requests it saw)."""
    flask_app = Flask("original-style-view")
    meteor_app = MeteorApp(db=live_server.db, app=flask_app)
    seen = []

    @flask_app.route("/legacy/import", methods=["POST"])
    @meteor_app.requires_auth(roles=["import"])
    def legacy_import():
        import_request = ImportRequest.process_request()
        seen.append(import_request)
        if import_request.entity is None:
            return import_request.response_continue()
        return import_request.response_complete()

    url, http_server = serve_in_thread(flask_app)
    yield url + "/legacy/import", seen
    http_server.shutdown()
    http_server.server_close()


def test_process_request_without_arguments_reads_the_current_request(original_style_view, records):
    """In a host's own view: the full entity is parsed, a cached_entity id sent after it finds
    it, an unknown id asks for the entity again, and a bad body is a 400 JSON answer."""
    url, seen = original_style_view
    status = records.status()
    event, _ = records.event(status)
    event_id = event["event"]["event_id"]

    def post(body):
        r = requests.post(url, json=body, auth=IMPORTER, timeout=TIMEOUT)
        return r.status_code, r.json()

    assert post(event) == (200, {"state": "complete"})
    assert post({"type": "cached_entity", "cached_entity_id": event_id}) == (200, {"state": "complete"})
    assert [(r.entity_type, r.entity_id.hex) for r in seen] == [("event", event_id)] * 2
    assert seen[1].entity.as_dict() == event["event"]
    unknown = uuid.uuid4().hex
    assert post({"type": "cached_entity", "cached_entity_id": unknown}) == (200, {"state": "continue-nocache"})
    r = requests.post(url, data=b"{not json", auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["state"] == "failed" and "not valid JSON" in r.json()["message"]
    r = requests.post(url, json={"type": "event"}, auth=IMPORTER, timeout=TIMEOUT)
    assert (r.status_code, r.json()) == (400, {"state": "failed", "message": "event: required"})
