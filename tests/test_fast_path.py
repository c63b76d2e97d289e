"""Protocol version 2 (the fast path) beside version 1: negotiation, both pairings, bad input.

The exporter's end-to-end cases (faults, corruption, auth, relay...) run over both protocols
in test_exporter.py; here are what is particular to version 2.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import uuid

import pytest
import requests

from meteorpi_export.link import TaskEnded

from meteorpi_server import MeteorApp, add_routes
from meteorpi_server.importer_api import BaseImportReceiver, MeteorDatabaseImportReceiver

from .export_fixtures import add_export, exporter, in_thread, night
from .server_fixtures import IMPORTER, add_users, serve_in_thread

FILES = "application/vnd.meteorpi.files"


class VersionOneReceiver(BaseImportReceiver):
    """The database receiver without the batch methods: a server that speaks version 1 only."""

    def __init__(self, db):
        self.inner = MeteorDatabaseImportReceiver(db)

    def receive_event(self, r):
        return self.inner.receive_event(r)

    def receive_file_record(self, r):
        return self.inner.receive_file_record(r)

    def receive_status(self, r):
        return self.inner.receive_status(r)

    def receive_file_data(self, file_id, data, md5):
        return self.inner.receive_file_data(file_id, data, md5)


def test_new_exporter_falls_back_to_version_1_on_a_version_1_server(node, make_database, tmp_path):
    """A server without the fast path answers 404 to the probe; the exporter speaks version 1
    and the archive still arrives whole."""
    central = make_database("export_central")
    add_users(central)
    meteor_app = MeteorApp(db=central)
    add_routes(meteor_app, handler=VersionOneReceiver(central), url_path="/old-import")
    base, server = serve_in_thread(meteor_app.app)
    try:
        assert requests.get(f"{base}/old-import/v2", auth=IMPORTER, timeout=10).status_code == 404
        registered = night(node, tmp_path, events=2, files_per_event=2, standalone=1)
        add_export(node, f"{base}/old-import", "event")
        add_export(node, f"{base}/old-import", "file", name="files")
        with exporter(node) as e:
            e.mark_all()
            totals = e.export_due()
            assert e.protocol_for(node.get_export_configuration("files")) == 1
        assert totals.ok and totals.completed == 3
        assert totals.requests >= 2 * len(registered.all_files)  # version 1: about two per missing file
        for f in registered.all_files:
            assert central.file_store.verify(f.file_id, f.md5)
    finally:
        server.shutdown()
        server.server_close()


def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
           content_type: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _FixedAnswer(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status named first in its path (``/404/import/v2``), the
    way an old server, a proxy or a broken archive might answer the probe."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        status = int(self.path.strip("/").split("/")[0])
        body = b"<html>not here</html>" if status != 200 else b'{"protocol": 1}'
        _reply(self, status, body, "text/html" if status != 200 else "application/json")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, version", [
    (404, 1), (405, 1), (400, 1), (410, 1),   # "not here": a server without the fast path
    (200, 1),                                 # an answer, but not the fast path's
    (401, None), (403, None),                 # "not you": the credentials, whichever version
    (500, None), (503, None),                 # the target cannot answer now
])
def test_probe_decides_by_the_status_code(node, status, version):
    """The probe gives version 1 for a client error that means "no such route" and for any
    answer that is not the fast path's; refused credentials or a server error end the probe
    (the task fails and is deferred) instead of quietly choosing a version."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FixedAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = add_export(node, f"http://127.0.0.1:{server.server_port}/{status}/import", "event")
        with exporter(node) as e:
            if version is None:
                with pytest.raises(TaskEnded) as ended:
                    e.protocol_for(config)
                assert ended.value.status == status and f"HTTP {status}" in ended.value.message
            else:
                assert e.protocol_for(config) == version
    finally:
        server.shutdown()
        server.server_close()


class _AwayThenBack(http.server.BaseHTTPRequestHandler):
    """Answers the probe 503 while ``away`` is set, then as a server with the fast path."""
    away = True

    def do_GET(self):  # noqa: N802 (http.server's name)
        _reply(self, *((503, b"{}") if _AwayThenBack.away else (200, b'{"protocol": 2}')))

    def log_message(self, *args):
        pass


def test_a_target_that_could_not_be_probed_is_asked_again(node):
    """The probe runs in the background while a batch is read; one that failed (the server
    was away on a round with nothing due) is not kept as the answer: the next round asks
    again and finds the fast path, instead of sending that round over version 1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AwayThenBack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _AwayThenBack.away = True
    try:
        config = add_export(node, f"http://127.0.0.1:{server.server_port}/import", "event")
        with exporter(node) as e:
            e._start_probes([config])
            with pytest.raises(TaskEnded) as ended:
                e.protocol_for(config)
            assert ended.value.status == 503
            e._start_probes([config])  # a round with nothing due: this probe fails and is left
            e._probing[config.target_url].exception(timeout=30)
            _AwayThenBack.away = False
            e._start_probes([config])  # the next round
            assert e.protocol_for(config) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_fast_path_costs_a_few_requests_per_batch(node, central, tmp_path):
    """Ten events of three files and four files, through an event and a file configuration to
    the same archive: they travel together, one check, one upload, one import."""
    registered = night(node, tmp_path, events=10, files_per_event=3, standalone=4)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file", name="files")
    with exporter(node) as e:
        e.mark_all()
        totals = e.export_due()
    assert totals.ok and totals.completed == 14
    assert totals.requests == 3
    assert totals.bytes_sent == registered.total_bytes
    assert central.check(node).ok


def test_entities_are_imported_while_later_uploads_are_still_on_the_wire(node, central, tmp_path, monkeypatch):
    """An operator sees the night arrive event by event, and a link that drops late in a batch
    loses no import already made: the first events are held while bytes of later ones are still
    travelling."""
    import dataclasses
    import time

    from meteorpi_export import MeteorExporter, protocol_v2, uploads

    monkeypatch.setattr(uploads, "UPLOAD_BYTES", 2 * 64 * 1024)  # an event's two files per upload
    monkeypatch.setattr(protocol_v2, "IMPORT_AT_LEAST", 1)
    night(node, tmp_path, events=8, files_per_event=2, standalone=0, file_size=64 * 1024)
    add_export(node, central.import_url, "event")
    seen: list[tuple[int, int]] = []  # (events held, files' bytes held) at the central archive
    e = MeteorExporter(node, dataclasses.replace(node.config.export), rate_limit=512 * 1024)
    e.mark_all()
    result = []
    run = in_thread(lambda: result.append(e.export_due()))
    while run.is_alive():
        seen.append((central.counts()[0], len(list(central.db.file_store.root.glob("??/??/*_*")))))
        time.sleep(0.02)
    totals = result[0]
    assert totals.ok and totals.completed == 8
    assert any(0 < events and held < 16 for events, held in seen), seen[-20:]


def test_changed_files_are_refused_by_the_server_and_the_rest_of_the_batch_arrives(node, central, tmp_path):
    """The exporter sends bytes without hashing them: a file that rotted or shrank on the node
    since it was recorded is caught by the server's MD5 check (one failed upload each, nothing
    held), its event fails naming the file, and every other event of the same upload arrives."""
    registered = night(node, tmp_path, events=4, files_per_event=2, standalone=0)
    rotten, shrunk = registered.events[1].files[0], registered.events[2].files[1]
    path = node.file_store.path(rotten.file_id, rotten.md5)
    path.write_bytes(b"rotten" + path.read_bytes()[6:])
    path = node.file_store.path(shrunk.file_id, shrunk.md5)
    path.write_bytes(path.read_bytes()[:-100])
    add_export(node, central.import_url, "event")
    with exporter(node) as e:
        e.mark_all()
        totals = e.export_due()
    assert (totals.completed, totals.failed) == (2, 2)
    assert totals.requests == 3  # check, one upload, one import: nothing sent again
    for record in (rotten, shrunk):
        assert any(f"file {record.file_id.hex}" in f and "no longer match their MD5" in f for f in totals.failures)
        assert central.db.upload_failures(record.file_id, record.md5, IMPORTER[0]) == 1  # the server refused it
        assert central.db.file_store.find(record.file_id) is None
    assert central.counts() == (2, 4)
    assert not any(central.db.file_store.tmp.iterdir())


def upload(base, manifest_files, payload: bytes, content_type=FILES):
    body = json.dumps({"files": manifest_files}).encode() + b"\n" + payload
    return requests.post(f"{base}/import/v2/data", data=body, auth=IMPORTER, timeout=30,
                         headers={"Content-Type": content_type})


def test_batch_upload_stores_good_files_and_refuses_a_bad_one(central):
    good, bad = os.urandom(5000), os.urandom(3000)
    ids = [uuid.uuid4(), uuid.uuid4()]
    files = [{"file_id": ids[0].hex, "md5": hashlib.md5(good).hexdigest(), "size": len(good)},
             {"file_id": ids[1].hex, "md5": "0" * 32, "size": len(bad)}]
    answer = upload(central.url, files, good + bad)
    assert answer.status_code == 200
    body = answer.json()
    assert body["stored"] == [ids[0].hex]
    assert body["failed"][0]["file_id"] == ids[1].hex and "MD5" in body["failed"][0]["message"]
    assert central.db.file_store.has(ids[0], files[0]["md5"])
    assert central.db.file_store.find(ids[1]) is None
    assert central.db.upload_failures(ids[1], files[1]["md5"], IMPORTER[0]) == 1
    assert not any(central.db.file_store.tmp.iterdir())


def test_truncated_batch_upload_publishes_nothing(central):
    data = os.urandom(4000)
    file_id = uuid.uuid4()
    files = [{"file_id": file_id.hex, "md5": hashlib.md5(data).hexdigest(), "size": len(data) + 10}]
    answer = upload(central.url, files, data)
    assert answer.status_code == 400 and "ended" in answer.json()["message"]
    assert central.db.file_store.find(file_id) is None and not any(central.db.file_store.tmp.iterdir())


def test_batch_check_and_import_name_bad_fields(central, vectors):
    def post(path, body):
        return requests.post(f"{central.url}/import/v2/{path}", json=body, auth=IMPORTER, timeout=10)
    cases = [
        ("check", {"events": ["nothex"]}, "events[0]: expected 32 hex digits"),
        ("check", {"file_data": [{"file_id": uuid.uuid4().hex, "md5": "x"}]}, "file_data[0].md5"),
        ("import", {"events": [dict(vectors["event"]["event"], event_time="soon")]}, "events[0].event_time"),
        ("import", {"statuses": {"a": 1}}, "statuses: expected a list"),
    ]
    for path, body, message in cases:
        answer = post(path, body)
        assert answer.status_code == 400, (path, body)
        assert answer.json()["message"].startswith(message)
    assert central.counts() == (0, 0)
    bad_type = upload(central.url, [], b"", content_type="multipart/form-data")
    assert bad_type.status_code == 400


def test_batch_import_refuses_one_entity_and_keeps_the_rest(central, vectors):
    """An event contradicting its status is refused alone; the file beside it is stored."""
    status = vectors["status"]["status"]
    record = vectors["file"]["file"]
    requests.post(f"{central.url}/import/v2/data", auth=IMPORTER, timeout=10, headers={"Content-Type": FILES},
                  data=json.dumps({"files": [{"file_id": record["file_id"], "md5": record["md5"],
                                              "size": record["file_size"]}]}).encode() + b"\n" + vectors["bytes"]["f2.bin"])
    late_event = dict(vectors["event"]["event"], event_time=status["valid_from"] - 1)
    answer = requests.post(f"{central.url}/import/v2/import", auth=IMPORTER, timeout=10,
                           json={"statuses": [status], "events": [late_event], "files": [record]}).json()
    states = {r["id"]: r for r in answer["results"]}
    assert states[record["file_id"]]["state"] == "complete"
    assert states[late_event["event_id"]]["state"] == "failed"
    assert "camera status" in states[late_event["event_id"]]["message"]
    assert central.counts() == (0, 1)
