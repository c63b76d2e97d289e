"""An id the archive already holds, sent saying something else: whatever says it is refused.

A node whose record differs from the archive's (the same file id with other bytes, or any record
with other content) must never hear ``complete``: it would believe its version arrived while the
archive keeps the old one. A record sent again as it was must still be complete, so the round
trips through storage, the wire and a relay are checked to the last field. Over real HTTP,
protocol versions 1 and 2, and end to end through the exporter.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import os
import threading
import time
import uuid

import psycopg2
import pytest
from click.testing import CliRunner

from meteorpi_db import Conflict
from meteorpi_model import CameraStatus, Event, EventSearch, FileRecord
from meteorpi_server.cli import main

from .export_fixtures import add_export, cli_env, export_round, exporter, night
from .server_fixtures import deliver, manifest_of
from .test_storage import T0, make_status, store_vector_bytes, write


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclasses.dataclass
class Held:
    """A status, an event of one file, all held by the archive, and a record contradicting
    that file: its id with other bytes."""
    status: dict
    event: dict
    held: dict          # the file record the archive holds
    other: dict         # the same file id, another MD5
    other_bytes: bytes

    def names_both(self, message: str) -> bool:
        return all(part in message for part in (self.held["file_id"], self.held["md5"], self.other["md5"]))


@pytest.fixture
def held(server, api, records) -> Held:
    status = records.status()
    event_body, files = records.event(status, sizes=(600,))
    event = event_body["event"]
    code, answer = api.batch_upload(*manifest_of(files))
    assert code == 200 and not answer["failed"]
    code, answer = api.batch("import", {"statuses": [status["status"]], "events": [event]})
    assert [r["state"] for r in answer["results"]] == ["complete", "complete"]  # the status, the event
    record = event["files"][0]
    other_bytes = os.urandom(800)
    other = dict(copy.deepcopy(record), md5=md5(other_bytes), file_size=len(other_bytes))
    return Held(status, event, record, other, other_bytes)


def _still_as_it_was(server, held: Held) -> None:
    """The archive's record is the held one, and no bytes under the second MD5 were kept."""
    assert server.db.get_file(held.held["file_id"]).md5 == held.held["md5"]
    assert not server.db.file_store.has(uuid.UUID(held.held["file_id"]), held.other["md5"])


def _new_event_with(held: Held) -> dict:
    event = copy.deepcopy(held.event)
    event["event_id"] = os.urandom(16).hex()
    event["files"] = [held.other]
    return event


def test_v1_file_record_with_another_md5_fails_naming_both(server, api, held):
    """Version 1, a stand-alone record of a held file id with another MD5: failed, naming the
    id and both MD5s, and the archive's record is unchanged."""
    code, answer = api.post({"type": "file", "file": held.other})
    assert code == 200 and answer["state"] == "failed", answer
    assert held.names_both(answer["message"]), answer
    _still_as_it_was(server, held)


def test_v1_upload_under_another_md5_is_refused_and_the_event_fails(server, api, records, held):
    """Version 1: bytes for a held file id under a second MD5 are refused and not kept; an
    event (new, or the held one sent again) naming that file with the second MD5 fails."""
    code, answer = api.upload(held.other["file_id"], held.other["md5"], held.other_bytes)
    assert code == 200 and answer["state"] == "failed", answer
    assert held.names_both(answer["message"]), answer
    _still_as_it_was(server, held)

    event = _new_event_with(held)
    exchange = deliver(api, {"type": "event", "event": event}, {}, {held.other["file_id"]: held.other_bytes})
    assert exchange.final["state"] == "failed" and held.names_both(exchange.final["message"]), exchange.steps
    assert not server.db.has_event_id(event["event_id"])

    resent = dict(copy.deepcopy(held.event), files=[held.other])
    code, answer = api.post({"type": "event", "event": resent})
    assert answer["state"] == "failed" and held.names_both(answer["message"]), answer
    _still_as_it_was(server, held)


def test_v2_check_upload_and_import_refuse_the_other_md5(server, api, records, held):
    """Version 2: check lists the file as refused (naming both MD5s), an upload of its bytes
    is refused and not kept, and an import of a record, a new event or the held event naming
    it with the second MD5 answers failed for each; nothing of them is written."""
    fid = held.other["file_id"]
    code, check = api.batch("check", {"files": [fid], "file_data": [{"file_id": fid, "md5": held.other["md5"]}]})
    assert code == 200 and fid not in check["file_data"]
    refusal = {r["file_id"]: r["message"] for r in check["refused_file_data"]}
    assert fid in refusal and held.names_both(refusal[fid]), check

    code, answer = api.batch_upload(*manifest_of({fid: held.other_bytes}))
    assert code == 200 and answer["stored"] == [], answer
    assert [f["file_id"] for f in answer["failed"]] == [fid] and held.names_both(answer["failed"][0]["message"])
    _still_as_it_was(server, held)

    new_event = _new_event_with(held)
    resent = dict(copy.deepcopy(held.event), files=[held.other])
    for body in ({"files": [held.other]}, {"events": [new_event]}, {"events": [resent]}):
        code, answer = api.batch("import", {"statuses": [held.status["status"]], **body})
        assert code == 200, answer
        status_result, result = answer["results"]  # the held status, sent the same: complete
        assert status_result == {"id": held.status["status"]["status_id"], "state": "complete"}, answer
        assert result["state"] == "failed" and held.names_both(result["message"]), (body, answer)
    assert not server.db.has_event_id(new_event["event_id"])
    _still_as_it_was(server, held)


@pytest.mark.parametrize("fast_path", [False, True], ids=["v1", "v2"])
def test_exporter_reports_a_contradicted_task_failed_never_complete(node, central, tmp_path, fast_path):
    """A node's event and stand-alone file whose file ids the archive holds with other bytes:
    both tasks end failed with a message naming the file and both MD5s, none is complete,
    and the archive keeps its records."""
    registered = night(node, tmp_path, events=1, files_per_event=1, standalone=1)
    central.db.import_camera_status(registered.status)
    theirs = {}
    for mine in (registered.events[0].files[0], registered.files[0]):
        data = os.urandom(999)
        record = dataclasses.replace(mine, md5=md5(data), file_size=len(data))
        central.db.file_store.store_stream(record.file_id, record.md5, [data])
        central.db.import_file_record(record, "importer")
        theirs[mine.file_id] = (mine.md5, record.md5)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file", name="files")
    with exporter(node, fast_path=fast_path, defer_on_failure_seconds=0) as e:
        e.mark_all()
        totals = e.export_due()
    assert totals.completed == 0 and totals.failed == 2, totals
    for file_id, (mine, held) in theirs.items():
        assert any(file_id.hex in f and mine in f and held in f for f in totals.failures), totals.failures
    for name in ("to-events", "files"):
        assert "complete" not in node.get_export_task_states(name).values()
    for file_id, (_, held) in theirs.items():
        assert central.db.get_file(file_id).md5 == held
    assert central.counts() == (0, 2)


# -- storage: what only a race, or a caller of the Python API, reaches ------------------------
def test_register_event_naming_a_file_with_another_md5_is_refused(db, tmp_path):
    """A node's own event naming a registered file with another MD5 is refused, not stored."""
    db.update_camera_status(make_status(), time=T0)
    when = T0 + dt.timedelta(hours=1)
    record = db.register_file(write(tmp_path, "f", os.urandom(100)), "image/png", "meteorpi:frame", when, [], "cam-a")
    wrong = dataclasses.replace(record, md5="0" * 32)
    with pytest.raises(Conflict, match=f"{record.file_id.hex} is held with MD5 {record.md5}.* says {'0' * 32}"):
        db.register_event("cam-a", when, "meteorpi:meteor", [wrong])
    assert db.search_events(EventSearch(limit=1))["count"] == 0


@pytest.mark.parametrize("how", ["v1", "batch"])
def test_a_file_written_meanwhile_with_another_md5_refuses_the_entity(db, vectors, how):
    """Another import writes the event's file id with another MD5 while this one waits to write
    it: the event is refused naming both MD5s and nothing of it is kept (the check runs again
    on every file row an insert found held)."""
    status = CameraStatus.from_dict(vectors["status"]["status"])
    event = Event.from_dict(vectors["event"]["event"])
    db.import_camera_status(status)
    store_vector_bytes(db, vectors, event, FileRecord.from_dict(vectors["file"]["file"]))
    first = event.files[0]
    other = psycopg2.connect(db.url)
    watcher = psycopg2.connect(db.url)
    watcher.autocommit = True
    outcome = []
    try:
        with other.cursor() as cur:  # written, not yet committed: the import must wait for it
            cur.execute("INSERT INTO file_record (file_id, camera_id, status_id, file_time, file_offset, mime_type,"
                        " semantic_type, file_size, md5) VALUES (%s, %s, %s, %s, 0, 'x/y', 'a:b', 1, %s)",
                        (first.file_id, first.camera_id, first.status_id, first.file_time, "f" * 32))

        def run():
            try:
                outcome.append(db.import_event(event, "node") if how == "v1"
                               else db.import_batch([], [event], "node")[event.event_id])
            except Conflict as e:
                outcome.append(str(e))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not _waiting_for_a_lock(watcher, other):
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.02)
        other.commit()
        thread.join(20)
    finally:
        other.close()
        watcher.close()
    [message] = outcome
    assert isinstance(message, str), outcome
    assert first.file_id.hex in message and "f" * 32 in message and first.md5 in message
    assert not db.has_event_id(event.event_id)
    assert db.get_file(first.file_id).md5 == "f" * 32


def _waiting_for_a_lock(watcher, holder) -> bool:
    """Whether some session waits for a lock the ``holder`` connection's transaction holds."""
    with watcher.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (holder.info.backend_pid,))
        return cur.fetchone()[0] > 0


# -- the same id saying something else (not only another MD5) --------------------------------
@pytest.fixture
def delivered(server, api, records):
    """A status and an event of two files, delivered over version 1: (status body, event body)."""
    status = records.status()
    event_body, files = records.event(status)
    exchange = deliver(api, event_body, {status["status"]["status_id"]: status}, files)
    assert exchange.final["state"] == "complete", exchange.steps
    return status, event_body


def _changed(body: dict, kind: str, change) -> dict:
    body = copy.deepcopy(body)
    change(body[kind])
    return body


def _other_content(message: str, entity_id: str, field: str) -> bool:
    return entity_id in message and "other content" in message and f"({field} differs)" in message


def test_v1_a_resent_record_that_says_the_same_is_complete_and_one_that_differs_fails(server, api, delivered):
    """Version 1: the same event, its file and its status sent again as they were are complete
    (continue for the status), also with the status's end of validity set; with a field changed
    each fails naming the id and the field, not the value; the archive keeps what it held."""
    status, event_body = delivered
    event = event_body["event"]
    record = event["files"][0]
    held_event = server.db.get_event(event["event_id"])
    assert [api.post(body)[1]["state"] for body in (
        event_body, {"type": "file", "file": record}, status,
        _changed(status, "status", lambda s: s.update(valid_to=s["valid_from"] + 1000)))] == \
        ["complete", "complete", "continue", "continue"]
    for body, path, entity_id in [
        (_changed(event_body, "event", lambda e: e["meta"][1].update(value="<b>a plane</b>")),
         "meta[1].value", event["event_id"]),
        (_changed(event_body, "event", lambda e: e.update(event_type="meteorpi:plane")), "event_type", event["event_id"]),
        (_changed(event_body, "event", lambda e: e["files"][1].update(file_name="other.png")),
         "files[1].file_name", event["event_id"]),
        ({"type": "file", "file": dict(record, semantic_type="meteorpi:other")}, "semantic_type", record["file_id"]),
        (_changed(status, "status", lambda s: s.update(lens="another lens")), "lens", status["status"]["status_id"]),
    ]:
        code, answer = api.post(body)
        assert code == 200 and answer["state"] == "failed", (path, answer)
        assert _other_content(answer["message"], entity_id, path), answer
        assert "plane" not in answer["message"] and "another lens" not in answer["message"]
    assert server.db.get_event(event["event_id"]) == held_event
    assert server.db.get_camera_status_by_id(status["status"]["status_id"]).lens == status["status"]["lens"]


def test_v1_a_new_event_naming_a_held_file_that_says_something_else_fails(server, api, delivered):
    """A new event whose file is held (same bytes) but described otherwise: failed at that
    file's path, and the event is not stored."""
    _, event_body = delivered
    new = _changed(event_body, "event", lambda e: e.update(event_id=uuid.uuid4().hex))
    new["event"]["files"][0]["meta"] = []
    code, answer = api.post(new)
    assert code == 200 and answer["state"] == "failed", answer
    assert answer["message"].startswith("event.files[0]: file "), answer
    assert _other_content(answer["message"], new["event"]["files"][0]["file_id"], "meta"), answer
    assert not server.db.has_event_id(new["event"]["event_id"])


def test_v2_import_refuses_held_ids_that_say_something_else(server, api, delivered):
    """Version 2: a held event, file or status sent with a field changed is failed naming it
    (a changed status fails the entities that refer to it, naming it); sent as held, complete;
    one status sent twice in a request saying different things is failed, and so are the
    entities naming it; the others of each batch are imported. Statuses are answered too."""
    status, event_body = delivered
    event, s = event_body["event"], status["status"]
    record = event["files"][0]
    code, answer = api.batch("import", {"statuses": [s], "events": [event], "files": [record]})
    assert code == 200 and [r["state"] for r in answer["results"]] == ["complete"] * 3, answer
    changed_event = dict(event, event_time=event["event_time"] + 1)
    changed_record = dict(record, mime_type="image/jpeg")
    code, answer = api.batch("import", {"statuses": [s], "events": [changed_event], "files": [changed_record]})
    results = {r["id"]: r for r in answer["results"]}
    assert _other_content(results[event["event_id"]]["message"], event["event_id"], "event_time"), answer
    assert _other_content(results[record["file_id"]]["message"], record["file_id"], "mime_type"), answer

    moved = dict(s, location=dict(s["location"], lat=s["location"]["lat"] + 0.5))
    code, answer = api.batch("import", {"statuses": [moved], "events": [event]})
    results = {r["id"]: r for r in answer["results"]}
    assert list(results) == [s["status_id"], event["event_id"]], answer
    for result in results.values():
        assert result["state"] == "failed" and _other_content(result["message"], s["status_id"], "location.lat"), answer

    twice = {"status_id": uuid.uuid4().hex}
    first, second = dict(s, **twice), dict(s, **twice, sensor="another sensor")
    fresh = copy.deepcopy(event)
    fresh["event_id"], fresh["status_id"], fresh["files"] = uuid.uuid4().hex, twice["status_id"], []
    code, answer = api.batch("import", {"statuses": [first, second], "events": [fresh]})
    assert [r["id"] for r in answer["results"]] == [twice["status_id"], fresh["event_id"]], answer
    for result in answer["results"]:
        assert result["state"] == "failed" and "sent twice in this request" in result["message"], answer
    assert server.db.get_camera_status_by_id(twice["status_id"]) is None
    assert server.db.get_event(event["event_id"]).event_time.timestamp() * 1000 == event["event_time"]


@pytest.mark.parametrize("fast_path", [False, True], ids=["v1", "v2"])
def test_a_night_exported_again_is_complete(node, central, tmp_path, fast_path):
    """A night exported twice (a second export configuration to the same archive) is complete
    both times: what the archive stored says what the node holds, to the last field."""
    night(node, tmp_path, events=2, files_per_event=2, standalone=1)
    for n in (1, 2):
        add_export(node, central.import_url, "event", name=f"events-{n}")
        add_export(node, central.import_url, "file", name=f"files-{n}")
        with exporter(node, fast_path=fast_path, defer_on_failure_seconds=0) as e:
            e.mark_all()
            totals = e.export_due()
        assert totals.failed == 0 and totals.completed == 3, (n, totals.failures)


def test_a_record_changed_on_the_node_since_it_was_exported_is_reported_failed(node, central, tmp_path):
    """When the node's copy of an exported event changed since (here by hand in its database),
    exporting it again over version 1 fails that task, naming the event and the field, and the
    archive keeps its copy. (The fast path's check compares ids and MD5s: a held id is not sent
    again, see docs/protocol.md.)"""
    registered = night(node, tmp_path, events=2, files_per_event=2, standalone=0)
    add_export(node, central.import_url, "event", name="events-1")
    assert export_round(node, fast_path=False).completed == 2
    changed = registered.events[0]
    with psycopg2.connect(node.url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE event SET event_type = 'meteorpi:satellite' WHERE event_id = %s", (changed.event_id,))
    conn.close()
    add_export(node, central.import_url, "event", name="events-2")
    totals = export_round(node, fast_path=False)
    assert totals.failed == 1, totals
    [failure] = totals.failures
    assert changed.event_id.hex in failure and "(event_type differs)" in failure, failure
    assert node.get_export_task_states("events-2")[changed.event_id] != "complete"
    assert central.db.get_event(changed.event_id).event_type == changed.event_type


def test_relayed_records_are_the_same_records(node, relay, central, tmp_path):
    """What an archive stored, relayed on, says what the node sent, to the last field: central
    receives the night from the node and again from the relay, and every task of both is
    complete."""
    night(node, tmp_path, events=2, files_per_event=2, standalone=1)
    for n, target in enumerate((relay, central)):
        add_export(node, target.import_url, "event", name=f"events-{n}")
        add_export(node, target.import_url, "file", name=f"files-{n}")
    add_export(relay.db, central.import_url, "event")
    add_export(relay.db, central.import_url, "file")
    for db in (node, relay.db):
        with exporter(db, defer_on_failure_seconds=0) as e:
            e.mark_all()
            totals = e.export_due()
        assert totals.failed == 0 and totals.completed > 0, totals.failures
    assert central.counts() == relay.counts() == (2, 5)


# -- a refused record holds back nothing else -------------------------------------------------
@pytest.mark.parametrize("fast_path", [False, True], ids=["v1", "v2"])
def test_a_refused_record_waits_alone_and_the_rest_of_the_night_goes(node, central, tmp_path, fast_path):
    """The archive refuses one event for good (it holds one of its file ids with other bytes):
    the night's other events arrive in the same round, the configuration is not counted as
    failing (no deferral of the rest, no step towards being disabled), and only the refused
    task waits, a minute at least, before it is tried again."""
    registered = night(node, tmp_path, events=4, files_per_event=1, standalone=0)
    central.db.import_camera_status(registered.status)
    mine = registered.events[0].files[0]
    data = os.urandom(999)
    theirs = dataclasses.replace(mine, md5=md5(data), file_size=len(data))
    central.db.file_store.store_stream(theirs.file_id, theirs.md5, [data])
    central.db.import_file_record(theirs, "importer")
    add_export(node, central.import_url, "event")
    with exporter(node, fast_path=fast_path, max_failures_before_disable=1) as e:
        e.mark_all()
        totals = e.export_due()
    assert (totals.completed, totals.failed) == (3, 1), totals
    assert central.counts() == (3, 4)  # their record of the refused file, and the three events' files
    [progress] = node.get_export_progress()
    assert progress.config.enabled and progress.consecutive_failures == 0, progress
    assert (progress.pending, progress.due, progress.complete) == (1, 0, 3), progress
    waits = (progress.next_due_at - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 50 < waits <= 600 * 2, waits
    # `meteorpi export list` says which record waits, and why
    listed = CliRunner().invoke(main, ["export", "list"], env=cli_env(node)).output
    assert "to-events: 1 task(s) waiting to be tried again; the most tried: " \
           f"event {registered.events[0].event_id.hex}: failed: the target refused" in listed, listed
    assert theirs.md5 in listed and mine.md5 in listed


def test_a_refused_task_waits_longer_after_each_refusal():
    from meteorpi_export.exporter import REFUSED_LEAST_SECONDS, REFUSED_MOST_SECONDS, refused_task_wait
    assert refused_task_wait(0, 0) == REFUSED_LEAST_SECONDS
    assert [refused_task_wait(600, n) for n in range(3)] == [600, 1200, 2400]
    assert refused_task_wait(600, 50) == REFUSED_MOST_SECONDS


def test_bytes_the_target_refused_in_an_upload_are_tried_again_soon(node, central, tmp_path):
    """Over the fast path, bytes refused in an upload (here: rotten on the node, so they never
    match their MD5; as well a prefix the target lost, "send it from 0") are a failure of the
    configuration, waited out by ``export.defer_on_failure_seconds`` (0 here), not a refusal of
    the record that would make it wait a minute and more alone: a cut link's bytes must go again
    at once. The target refuses the record itself once its uploads failed too often."""
    registered = night(node, tmp_path, events=1, files_per_event=1, standalone=0)
    record = registered.events[0].files[0]
    path = node.file_store.path(record.file_id, record.md5)
    path.write_bytes(b"rotten" + path.read_bytes()[6:])
    config = add_export(node, central.import_url, "event")
    totals = export_round(node, fast_path=True, defer_on_failure_seconds=0)
    assert totals.failed == 1 and "no longer match their MD5" in totals.failures[0], totals
    assert [t.entity_id for t in node.get_due_tasks(config, 10)] == [registered.events[0].event_id]
    assert node.get_export_progress()[0].consecutive_failures == 1
