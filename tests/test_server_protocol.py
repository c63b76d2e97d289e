"""The replication protocol (docs/protocol.md, version 1) over a real socket: every answer a server
can give, in the exchanges that lead to it."""
from __future__ import annotations

import hashlib
import logging
import os
import threading

import pytest

from meteorpi_model import EventSearch
from meteorpi_server import create_app

from .server_fixtures import IMPORTER, MAX_FAILED_UPLOADS, Api, deliver, serve_in_thread


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cached(entity_id: str) -> dict:
    return {"type": "cached_entity", "cached_entity_id": entity_id}


def test_vector_event_exchange_follows_the_protocol_exactly(clean_server, api, vectors):
    """event.json against an empty server: the exact sequence of vectors/README.md, then the
    event is held with its files in order, and sending it again is one request: complete."""
    event, status = vectors["event"], vectors["status"]
    event_id = event["event"]["event_id"]
    f1, f3 = (f["file_id"] for f in event["event"]["files"])
    blobs = vectors["bytes"]

    assert api.post(event) == (200, {"state": "need_status", "status_id": status["status"]["status_id"]})
    assert api.post(status) == (200, {"state": "continue"})
    assert api.post(cached(event_id)) == (200, {"state": "need_file_data", "file_id": f1})
    assert api.upload(f1, md5(blobs["f1.bin"]), blobs["f1.bin"]) == (200, {"state": "continue"})
    assert api.post(cached(event_id)) == (200, {"state": "need_file_data", "file_id": f3})
    assert api.upload(f3, md5(blobs["f3.bin"]), blobs["f3.bin"]) == (200, {"state": "continue"})
    assert api.post(cached(event_id)) == (200, {"state": "complete"})

    held = clean_server.db.get_event(event_id)
    assert held.as_dict() == event["event"]
    assert api.post(event) == (200, {"state": "complete"})


def test_vector_file_record_exchange(clean_server, api, vectors):
    """file.json: need_status, continue, need_file_data, continue, complete; then held, and a
    resend is complete at once."""
    body, status = vectors["file"], vectors["status"]
    file_id = body["file"]["file_id"]
    data = vectors["bytes"]["f2.bin"]

    assert api.post(body) == (200, {"state": "need_status", "status_id": status["status"]["status_id"]})
    assert api.post(status) == (200, {"state": "continue"})
    assert api.post(cached(file_id)) == (200, {"state": "need_file_data", "file_id": file_id})
    assert api.upload(file_id, md5(data), data) == (200, {"state": "continue"})
    assert api.post(cached(file_id)) == (200, {"state": "complete"})

    assert clean_server.db.get_file(file_id).as_dict() == body["file"]
    assert api.post(body) == (200, {"state": "complete"})


def test_status_is_stored_once_and_answered_continue_every_time(server, api, records):
    """A status sent twice answers continue both times and is held once, regions included."""
    status = records.status()
    assert api.post(status) == (200, {"state": "continue"})
    assert api.post(status) == (200, {"state": "continue"})
    held = server.db.get_camera_status_by_id(status["status"]["status_id"])
    assert held.as_dict() == status["status"]
    assert server.db.get_cameras().count(records.camera_id) == 1


def test_unknown_cached_entity_answers_continue_nocache(server, api):
    """A cached_entity id the server never saw (or lost): continue-nocache, so it is resent."""
    assert api.post(cached(os.urandom(16).hex())) == (200, {"state": "continue-nocache"})


def test_cache_miss_leaves_other_entries_cached(server, api, records):
    """One node's miss does not evict anyone else's entity (docs/protocol.md weak point 1)."""
    status = records.status()
    first, _ = records.event(status)
    second, _ = records.event(status)
    for body in (first, second):
        assert api.post(body)[1]["state"] == "need_status"
    assert api.post(cached(os.urandom(16).hex()))[1] == {"state": "continue-nocache"}
    for body in (first, second):
        code, answer = api.post(cached(body["event"]["event_id"]))
        assert answer == {"state": "need_status", "status_id": status["status"]["status_id"]}


def test_full_cache_forgets_only_the_least_recently_used(make_database, vectors, records):
    """With room for two entities, a third evicts only the oldest: that one alone gets
    continue-nocache, the exporter resends it and the import still completes."""
    db = make_database("meteorpi_small_cache")
    db.config.server.entity_cache_size = 2
    db.create_or_update_user(*IMPORTER, ["import"])
    url, http_server = serve_in_thread(create_app(db=db))
    try:
        api = Api(url)
        status = records.status()
        (e1, files1), (e2, _), (e3, _) = (records.event(status) for _ in range(3))
        for body in (e1, e2, e3):
            assert api.post(body)[1]["state"] == "need_status"
        assert api.post(cached(e1["event"]["event_id"]))[1] == {"state": "continue-nocache"}
        for body in (e2, e3):
            assert api.post(cached(body["event"]["event_id"]))[1]["state"] == "need_status"
        exchange = deliver(api, e1, {status["status"]["status_id"]: status}, files1)
        assert exchange.answers[-1] == "complete"
    finally:
        http_server.shutdown()


def test_a_miss_in_another_worker_makes_the_exporter_resend(server, make_database, records):
    """Two workers do not share caches: cached_entity at the worker that never saw the entity
    answers continue-nocache; the full entity resent there carries on from where it was."""
    other_url, other = serve_in_thread(create_app(db=server.db))  # a second worker, own cache
    try:
        worker_a, worker_b = Api(server.url), Api(other_url)
        status = records.status()
        event, files = records.event(status, sizes=[100])
        event_id = event["event"]["event_id"]
        assert worker_a.post(event)[1]["state"] == "need_status"
        assert worker_a.post(status)[1] == {"state": "continue"}
        assert worker_b.post(cached(event_id))[1] == {"state": "continue-nocache"}
        file_id = event["event"]["files"][0]["file_id"]
        assert worker_b.post(event)[1] == {"state": "need_file_data", "file_id": file_id}
        assert worker_b.upload(file_id, md5(files[file_id]), files[file_id])[1] == {"state": "continue"}
        assert worker_a.post(cached(event_id))[1] == {"state": "complete"}
    finally:
        other.shutdown()


def test_need_status_names_a_file_status_the_event_does_not(server, api, records, vectors):
    """An event whose file refers to another status of the camera: that status is asked for
    too, before any bytes, so the import can succeed instead of failing."""
    early = records.status(valid_from=1435600000000, valid_to=1435600800000)
    late = records.status(valid_from=1435600800000)
    event, files = records.event(late, sizes=[10, 20])
    event["event"]["files"][0].update(status_id=early["status"]["status_id"], file_time=1435600500000)
    statuses = {s["status"]["status_id"]: s for s in (early, late)}
    exchange = deliver(api, event, statuses, files)
    assert exchange.answers == ["need_status", "continue", "need_status", "continue",
                                "need_file_data", "continue", "need_file_data", "continue", "complete"]
    assert server.db.get_event(event["event"]["event_id"]).files[0].status_id.hex == early["status"]["status_id"]


def test_same_event_delivered_by_two_nodes_at_once_is_stored_once(server, records):
    """Two exporters posting the same event at the same moment both hear complete, and one copy
    is held (docs/protocol.md weak point 4). Repeated to give the race a real chance."""
    a, b = Api(server.url), Api(server.url)
    status = records.status()
    a.post(status)
    for _ in range(5):
        event, files = records.event(status, sizes=[64, 64])
        for file_id, data in files.items():
            assert a.upload(file_id, md5(data), data)[1] == {"state": "continue"}
        answers, barrier = {}, threading.Barrier(2)

        def send(name, node):
            barrier.wait()
            answers[name] = node.post(event)

        threads = [threading.Thread(target=send, args=(n, node)) for n, node in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers == {"a": (200, {"state": "complete"}), "b": (200, {"state": "complete"})}
    found = server.db.search_events(EventSearch(camera_ids=[records.camera_id], limit=0))
    assert found["count"] == 5
    assert len({e.event_id for e in found["events"]}) == 5


@pytest.mark.parametrize("field, value, problem", [
    ("event_time", 1435600000000, "event.event_time"),          # before the status' valid_from
    ("camera_id", "another-camera", "event.camera_id"),         # a status of another camera
])
def test_event_contradicting_its_status_fails_and_writes_nothing(server, api, records, field, value, problem):
    """A record whose time lies outside its status' validity (or whose camera differs) is
    refused with failed, before any bytes are asked for, and nothing is written."""
    status = records.status(valid_from=1435600800000)
    event, _ = records.event(status)
    event["event"][field] = value
    for f in event["event"]["files"]:
        f[field.replace("event_", "file_")] = value
    assert api.post(event)[1]["state"] == "need_status"
    assert api.post(status)[1] == {"state": "continue"}
    code, answer = api.post(cached(event["event"]["event_id"]))
    assert code == 200 and answer["state"] == "failed"
    assert answer["message"].startswith(problem)
    assert not server.db.has_event_id(event["event"]["event_id"])
    assert not any(server.db.has_file_id(f["file_id"]) for f in event["event"]["files"])


def test_file_record_outside_its_status_validity_fails(server, api, records):
    """The same check for a stand-alone file record: failed, nothing written."""
    status = records.status(valid_from=1435600800000, valid_to=1435601000000)
    body, _ = records.file(status, time=1435602000000)
    deliver_answers = deliver(api, body, {status["status"]["status_id"]: status}, {})
    assert deliver_answers.answers == ["need_status", "continue", "failed"]
    assert "file.file_time" in deliver_answers.final["message"]
    assert not server.db.has_file_id(body["file"]["file_id"])


def test_bad_md5_upload_is_refused_and_leaves_nothing(server, api, records):
    """Bytes that do not match the MD5 in the URL: failed, and nothing is held or left behind."""
    status = records.status()
    body, data = records.file(status)
    file_id = body["file"]["file_id"]
    code, answer = api.upload(file_id, body["file"]["md5"], data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert code == 200 and answer["state"] == "failed" and file_id in answer["message"]
    assert not server.db.has_file_data(file_id)
    assert not [p for p in server.db.file_store.tmp.iterdir() if p.name.startswith(file_id)]


def test_repeated_bad_uploads_end_in_failed_then_a_good_one_recovers(server, api, records):
    """An exporter whose file no longer matches its MD5 is not asked for it forever (weak point
    3): after max_failed_uploads failures its entity answers failed; good bytes clear that."""
    status = records.status()
    event, files = records.event(status, sizes=[500])
    event_id = event["event"]["event_id"]
    file_id = event["event"]["files"][0]["file_id"]
    good = files[file_id]
    api.post(status)
    assert api.post(event)[1] == {"state": "need_file_data", "file_id": file_id}
    for attempt in range(MAX_FAILED_UPLOADS):
        assert api.upload(file_id, md5(good), b"corrupt" + good)[1]["state"] == "failed"
        expected = "failed" if attempt == MAX_FAILED_UPLOADS - 1 else "need_file_data"
        assert api.post(cached(event_id))[1]["state"] == expected
    code, answer = api.post(cached(event_id))
    assert answer["state"] == "failed"
    assert f"{MAX_FAILED_UPLOADS} uploads of its bytes" in answer["message"] and file_id in answer["message"]
    assert not server.db.has_event_id(event_id)

    assert api.upload(file_id, md5(good), good)[1] == {"state": "continue"}
    assert server.db.upload_failures(file_id, md5(good), IMPORTER[0]) == 0
    assert api.post(event)[1] == {"state": "complete"}


def test_upload_of_bytes_already_held_rewrites_nothing(server, api, records):
    """Bytes already held: continue, and the stored file is not touched."""
    status = records.status()
    body, data = records.file(status)
    file_id = body["file"]["file_id"]
    assert api.upload(file_id, md5(data), data)[1] == {"state": "continue"}
    path = server.db.file_path_for_id(file_id)
    before = path.stat()
    assert api.upload(file_id, md5(data), data)[1] == {"state": "continue"}
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_completed_imports_are_logged_without_passwords(server, api, records, caplog):
    """Each completed import is logged at INFO on meteorpi.server.import: type, id and user."""
    caplog.set_level(logging.INFO, logger="meteorpi.server.import")
    status = records.status()
    event, files = records.event(status, sizes=[10])
    deliver(api, event, {status["status"]["status_id"]: status}, files)
    lines = [r.getMessage() for r in caplog.records if r.name == "meteorpi.server.import"]
    assert any("event" in m and event["event"]["event_id"] in m and "importer" in m for m in lines)
    assert any("status" in m and status["status"]["status_id"] in m for m in lines)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "meteorpi.server.import")
    assert not any(IMPORTER[1] in r.getMessage() for r in caplog.records)


def test_upload_under_another_md5_than_the_record_ends_in_failed(server, api, records):
    """Bytes uploaded with the MD5 of what the node has now, not the record's: they verify
    against the URL but never satisfy the record, so the entity answers failed (instead of
    asking for them for ever), the stray bytes go, and the right bytes later succeed."""
    status = records.status()
    body, data = records.file(status)
    file_id = body["file"]["file_id"]
    api.post(status)
    assert api.post(body)[1] == {"state": "need_file_data", "file_id": file_id}
    changed = data + b"appended since"
    assert api.upload(file_id, md5(changed), changed)[1] == {"state": "continue"}
    code, answer = api.post(cached(file_id))
    assert answer["state"] == "failed" and answer["message"].startswith("file.md5:")
    assert server.db.file_path_for_id(file_id) is None
    assert api.post(body)[1] == {"state": "need_file_data", "file_id": file_id}
    assert api.upload(file_id, md5(data), data)[1] == {"state": "continue"}
    assert api.post(cached(file_id))[1] == {"state": "complete"}
