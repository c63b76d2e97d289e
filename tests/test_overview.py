"""The page queries (meteorpi_db/overview.py): their answers, and that each reaches the event
and file tables through an index, on an archive big enough for the planner to care."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid

import pytest

from bench.page_archive import fill
from meteorpi_db import coincidences, feed, notifications, overview
from meteorpi_model import now
from meteorpi_model.watch import Watch

from .page_fixtures import sample_archive
from .watch_fixtures import drain


def test_camera_summaries_give_the_newest_status_and_last_sign_of_life(db, tmp_path):
    sample = sample_archive(db, tmp_path)
    summaries = {c.camera_id: c for c in db.camera_summaries()}
    assert sorted(summaries) == sorted(sample.cameras)
    north = summaries["north-1"]
    assert north.lens != "old lens"  # the newer of its two statuses
    assert north.last_seen == max(e.event_time for e in sample.events if e.camera_id == "north-1")
    assert now() - summaries["quiet-3"].last_seen > _dt.timedelta(days=4)


def test_last_night_counts_each_cameras_events_of_the_newest_night(db, tmp_path):
    sample = sample_archive(db, tmp_path)
    night, counts = db.last_night()
    newest = max(e.event_time for e in sample.events)
    assert night == overview.night_of(newest)
    expected = {}
    for e in sample.events:
        if overview.night_of(e.event_time) == night:
            expected[e.camera_id] = expected.get(e.camera_id, 0) + 1
    assert counts == expected and "quiet-3" not in counts


def test_events_per_night_fill_empty_nights_with_zero(db, tmp_path):
    sample_archive(db, tmp_path)
    nights = db.events_per_night("quiet-3", 7)
    assert len(nights) == 7 and [n for _, n in nights] == [0] * 6 + [1]
    assert [d for d, _ in nights] == [nights[0][0] + _dt.timedelta(days=i) for i in range(7)]
    assert db.events_per_night("nobody") == []


def test_coincidences_on_the_pages_are_the_stored_groups(db, tmp_path):
    """The pages show the groups the matcher stored (the ones watches are told of), not a
    computation of their own: nothing before the matcher ran, the pair after, one group only."""
    sample = sample_archive(db, tmp_path)
    first, second = sample.pair
    assert db.latest_coincidences() == [] and db.coincidence_of_event(first.event_id) is None
    drain(db)
    [group] = db.latest_coincidences()
    assert [m.event_id for m in group.members] == [first.event_id, second.event_id] and group.camera_count == 2
    assert db.coincidence_of_event(second.event_id) == group
    assert db.coincidence_of_event(sample.hostile.event_id) is None


QUERIES = {
    "camera summaries": (overview.SELECT_CAMERAS, {}),
    "last night": (overview.SELECT_COUNTS_BETWEEN, {"start": "{night}", "end": "{night_end}"}),
    "latest events": (overview.SELECT_LATEST_EVENTS, {"limit": 30}),
    "nights of a camera": (overview.SELECT_NIGHTS, {"camera_id": "bench-0007", "start": "{night}", "end": "{night_end}"}),
    "camera's latest event": (overview.SELECT_CAMERA_LATEST_EVENT, {"camera_id": "bench-0007"}),
    "latest coincidences": (coincidences.SELECT_LATEST_GROUPS, {"limit": 10}),
    "coincidence of an event": (coincidences.SELECT_GROUP_OF_EVENT, {"event_id": "{event}"}),
    "members of coincidences": (coincidences.SELECT_MEMBERS, {"groups": "{groups}"}),
    "newest delivery of each watch (the watches page)": (notifications.SELECT_LATEST_PER_WATCH, {"ids": "{watches}"}),
    "feed end (the index page's live cursor)": (feed.SELECT_END, {}),
    "feed after a cursor (the live stream)": (feed.SELECT_AFTER, {"xid": 1, "seq": 0, "limit": 500}),
}


BIG_TABLES = ("event", "file_record", "event_meta", "feed_log", "coincidence_group", "coincidence_member",
              "delivery", "delivery_attempt")
WATCHES = 20
DELIVERIES = 20_000
# Watches with a long delivery history each (tests and attempts, as the notifier leaves them).
INSERT_DELIVERIES = """
INSERT INTO delivery (watch_id, kind, state, attempts, created_at, delivered_at)
SELECT md5('watch' || (i %% %(watches)s))::uuid, 'test', 'delivered', 1, now() - make_interval(secs => i), now()
FROM generate_series(0, %(deliveries)s - 1) AS i
"""
INSERT_ATTEMPTS = """
INSERT INTO delivery_attempt (delivery_id, status_code, duration_ms) SELECT delivery_id, 200, 5 FROM delivery
"""


def _md5_uuid(text: str) -> uuid.UUID:
    """The id bench/page_archive.py gives row ``text`` (``md5(text)::uuid``)."""
    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


def _scans(plan: dict) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.fixture(scope="module")
def big_archive(make_database):
    db = make_database("meteorpi_overview_big")
    start = fill(db, cameras=100, events=30_000, nights=100)
    db.create_or_update_user("alice", "alice-pw", ["user"])
    for w in range(WATCHES):
        db.create_watch(Watch(name=f"watch-{w}", webhook="https://example.org/hook", watch_id=_md5_uuid(f"watch{w}")),
                        "alice")
    with db.transaction() as cur:
        cur.execute(INSERT_DELIVERIES, {"watches": WATCHES, "deliveries": DELIVERIES})
        cur.execute(INSERT_ATTEMPTS)
        cur.execute("ANALYZE watch, delivery, delivery_attempt")
    yield db, start
    db.clear_database()


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_page_queries_reach_events_and_files_through_an_index(big_archive, name):
    db, start = big_archive
    sql, params = QUERIES[name]
    night = start + _dt.timedelta(days=50)
    values = {"{night}": night, "{night_end}": night + _dt.timedelta(days=1), "{event}": _md5_uuid("event500"),
              "{groups}": [_md5_uuid(f"group{g}") for g in range(40, 50)],
              "{watches}": [_md5_uuid(f"watch{w}") for w in range(WATCHES)]}
    params = {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    with db.transaction() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cur.fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    scans = _scans(plan[0]["Plan"])
    assert not [s for s in scans if "Seq Scan" in s[0] and s[1] in BIG_TABLES], scans
    assert not [s for s in scans if s[0] == "Sort" and s[1] == "feed_log"], scans
    assert any("Index" in kind or kind == "Bitmap Heap Scan" for kind, table in scans if table in BIG_TABLES), scans
