"""One fast-path import request holding many entities: duplicates are imported once, and one
entity refused — for any reason, the database's own included — never costs the others.

Over real HTTP against the shared server (entities with fresh ids, a camera of their own).
"""
from __future__ import annotations

import copy

import pytest

from meteorpi_model import FileRecordSearch

from .server_fixtures import manifest_of


def _upload_all(api, files: dict[str, bytes]) -> None:
    code, answer = api.batch_upload(*manifest_of(files))
    assert code == 200 and not answer["failed"], answer


def _results(answer: dict) -> dict[str, dict]:
    ids = [r["id"] for r in answer["results"]]
    assert len(ids) == len(set(ids)), f"an id answered twice: {ids}"
    return {r["id"]: r for r in answer["results"]}


def _batch(records, api):
    """A status, an event of two files (with meta) and an unrelated stand-alone file, all
    bytes uploaded: (status body, event, unrelated file record)."""
    status = records.status()
    event_body, event_files = records.event(status, sizes=(700, 900))
    other_body, other_data = records.file(status)
    _upload_all(api, {**event_files, other_body["file"]["file_id"]: other_data})
    return status["status"], event_body["event"], other_body["file"]


@pytest.mark.parametrize("case", ["same file record twice", "an event and a record of one of its files",
                                  "same event twice"])
def test_duplicates_in_one_batch_are_imported_once_and_the_rest_is_held(server, api, records, case):
    """The same entity sent twice (or a file both inside an event and on its own): each id is
    answered once, complete, held once with its metadata; the unrelated file beside it is held."""
    status, event, other = _batch(records, api)
    in_event = event["files"][0]  # a record with meta: the rows a second copy would repeat
    events, files = {
        "same file record twice": ([], [in_event, copy.deepcopy(in_event)]),
        "an event and a record of one of its files": ([event], [copy.deepcopy(in_event)]),
        "same event twice": ([event, copy.deepcopy(event)], []),
    }[case]
    code, answer = api.batch("import", {"statuses": [status], "events": events, "files": files + [other]})
    assert code == 200, answer
    results = _results(answer)
    expected = {e["event_id"] for e in events} | {f["file_id"] for f in files} | {other["file_id"], status["status_id"]}
    assert set(results) == expected
    assert all(r["state"] == "complete" for r in results.values()), results
    assert server.db.get_file(in_event["file_id"]).as_dict() == in_event
    assert server.db.get_file(other["file_id"]).as_dict() == other
    if events:
        assert server.db.get_event(event["event_id"]).as_dict() == event
    held = server.db.search_files(FileRecordSearch(camera_ids=[records.camera_id], limit=0))["files"]
    assert sorted(f.file_id.hex for f in held) == sorted({in_event["file_id"], other["file_id"]}
                                                          | {f["file_id"] for e in events for f in e["files"]})


def test_two_different_copies_of_one_id_are_refused_and_the_rest_is_held(server, api, records):
    """One id sent twice with different content cannot both be answered complete: it is
    refused, naming the id, nothing of it written; the rest of the batch is held."""
    status, event, other = _batch(records, api)
    changed = copy.deepcopy(event)
    changed["event_type"] = "meteorpi:not_a_meteor"
    code, answer = api.batch("import", {"statuses": [status], "events": [event, changed], "files": [other]})
    assert code == 200, answer
    results = _results(answer)
    assert results[event["event_id"]]["state"] == "failed"
    assert event["event_id"] in results[event["event_id"]]["message"]
    assert "twice" in results[event["event_id"]]["message"]
    assert results[other["file_id"]]["state"] == "complete"
    assert not server.db.has_event_id(event["event_id"])
    assert server.db.has_file_id(other["file_id"])


@pytest.fixture
def refusing_database(server):
    """The archive's database with two extra CHECK constraints, as a schema rule would refuse
    a row the model lets through: a file meta key and a status lens it will not hold."""
    with server.db.transaction() as cur:
        cur.execute("ALTER TABLE file_meta ADD CONSTRAINT test_refused_meta CHECK (meta_key <> 'test:refused')")
        cur.execute("ALTER TABLE camera_status ADD CONSTRAINT test_refused_lens CHECK (lens <> 'refused-lens')")
    try:
        yield server
    finally:
        with server.db.transaction() as cur:
            cur.execute("ALTER TABLE file_meta DROP CONSTRAINT test_refused_meta")
            cur.execute("ALTER TABLE camera_status DROP CONSTRAINT test_refused_lens")


def test_a_database_refusal_of_one_entity_leaves_the_others_imported(refusing_database, api, records):
    """The database itself refuses one file (a check violation) and one status: no 5xx; the
    file is answered failed with the reason, the entities of the refused status failed naming
    it, and every other entity of the batch is held."""
    server = refusing_database
    status, event, other = _batch(records, api)
    refused_body, refused_data = records.file({"status": status})
    refused = refused_body["file"]
    refused["meta"] = [{"type": "string", "key": "test:refused", "value": "x"}]
    bad_status = records.status(valid_from=status["valid_from"] - 3_600_000, valid_to=status["valid_from"])["status"]
    bad_status["lens"] = "refused-lens"
    orphan_body, orphan_data = records.file({"status": bad_status}, time=status["valid_from"] - 1000)
    orphan = orphan_body["file"]
    _upload_all(api, {refused["file_id"]: refused_data, orphan["file_id"]: orphan_data})

    code, answer = api.batch("import", {"statuses": [status, bad_status], "events": [event],
                                        "files": [refused, other, orphan]})
    assert code == 200, answer
    results = _results(answer)
    assert results[event["event_id"]]["state"] == "complete"
    assert results[other["file_id"]]["state"] == "complete"
    assert results[refused["file_id"]]["state"] == "failed"
    assert refused["file_id"] in results[refused["file_id"]]["message"]
    assert "test_refused_meta" in results[refused["file_id"]]["message"]
    assert results[orphan["file_id"]]["state"] == "failed"
    assert bad_status["status_id"] in results[orphan["file_id"]]["message"]
    assert server.db.get_event(event["event_id"]).as_dict() == event
    assert server.db.has_file_id(other["file_id"])
    assert not server.db.has_file_id(refused["file_id"]) and not server.db.has_file_id(orphan["file_id"])
    assert server.db.get_camera_status_by_id(bad_status["status_id"]) is None


@pytest.mark.parametrize("path, body, named", [
    ("import", {"event": []}, "body.event"), ("import", {"type": "event"}, "body.type"),
    ("import", {"events": [], "file_data": []}, "body.file_data"),
    ("check", {"event": []}, "body.event"), ("check", {"files": [], "filedata": []}, "body.filedata"),
    ("check", {"file_data": [{"file_id": "a" * 32, "md5": "b" * 32, "size": 3}]}, "file_data[0].size"),
])
def test_a_misspelt_key_is_refused_not_ignored(server, api, path, body, named):
    """{"event": [...]} for {"events": [...]} was answered 200 with no results: the client's typo
    imported nothing and nobody was told. Every key a body holds must be one the protocol knows."""
    code, answer = api.batch(path, body)
    assert code == 400, answer
    assert answer["message"].startswith(named) and "unknown key" in answer["message"]


def test_a_misspelt_manifest_key_is_refused(server, api, records):
    status = records.status()
    body, data = records.file(status)
    record = body["file"]
    manifest = [{"file_id": record["file_id"], "md5": record["md5"], "size": len(data), "ofset": 0}]
    code, answer = api.batch_upload(manifest, data)
    assert code == 400 and answer["message"].startswith("manifest.files[0]") and "ofset" in answer["message"]


def test_a_check_answers_each_id_once_however_often_asked(server, api):
    """5,000 copies of one id in a check were echoed 5,000 times."""
    file_id, event_id = "c" * 32, "d" * 32
    code, answer = api.batch("check", {"events": [event_id] * 50, "files": [file_id] * 50,
                                       "file_data": [{"file_id": file_id, "md5": "e" * 32}] * 50})
    assert code == 200, answer
    assert answer["events"] == [event_id] and answer["files"] == [file_id]
    assert answer["file_data"] == [file_id]


def test_one_id_sent_as_an_event_and_as_a_file_record_is_refused_saying_so(server, api, records):
    status, event, other = _batch(records, api)
    clash = dict(other, file_id=event["event_id"])
    code, answer = api.batch("import", {"statuses": [status], "events": [event], "files": [clash]})
    assert code == 200, answer
    message = _results(answer)[event["event_id"]]["message"]
    assert "both as an event and as a file record" in message and "different content" not in message


def test_every_status_sent_is_answered_once(server, api, records):
    """A status is answered like an event or a file record, one entry per id however often it
    was sent: complete when stored or held the same (its end of validity aside)."""
    status, event, other = _batch(records, api)
    code, answer = api.batch("import", {"statuses": [status, copy.deepcopy(status)], "events": [event]})
    assert code == 200, answer
    results = _results(answer)
    assert set(results) == {status["status_id"], event["event_id"]}
    assert results[status["status_id"]] == {"id": status["status_id"], "state": "complete"}
    code, answer = api.batch("import", {"statuses": [dict(status, valid_to=status["valid_from"] + 1)], "files": [other]})
    assert code == 200 and _results(answer)[status["status_id"]]["state"] == "complete", answer
    assert server.db.get_camera_status_by_id(status["status_id"]).as_dict() == status


def test_two_different_copies_of_one_status_are_both_refused_and_answered(server, api, records):
    """docs/protocol.md: two differing copies of one id are both refused, statuses included, and
    answered failed. The answer held no entry for the status (the node could not tell it
    apart from a status the server never saw); now it says why, and nothing of it is stored."""
    status, event, other = _batch(records, api)
    other_lens = dict(copy.deepcopy(status), lens="another lens")
    code, answer = api.batch("import", {"statuses": [status, other_lens], "events": [event], "files": [other]})
    assert code == 200, answer
    results = _results(answer)
    assert set(results) == {status["status_id"], event["event_id"], other["file_id"]}
    refused = results[status["status_id"]]
    assert refused["state"] == "failed" and status["status_id"] in refused["message"], refused
    assert "twice" in refused["message"]
    assert results[event["event_id"]]["state"] == results[other["file_id"]]["state"] == "failed"
    assert server.db.get_camera_status_by_id(status["status_id"]) is None
    assert not server.db.has_event_id(event["event_id"])


def test_a_held_status_sent_changed_is_answered_failed_naming_the_field(server, api, records):
    """The status id is held with another lens: failed, naming the id and the field (as version
    1 answers it), and the held status is left as it was; the batch's other entities go on."""
    status, event, other = _batch(records, api)
    code, answer = api.batch("import", {"statuses": [status], "files": [other]})
    assert code == 200 and _results(answer)[status["status_id"]]["state"] == "complete", answer
    changed = dict(copy.deepcopy(status), lens="another lens")
    code, answer = api.batch("import", {"statuses": [changed], "events": [event]})
    assert code == 200, answer
    results = _results(answer)
    assert set(results) == {status["status_id"], event["event_id"]}
    refused = results[status["status_id"]]
    assert refused["state"] == "failed" and status["status_id"] in refused["message"], refused
    assert "lens" in refused["message"] and "another lens" not in refused["message"]
    assert server.db.get_camera_status_by_id(status["status_id"]).as_dict() == status


def test_one_id_sent_as_a_status_and_as_an_event_is_refused_saying_so(server, api, records):
    """Answers are keyed by id: one id sent as a status and as an event (or file record) could
    not be answered for each, so both are refused, in one entry saying why, nothing stored."""
    status, event, other = _batch(records, api)
    clash = dict(copy.deepcopy(other), file_id=status["status_id"])
    code, answer = api.batch("import", {"statuses": [status], "events": [event], "files": [clash]})
    assert code == 200, answer
    results = _results(answer)
    assert set(results) == {status["status_id"], event["event_id"]}
    message = results[status["status_id"]]["message"]
    assert "both as a camera status and as a file record" in message, message
    assert results[event["event_id"]]["state"] == "failed"
    assert server.db.get_camera_status_by_id(status["status_id"]) is None
    assert not server.db.has_file_id(status["status_id"])
