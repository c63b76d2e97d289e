"""Coincidence groups and notifications against a real PostgreSQL: the same meteor seen by
several cameras becomes one group, told once per subscriber, again when a camera joins."""
from __future__ import annotations

import pytest

from meteorpi_db.matcher import MatchSettings
from meteorpi_model import Meta, ValidationError
from meteorpi_model.watch import Near, Watch, WatchMeta

from .watch_fixtures import CAMBRIDGE, add_event, drain, make_camera, north_of


@pytest.fixture
def alice(db):
    db.create_or_update_user("alice", "alice-pw", ["user"])
    return "alice"


def _watch(db, owner, name="fireballs", **kw):
    watch, _, _ = db.create_watch(Watch(name=name, kind="coincidence", webhook="https://example.org/hook", **kw),
                                  owner)
    return watch


def _notifications(db, kind="coincidence"):
    with db.transaction() as cur:
        cur.execute("SELECT subscriber, group_key FROM notification WHERE kind = %(k)s ORDER BY created_at",
                    {"k": kind})
        return cur.fetchall()


def test_two_cameras_then_a_third_give_one_group_and_two_notifications(db, vectors, alice):
    """1.5 s and 120 km apart: one group, one notification; a third camera: one more."""
    _watch(db, alice)
    _watch(db, alice, name="also-mine")  # two watches of one subscriber: still one notification
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(120))
    c = make_camera(db, vectors, "cam-c", north_of(200))
    add_event(db, a, 0.0)
    add_event(db, b, 1.5)
    drain(db)
    groups = db.get_coincidences()["coincidences"]
    assert [(g.camera_count, sorted(m.camera_id for m in g.members)) for g in groups] == [(2, ["cam-a", "cam-b"])]
    assert len(_notifications(db)) == 1
    add_event(db, c, 2.5)
    drain(db)
    groups = db.get_coincidences()["coincidences"]
    assert [g.camera_count for g in groups] == [3]
    assert [key.rsplit(":", 1)[1] for _, key in _notifications(db)] == ["2", "3"]
    assert drain(db) == 0  # nothing matched twice


@pytest.mark.parametrize("km, seconds", [(500, 1.5), (120, 10.0)], ids=["500km", "10s"])
def test_too_far_or_too_late_is_no_coincidence(db, vectors, alice, km, seconds):
    _watch(db, alice)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(km))
    add_event(db, a, 0.0)
    add_event(db, b, seconds)
    drain(db)
    assert db.get_coincidences()["count"] == 0
    assert _notifications(db) == []


def test_importing_the_same_night_again_notifies_nobody_again(db, vectors, alice):
    _watch(db, alice)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(120))
    ea, eb = add_event(db, a, 0.0), add_event(db, b, 1.5)
    drain(db)
    assert not db.import_event(ea, "importer") and not db.import_event(eb, "importer")
    drain(db)
    assert len(_notifications(db)) == 1


def test_groups_chain_and_merge_across_more_than_the_distance(db, vectors, alice):
    """Cameras 250 km apart in a line: the ends are 750 km apart, yet all are one group; a
    late camera bridging two groups merges them into the older, whose id stays valid."""
    _watch(db, alice)
    cams = [make_camera(db, vectors, f"cam-{i}", north_of(250 * i)) for i in range(4)]
    add_event(db, cams[0], 0.0)
    add_event(db, cams[1], 1.0)
    drain(db)
    add_event(db, cams[3], 2.0)  # alone: 750 km from cam-0, 500 from cam-1
    drain(db)
    first = db.get_coincidences()["coincidences"]
    assert len(first) == 1
    add_event(db, cams[2], 1.5)  # the night of cam-2 arrives late and links both ends
    drain(db)
    groups = db.get_coincidences()["coincidences"]
    assert [(g.group_id, g.camera_count) for g in groups] == [(first[0].group_id, 4)]


def test_filters_near_and_meta_and_event_type(db, vectors, alice):
    _watch(db, alice, name="bright-near-home", meta=[WatchMeta.parse("magnitude<=-4")],
           near=Near.parse("52.0,0.0,100"), event_types=["meteorpi:meteor*"])
    db.create_or_update_user("bob", "bob-pw", ["user"])
    _watch(db, "bob", name="equator", near=Near.parse("0,0,1000"))  # no camera near: told nothing
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(100))
    add_event(db, a, 0.0, meta=[Meta(key="magnitude", value=-2.0)])
    add_event(db, b, 1.0, meta=[Meta(key="magnitude", value=-2.5)])
    drain(db)
    assert _notifications(db) == []  # a faint pair
    add_event(db, a, 100.0, meta=[Meta(key="magnitude", value=-5.0)])
    add_event(db, b, 101.0)
    add_event(db, a, 200.0, event_type="meteorpi:plane", meta=[Meta(key="magnitude", value=-5.0)])
    add_event(db, b, 200.5, event_type="meteorpi:plane")
    drain(db)
    assert len(_notifications(db)) == 1
    assert db.get_coincidences()["count"] == 3


def test_event_watches_notify_each_matching_event_once(db, vectors, alice):
    # the address agreed (the operator vouches): consent itself is tested in test_watch_http.py
    db.create_watch(Watch(name="home", kind="event", email="alice@example.org", cameras=["cam-a"]), alice,
                    confirmed_by_operator=True)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(10))
    add_event(db, a, 0.0)
    add_event(db, b, 0.0)
    add_event(db, a, 50.0)
    assert drain(db) == 2
    assert drain(db) == 0
    assert len(_notifications(db, "event")) == 2


def test_an_event_type_with_a_space_can_be_watched(db, vectors, alice):
    """Event types may hold spaces ("ukmon:fire ball" is a valid type): a watch naming one, or a
    pattern with a space, matches it; what no event type holds (control characters, non-ASCII) is
    still refused."""
    db.create_watch(Watch(name="balls", kind="event", email="alice@example.org",
                          event_types=["meteorpi:fire ball", "meteorpi:* trail"]), alice, confirmed_by_operator=True)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    add_event(db, a, 0.0, event_type="meteorpi:fire ball")
    add_event(db, a, 10.0, event_type="meteorpi:long trail")
    add_event(db, a, 20.0, event_type="meteorpi:fireball")
    drain(db)
    assert len(_notifications(db, "event")) == 2
    for bad in ["meteorpi:fire\nball", "meteorpi:meteor\n", "meteorpi:fire\tball", "m\x00", "météore", ""]:
        with pytest.raises(ValidationError, match="event_types"):
            Watch.from_dict({"name": "x", "email": "alice@example.org", "event_types": [bad]})


def test_a_muted_watch_writes_nothing_until_the_mute_ends(db, vectors, alice):
    import datetime as _dt
    _watch(db, alice, muted_until=_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1))
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    b = make_camera(db, vectors, "cam-b", north_of(120))
    add_event(db, a, 0.0)
    add_event(db, b, 1.5)
    drain(db)
    assert db.get_coincidences()["count"] == 1 and _notifications(db) == []


def test_an_absence_watch_is_told_once_per_silence(db, vectors, alice):
    db.create_watch(Watch(name="quiet", kind="absence", silent_hours=2, cameras=["cam-a"],
                          email="alice@example.org"), alice, confirmed_by_operator=True)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    make_camera(db, vectors, "cam-b", north_of(10))
    assert db.match_absences(MatchSettings()) == 0  # cam-a was just heard of
    with db.transaction() as cur:  # three hours pass without a word from anyone
        cur.execute("UPDATE feed_log SET logged_at = logged_at - interval '3 hours'")
    assert db.match_absences(MatchSettings()) == 1
    assert db.match_absences(MatchSettings()) == 0  # the same silence: told once
    add_event(db, a, 0.0)
    assert db.match_absences(MatchSettings()) == 0
    assert [key.split(":")[1] for _, key in _notifications(db, "absence")] == ["cam-a"]


def test_groups_formed_and_merged_within_one_page_are_one_group(db, vectors, alice):
    """Five nights in a line, 250 km apart, all arrive before the matcher runs, in an order that
    first makes two groups (cam-0 with cam-1; cam-4, cam-3 and cam-2) and then links them
    through cam-1, which is not near cam-3 or cam-4: they move with their group all the same."""
    _watch(db, alice)
    cams = [make_camera(db, vectors, f"cam-{i}", north_of(250 * i)) for i in range(5)]
    seconds = (0.0, 1.0, 1.5, 2.0, 2.5)
    for i in (0, 4, 3, 1, 2):
        add_event(db, cams[i], seconds[i])
    drain(db)
    groups = db.get_coincidences()["coincidences"]
    assert [(g.camera_count, len(g.members)) for g in groups] == [(5, 5)]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM coincidence_member m JOIN coincidence_group g USING (group_id) "
                    "WHERE g.merged_into IS NOT NULL")
        assert cur.fetchone()[0] == 0
