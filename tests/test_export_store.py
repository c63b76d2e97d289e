"""The export queue in the database: configurations, marking, due tasks, failures, disabling."""
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from meteorpi_db import Conflict, MeteorDatabase, NotFound
from meteorpi_model import EventSearch, FileRecordSearch, ValidationError
from tests.export_fixtures import add_export, night

TARGET = "http://127.0.0.1:9/import"


def test_configuration_round_trips_and_hides_its_password(node):
    """What is stored comes back equal; repr and the redacted form never show the password."""
    config = add_export(node, TARGET, "event", auth=("importer", "s3cret-pw"), camera_ids=["cam-a"],
                        after=dt.datetime(2015, 6, 30, tzinfo=dt.timezone.utc), event_type="meteorpi:meteor")
    loaded = node.get_export_configuration(config.name)
    assert loaded == config
    assert node.get_export_configuration(config.config_id.hex) == config
    assert node.get_export_configurations() == [config]
    assert "s3cret-pw" not in repr(loaded) and "s3cret-pw" not in str(loaded.as_dict(redact=True))


def test_configuration_crud_errors_name_the_problem(node):
    add_export(node, TARGET, "event", name="a")
    with pytest.raises(Conflict, match="'a' already exists"):
        add_export(node, TARGET, "file", name="a")
    for call in (lambda: node.get_export_configuration("nope"), lambda: node.delete_export_configuration("nope"),
                 lambda: node.set_export_enabled("nope", True)):
        with pytest.raises(NotFound, match="nope"):
            call()
    with pytest.raises(ValidationError, match="target_url"):
        add_export(node, "ftp://example.org/import", "event", name="b")


def test_update_disable_enable_delete(node):
    config = add_export(node, TARGET, "event")
    config.password, config.target_url = "new-pw", "http://example.org/import"
    node.update_export_configuration(config)
    assert node.get_export_configuration(config.name).password == "new-pw"
    node.set_export_enabled(config.name, False)
    assert not node.get_export_configuration(config.name).enabled
    node.set_export_enabled(config.name, True)
    node.delete_export_configuration(config.name)
    assert node.get_export_configurations() == []


def _due(db: MeteorDatabase) -> list:
    """Every due task, oldest first, without completing any (skipping each config seen)."""
    out = []
    while True:
        task = db.get_next_entity_to_export()
        if task is None:
            return out
        out.append(task)
        db.mark_task_complete(task.config.config_id, task.entity_id)


def test_marking_is_incremental_and_never_marks_twice(node, tmp_path):
    """Each marking adds only entities registered since the last one."""
    config = add_export(node, TARGET, "event")
    first = night(node, tmp_path, events=3, standalone=0)
    assert node.mark_entities_to_export(config) == 3
    assert node.mark_entities_to_export(config) == 0
    second = night(node, tmp_path, events=2, standalone=0, camera_id="cam-2")
    assert node.mark_entities_to_export(config) == 2
    assert set(node.get_export_task_states(config)) == {e.event_id for e in first.events + second.events}


def test_file_configuration_exports_only_files_of_no_event(node, tmp_path):
    """Events carry their files: a file configuration marks only stand-alone files."""
    config = add_export(node, TARGET, "file")
    registered = night(node, tmp_path, events=2, files_per_event=2, standalone=3)
    assert node.mark_entities_to_export(config) == 3
    assert set(node.get_export_task_states(config)) == {f.file_id for f in registered.files}


def test_a_file_that_joins_an_event_after_marking_is_skipped(node, tmp_path):
    config = add_export(node, TARGET, "file")
    registered = night(node, tmp_path, events=0, standalone=1)
    node.mark_entities_to_export(config)
    record = registered.files[0]
    node.register_event(record.camera_id, record.file_time, "meteorpi:meteor", [record])
    assert node.get_next_entity_to_export() is None
    assert node.get_export_task_states(config) == {record.file_id: "skipped"}


@pytest.mark.parametrize("search, expected", [
    ({"camera_ids": ["cam-b"]}, lambda a, b: b),
    ({"event_type": "meteorpi:not-a-meteor"}, lambda a, b: []),
    ({"before": "mid"}, lambda a, b: a[:1] + b[:1]),
    ({"after": "mid"}, lambda a, b: a[1:] + b[1:]),
])
def test_marking_applies_the_search(node, tmp_path, search, expected):
    a = night(node, tmp_path, events=2, standalone=0, camera_id="cam-a").events
    b = night(node, tmp_path, events=2, standalone=0, camera_id="cam-b").events
    mid = max(a[0].event_time, b[0].event_time) + dt.timedelta(seconds=1)
    search = {k: (mid if v == "mid" else v) for k, v in search.items()}
    config = add_export(node, TARGET, "event", **search)
    node.mark_entities_to_export(config)
    assert set(node.get_export_task_states(config)) == {e.event_id for e in expected(a, b)}


def test_entities_the_node_imported_are_exported_too(node, vectors):
    """A node relays what it imported, unless the search says exclude_imported."""
    from meteorpi_model import CameraStatus, FileRecord
    node.import_camera_status(CameraStatus.from_dict(vectors["status"]["status"]))
    record = FileRecord.from_dict(vectors["file"]["file"])
    node.file_store.store_stream(record.file_id, record.md5, [vectors["bytes"]["f2.bin"]])
    node.import_file_record(record, "importer")
    relayed = add_export(node, TARGET, "file", name="relay")
    own_only = add_export(node, TARGET, "file", name="own", exclude_imported=True)
    assert node.mark_entities_to_export(relayed) == 1
    assert node.mark_entities_to_export(own_only) == 0


def test_next_task_is_oldest_first_across_configurations(node, tmp_path):
    events = add_export(node, TARGET, "event")
    files = add_export(node, TARGET, "file")
    night(node, tmp_path, events=3, standalone=2)
    node.mark_entities_to_export(files)
    node.mark_entities_to_export(events)
    times = [t.entity_time for t in _due(node)]
    assert len(times) == 5 and times == sorted(times)
    assert node.get_next_entity_to_export() is None


def test_disabled_configurations_have_no_due_tasks(node, tmp_path):
    config = add_export(node, TARGET, "event")
    night(node, tmp_path, events=1, standalone=0)
    node.mark_entities_to_export(config)
    node.set_export_enabled(config.name, False)
    assert node.get_next_entity_to_export() is None
    node.set_export_enabled(config.name, True)
    assert node.get_next_entity_to_export().config.name == config.name


def test_failure_defers_counts_and_disables_at_the_limit(node, tmp_path):
    """A failure defers every task of the configuration; N in a row disable it; success resets."""
    config = add_export(node, TARGET, "event")
    night(node, tmp_path, events=2, standalone=0)
    node.mark_entities_to_export(config)
    task = node.get_next_entity_to_export()
    count = node.record_task_failure(config.config_id, task.entity_id, "boom", defer_seconds=60, max_failures=3)
    assert (count.consecutive_failures, count.disabled) == (1, False)
    assert node.get_next_entity_to_export() is None  # both tasks deferred, not only the failed one
    progress = node.get_export_progress()[0]
    assert (progress.pending, progress.due, progress.last_error) == (2, 0, "boom")
    assert progress.next_due_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=50)
    node.record_task_failure(config.config_id, task.entity_id, "boom", max_failures=3)
    assert node.record_task_failure(config.config_id, task.entity_id, "boom", max_failures=3).disabled
    assert not node.get_export_configuration(config.name).enabled
    node.set_export_enabled(config.name, True)  # enabling starts a fresh count
    assert node.get_export_progress()[0].consecutive_failures == 0
    node.record_task_failure(config.config_id, task.entity_id, "boom", max_failures=3)
    node.mark_task_complete(config.config_id, task.entity_id)
    assert node.get_export_progress()[0].consecutive_failures == 0


def test_defer_export_tasks_and_the_queue_survive_a_new_connection(node, tmp_path):
    """Task states live in the database: another MeteorDatabase on it sees the same queue."""
    config = add_export(node, TARGET, "event")
    night(node, tmp_path, events=2, standalone=0)
    node.mark_entities_to_export(config)
    assert node.defer_export_tasks(config.config_id, 0.5) == 2
    other = MeteorDatabase(url=node.url, file_store_path=node.file_store.root, config=node.config)
    try:
        assert other.get_next_entity_to_export() is None
        time.sleep(0.6)
        assert other.get_next_entity_to_export() is not None
    finally:
        other.close()


def test_changing_the_search_marks_older_entities_again(node, tmp_path):
    config = add_export(node, TARGET, "event", camera_ids=["cam-x"])
    registered = night(node, tmp_path, events=2, standalone=1)
    assert node.mark_entities_to_export(config) == 0
    config.search = EventSearch()
    node.update_export_configuration(config)
    assert node.mark_entities_to_export(config) == 2
    assert set(node.get_export_task_states(config)) == {e.event_id for e in registered.events}
    config.type, config.search = "file", FileRecordSearch()
    node.update_export_configuration(config)  # pending event tasks dropped, files marked from the start
    assert node.mark_entities_to_export(config) == 1
    assert set(node.get_export_task_states(config)) == {f.file_id for f in registered.files}


def test_marking_waits_for_a_registration_in_flight_and_loses_nothing(node, tmp_path):
    """An event whose transaction drew its seq before a later one committed is still marked:
    marking waits for it rather than moving the high-water mark past it."""
    import threading
    config = add_export(node, TARGET, "event")
    first = night(node, tmp_path, events=1, standalone=0).events[0]
    in_flight_id = uuid.uuid4()
    drawn, release = threading.Event(), threading.Event()

    def slow_registration():
        with node.transaction() as cur:
            cur.execute("INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type) "
                        "VALUES (%(id)s, %(cam)s, %(status)s, %(time)s, 0, 'meteorpi:meteor')",
                        {"id": in_flight_id, "cam": first.camera_id, "status": first.status_id,
                         "time": first.event_time})
            drawn.set()
            release.wait(10)
    writer = threading.Thread(target=slow_registration)
    writer.start()
    assert drawn.wait(10)
    later = node.register_event(first.camera_id, first.event_time, "meteorpi:meteor")  # a higher seq, committed
    marked = []
    marker = threading.Thread(target=lambda: marked.append(node.mark_entities_to_export(config)))
    marker.start()
    marker.join(0.5)
    assert marker.is_alive()  # waiting for the registration in flight
    release.set()
    writer.join(10)
    marker.join(10)
    assert marked == [3]
    assert set(node.get_export_task_states(config)) == {first.event_id, in_flight_id, later.event_id}


def test_stored_passwords_rest_where_only_the_owner_can_read(pg_server, node):
    """The target password must be kept in clear to authenticate, so it lives only in the
    database, whose embedded cluster directory is readable by its owner alone (0700/0600)."""
    admin_url, data_dir = pg_server
    pgdata = data_dir / "postgres"
    if not pgdata.is_dir():
        pytest.skip("an external PostgreSQL (METEORPI_TEST_DATABASE_URL): its own permissions apply")
    assert pgdata.stat().st_mode & 0o077 == 0
    add_export(node, TARGET, "event", auth=("importer", "kept-in-the-database-only"))
    assert not any("kept-in-the-database-only" in p.read_text(errors="ignore")
                   for p in node.file_store.root.parent.rglob("*") if p.is_file())
