"""Another Flask application embeds the import API with a receiver of its own."""
from __future__ import annotations

import hashlib
import logging
import uuid

import pytest
import requests
from flask import Flask

from meteorpi_server import BaseImportReceiver, ImportRequest, MeteorApp, add_routes

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
        if event.event_id.hex.startswith("bad"):
            raise RuntimeError("a receiver bug")
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


def test_embedded_routes_still_require_the_import_role(host_app):
    url, _ = host_app
    r = requests.post(url + "/api/import", json={"type": "status"}, timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["message"]
