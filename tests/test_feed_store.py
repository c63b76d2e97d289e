"""The change feed's storage and its per-process hub, against a real PostgreSQL.

What a reader of the feed relies on: every import appears once, after its commit only, in an
order that never lets a cursor pass a row that becomes visible later; rolled-back work never
appears; retention tells an old cursor to start over; the hub survives its connection dying.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from meteorpi_db import feed_hub
from meteorpi_db.feed import START, Cursor, FeedFilter
from meteorpi_db.feed_hub import FeedHub
from meteorpi_model import CameraStatus, Event, FileRecord, ValidationError, instant_to_ms

from .export_fixtures import wait_for


def _status(vectors, camera: str | None = None) -> CameraStatus:
    body = copy.deepcopy(vectors["status"]["status"])
    body["status_id"], body["camera_id"] = uuid.uuid4().hex, camera or f"cam-{uuid.uuid4().hex[:8]}"
    return CameraStatus.from_dict(body)


def _all(db, after=START):
    items, cursor = [], after
    while True:
        page = db.feed_read(cursor, 100)
        items += page.items
        cursor = page.cursor
        if not page.more:
            return items, cursor, page.pending


def test_each_import_appears_once_with_its_kind_and_camera(db, vectors):
    status = CameraStatus.from_dict(vectors["status"]["status"])
    db.import_camera_status(status)
    db.file_store.store_stream(FileRecord.from_dict(vectors["file"]["file"]).file_id,
                               vectors["file"]["file"]["md5"], [vectors["bytes"]["f2.bin"]])
    record = FileRecord.from_dict(vectors["file"]["file"])
    event = Event.from_dict(vectors["event"]["event"])
    for f, name in zip(event.files, ("f1.bin", "f3.bin")):
        db.file_store.store_stream(f.file_id, f.md5, [vectors["bytes"][name]])
    assert db.import_file_record(record, "importer")
    assert db.import_event(event, "importer")
    db.import_event(event, "importer")  # a repeat changes nothing, so it logs nothing

    items, _, _ = _all(db)
    kinds = [(i.kind, i.op, i.entity_id) for i in items]
    assert kinds[0] == ("status", "added", status.status_id)
    assert ("file", "added", record.file_id) in kinds
    assert [k for k in kinds if k[0] == "event"] == [("event", "added", event.event_id)]
    assert sum(1 for k in kinds if k[2] == event.event_id) == 1
    ev = next(i for i in items if i.kind == "event")
    assert ev.camera_id == event.camera_id and ev.event_type == str(event.event_type)
    assert ev.time == event.event_time
    assert ev.as_dict()["id"] == event.event_id.hex
    # cursors strictly increase
    assert [i.cursor for i in items] == sorted({i.cursor for i in items})


def test_a_newer_status_closes_the_older_one_and_the_feed_says_so(db, vectors):
    first = db.update_camera_status(_status(vectors, "cam-x"), time=_dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc))
    db.update_camera_status(_status(vectors, "cam-x"), time=_dt.datetime(2026, 2, 1, tzinfo=_dt.timezone.utc))
    items, _, _ = _all(db)
    changed = [i for i in items if i.op == "changed"]
    assert [(i.kind, i.entity_id) for i in changed] == [("status", first.status_id)]
    assert changed[0].summary["valid_to"] == 1769904000000


def test_a_rolled_back_import_never_appears(db, vectors):
    conn = psycopg2.connect(db.pool.dsn)
    try:
        with conn.cursor() as cur:
            db._insert_status(cur, _status(vectors))
        conn.rollback()
    finally:
        conn.close()
    assert _all(db)[0] == []


def test_a_transaction_committing_after_a_later_one_is_not_skipped(db, vectors):
    """T1 starts writing first but commits last; a reader between the two commits must neither
    return T2's row (its cursor would pass T1's) nor lose T1's row afterwards."""
    early, late = psycopg2.connect(db.pool.dsn), psycopg2.connect(db.pool.dsn)
    try:
        first, second = _status(vectors), _status(vectors)
        with early.cursor() as cur:
            db._insert_status(cur, first)       # T1 takes its xid first...
        with late.cursor() as cur:
            db._insert_status(cur, second)      # ...T2 a later one,
        late.commit()                           # and T2 commits first.

        items, cursor, pending = _all(db)
        assert items == [] and pending          # nothing yet: T1 might still write before T2
        early.commit()
        items, cursor, pending = _all(db, cursor)
        assert [i.entity_id for i in items] == [first.status_id, second.status_id]
        assert not pending
    finally:
        early.close()
        late.close()


def _require_commit_times(db) -> None:
    """The embedded server tracks commit times; a server by URL (METEORPI_TEST_DATABASE_URL)
    may not, and then the test has nothing to check (a test below covers such a server)."""
    if not os.environ.get("METEORPI_TEST_DATABASE_URL"):
        return  # the embedded server: it must, and the test shows it does
    with db.transaction() as cur:
        cur.execute("SELECT current_setting('track_commit_timestamp')::boolean")
        if not cur.fetchone()[0]:
            pytest.skip("the test server runs without track_commit_timestamp")


def test_items_carry_when_their_transaction_committed(db, vectors):
    """committed_at comes after the row was written, is one instant for all rows of a
    transaction, and rises from one import to the next; the wire form carries it in ms."""
    _require_commit_times(db)
    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    db.update_camera_status(_status(vectors, "cam-c"), time=t0)
    before_second = _dt.datetime.now(_dt.timezone.utc)
    db.update_camera_status(_status(vectors, "cam-c"), time=t0 + _dt.timedelta(days=1))  # adds one, closes one
    items, _, _ = _all(db)
    assert len(items) == 3 and sorted(i.op for i in items[1:]) == ["added", "changed"]
    assert all(i.committed_at is not None and i.committed_at >= i.logged_at for i in items)
    assert items[0].committed_at < before_second <= items[1].committed_at == items[2].committed_at
    assert items[1].as_dict()["committed_at"] == instant_to_ms(items[1].committed_at)


def test_commit_times_tell_a_transaction_that_committed_after_a_later_one(db, vectors):
    """The feed gives T1's row first (its xid is older) though T2 committed first: committed_at
    says when each really committed, not when it was read."""
    _require_commit_times(db)
    early, late = psycopg2.connect(db.pool.dsn), psycopg2.connect(db.pool.dsn)
    try:
        first, second = _status(vectors), _status(vectors)
        with early.cursor() as cur:
            db._insert_status(cur, first)
        with late.cursor() as cur:
            db._insert_status(cur, second)
        late.commit()
        time.sleep(0.01)
        early.commit()
        items, _, _ = _all(db)
        assert [i.entity_id for i in items] == [first.status_id, second.status_id]
        assert items[0].committed_at > items[1].committed_at >= items[1].logged_at > items[0].logged_at
    finally:
        early.close()
        late.close()


def test_without_commit_timestamps_the_feed_reads_on_with_committed_at_null(vectors):
    """A server by URL may run without track_commit_timestamp, where asking PostgreSQL for a
    commit time is an error: the feed, its hub and the matcher read on, committed_at null."""
    from meteorpi_db import Config, MeteorDatabase, embedded
    from meteorpi_db.database import ensure_database
    from meteorpi_db.matcher import MatchSettings
    # Not under tmp_path: pytest makes its base 0700 again at each session start (another
    # session may start meanwhile), and the server runs as its own user when tests run as root.
    tmp_path = Path(tempfile.mkdtemp(prefix="meteorpi-test-"))
    pg = embedded.EmbeddedPostgres(tmp_path / "cluster", settings={"track_commit_timestamp": "off"})
    pg.attach()
    try:
        ensure_database(pg.uri("postgres"), "plain")
        config = Config(data_dir=str(tmp_path / "plain"))
        plain = MeteorDatabase(url=pg.uri("plain"), file_store_path=tmp_path / "plain" / "files", config=config)
        try:
            hub = FeedHub(plain, poll_seconds=0.2).start()
            try:
                assert hub.ready()
                start = hub.cursor
                status = _status(vectors)
                plain.import_camera_status(status)
                items, _, _ = _all(plain)
                assert [(i.entity_id, i.committed_at) for i in items] == [(status.status_id, None)]
                assert items[0].as_dict()["committed_at"] is None
                wait_for(lambda: hub.read(start, FeedFilter()).items, 10, "the hub to read the import")
                assert [i.committed_at for i in hub.read(start, FeedFilter()).items] == [None]
                # the matcher reads the feed with the same query: a first round places its cursor
                assert sum(plain.match_round(MatchSettings()).items for _ in range(2)) == 1
            finally:
                hub.stop()
        finally:
            plain.close()
    finally:
        pg.detach()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_feed_end_is_after_everything_committed(db, vectors):
    db.import_camera_status(_status(vectors))
    end = db.feed_end()
    assert db.feed_read(end).items == []
    db.import_camera_status(_status(vectors))
    assert len(db.feed_read(end).items) == 1


def test_retention_removes_old_rows_and_an_older_cursor_must_refetch(db, vectors):
    db.import_camera_status(_status(vectors))
    kept_from = db.feed_end()
    assert db.feed_prune(0, now=_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=1)) == 1
    db.import_camera_status(_status(vectors))
    assert db.feed_horizon() == kept_from
    hub = FeedHub(db, poll_seconds=0.2)
    hub.horizon = db.feed_horizon()
    assert hub.must_refetch(START)
    assert not hub.must_refetch(kept_from)


@pytest.mark.parametrize("text", ["", "1", "1-", "-1", "a-b", "1-2\n", "1-2 ", "１-2", "1-2-3",
                                  "99999999999999999999-1", "1-\x00"])
def test_a_cursor_that_is_not_one_is_refused_naming_the_parameter(text):
    with pytest.raises(ValidationError, match="after"):
        Cursor.parse(text)


def test_filters_match_kind_camera_and_event_type_with_wildcards():
    from meteorpi_db.feed import FeedItem
    now = _dt.datetime.now(_dt.timezone.utc)
    item = FeedItem(Cursor(1, 1), "event", "added", uuid.uuid4(), "cam-1", "meteorpi:meteor", now, {}, now)
    assert FeedFilter.of().matches(item)
    assert FeedFilter.of(event_types=["meteorpi:*"]).matches(item)
    assert FeedFilter.of(event_types=["meteor"]).matches(item)
    assert not FeedFilter.of(event_types=["rms:*"]).matches(item)
    assert not FeedFilter.of(cameras=["cam-2"]).matches(item)
    assert not FeedFilter.of(kinds=["file"]).matches(item)
    with pytest.raises(ValidationError, match="kind"):
        FeedFilter.of(kinds=["nope"])


def test_the_hub_sees_each_commit_once_and_wakes_waiters(db, vectors):
    hub = FeedHub(db, poll_seconds=30).start()  # a long poll: only NOTIFY can wake it in time
    try:
        assert hub.ready()
        start = hub.cursor
        woke = threading.Event()
        threading.Thread(target=lambda: hub.wait(start, 10) and woke.set(), daemon=True).start()
        status = _status(vectors)
        db.import_camera_status(status)
        wait_for(woke.is_set, timeout=5, what="the hub to be woken by the commit's notification")
        result = hub.read(start, FeedFilter.of())
        assert [i.entity_id for i in result.items] == [status.status_id] and result.up_to_date
        assert hub.read(result.cursor, FeedFilter.of()).items == []
        assert hub.read(start, FeedFilter.of(kinds=["event"])).items == []
    finally:
        hub.stop()


def test_a_reader_that_fell_out_of_the_ring_reads_its_backlog_from_the_database(db, vectors):
    hub = FeedHub(db, ring_size=3, poll_seconds=0.1).start()
    try:
        assert hub.ready()
        start = hub.cursor
        statuses = [_status(vectors) for _ in range(7)]
        for s in statuses:
            db.import_camera_status(s)
        wait_for(lambda: len(hub.read(hub.ring_start, FeedFilter.of()).items) == 3 and hub.ring_start > start,
                 timeout=5, what="the ring to drop the oldest items")
        seen, cursor = [], start
        while True:
            result = hub.read(cursor, FeedFilter.of(), limit=2)
            seen += [i.entity_id for i in result.items]
            cursor = result.cursor
            if result.up_to_date:
                break
        assert seen == [s.status_id for s in statuses]
    finally:
        hub.stop()


def test_the_hub_reconnects_after_its_connection_is_killed_and_loses_nothing(db, vectors):
    hub = FeedHub(db, poll_seconds=0.2).start()
    try:
        assert hub.ready()
        start = hub.cursor
        with db.transaction() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'meteorpi-feed' AND datname = current_database()")
        status = _status(vectors)
        db.import_camera_status(status)
        wait_for(lambda: hub.read(start, FeedFilter.of()).items, timeout=10,
                 what="the hub to reconnect and read the import")
        assert [i.entity_id for i in hub.read(start, FeedFilter.of()).items] == [status.status_id]
    finally:
        hub.stop()


def test_the_hub_reads_on_while_imports_hold_every_pooled_connection(db, vectors):
    """On a busy night imports may hold every connection of the process's pool: the listener
    reads on a connection of its own, so readers get each commit at once, not after a wait
    for the pool (up to 30 s, or a failure and a reconnect)."""
    hub = FeedHub(db, poll_seconds=30).start()
    try:
        assert hub.ready()
        start = hub.cursor
        with contextlib.ExitStack() as held:
            for _ in range(db.pool.maxconn):
                held.enter_context(db.pool.connection())
            status = _status(vectors)
            importer = psycopg2.connect(db.pool.dsn)
            try:
                with importer, importer.cursor() as cur:
                    db._insert_status(cur, status)
            finally:
                importer.close()
            assert hub.wait(start, 5), "the commit did not reach the hub while the pool was busy"
            assert [i.entity_id for i in hub.read(start, FeedFilter.of()).items] == [status.status_id]
    finally:
        hub.stop()


def test_a_burst_of_commits_costs_the_listener_one_read_not_one_per_commit(db, vectors, monkeypatch):
    """The listener's query per wake is shared by every reader of the process, but a busy night
    commits many times a second: commits within ``coalesce_seconds`` of the listener's last
    read are read together, and nothing is lost or delayed beyond that."""
    hub = FeedHub(db, poll_seconds=30)
    hub.coalesce_seconds = 0.6
    hub.start()
    try:
        assert hub.ready()
        start = hub.cursor
        reads = []
        real_read = feed_hub.read_page  # the listener reads on its own connection, through this
        monkeypatch.setattr(feed_hub, "read_page", lambda *a, **k: reads.append(a) or real_read(*a, **k))
        statuses = [_status(vectors) for _ in range(10)]
        for s in statuses:
            db.import_camera_status(s)
            time.sleep(0.02)
        end = db.feed_end()
        wait_for(lambda: hub.cursor >= end, timeout=5, what="the hub to read the burst")
        assert [i.entity_id for i in hub.read(start, FeedFilter.of()).items] == [s.status_id for s in statuses]
        assert 1 <= len(reads) <= 3, f"{len(reads)} listener reads for {len(statuses)} commits"
    finally:
        hub.stop()


def test_a_subscription_is_woken_only_by_items_it_wants_and_sees_each_once(db, vectors):
    hub = FeedHub(db, poll_seconds=30).start()
    try:
        assert hub.ready()
        start = hub.cursor
        with hub.subscribe(start, FeedFilter.of(cameras=["cam-a"])) as a, \
                hub.subscribe(start, FeedFilter.of(cameras=["cam-b"])) as b:
            first = _status(vectors, "cam-a")
            db.import_camera_status(first)
            assert a.wait(5)
            assert [i.entity_id for i in a.read().items] == [first.status_id]
            assert not b.wait(0.3)              # cam-a's commit did not wake cam-b's reader...
            assert b.cursor == hub.cursor       # ...it was moved past it instead
            second = _status(vectors, "cam-b")
            db.import_camera_status(second)
            assert b.wait(5)
            assert [i.entity_id for i in b.read().items] == [second.status_id]
            assert not a.wait(0.3)
            assert a.read().items == [] and b.read().items == []
        assert hub.subscriptions == set()
    finally:
        hub.stop()
