"""search_files / search_events against the real PostgreSQL: every field narrows as documented.

The corpus: three cameras at different places, seven files and four events over one night, two
of each imported from another node. Each case names the records it must find, in time order.
"""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from meteorpi_model import (CameraStatus, Event, EventSearch, FileRecord, FileRecordSearch, Location, Meta,
                            MetaConstraint, NSString, Orientation, ValidationError)

UTC = dt.timezone.utc
NIGHT = dt.datetime(2015, 6, 10, tzinfo=UTC)  # midnight UTC before the night searched


def at(hours: float) -> dt.datetime:
    return NIGHT + dt.timedelta(hours=hours)


# camera -> (lat, long); local noon at long 151.2 is about 10h before UTC noon.
CAMERAS = {"cam-a": (52.2, 0.1), "cam-b": (51.5, -0.1), "cam-c": (-33.9, 151.2)}
# name -> camera, hours after NIGHT, mime type, semantic type, meta
FILES = {
    "f4": ("cam-c", 12, "image/png", "meteorpi:image", [Meta("meteorpi:brightness", 3.5)]),
    "f5": ("cam-b", 20, "text/plain", "meteorpi:log", []),
    "f1": ("cam-a", 22, "image/png", "meteorpi:image",
           [Meta("meteorpi:brightness", 3.5), Meta("meteorpi:note", "100% sure_it's"),
            Meta("meteorpi:seen", at(22))]),
    "f2": ("cam-a", 23, "video/mp4", "meteorpi:video",
           [Meta("meteorpi:brightness", 7), Meta("meteorpi:note", "plain"), Meta("meteorpi:seen", at(48))]),
    "f3": ("cam-b", 25, "image/png", "other:image",
           [Meta("meteorpi:note", "50%_off;--"), Meta("other:brightness", 100)]),
}
IMPORTED_FILES = {  # stored through import_*, as a server holds what nodes sent it
    "f6": ("cam-a", 30, "image/jpeg", "meteorpi:image", [Meta("meteorpi:brightness", 1)]),
    "f7": ("cam-a", 31, "video/mp4", "meteorpi:video", []),
}
# name -> camera, time, type, file names, meta
EVENTS = {
    "e3": ("cam-c", at(12) + dt.timedelta(minutes=1), "other:satellite", ["f4"],
           [Meta("meteorpi:comment", "100%")]),
    "e1": ("cam-a", at(22) + dt.timedelta(seconds=1), "meteorpi:meteor", ["f1", "f2"],
           [Meta("meteorpi:duration", 1.5), Meta("meteorpi:comment", "it's 50%_done;--"),
            Meta("meteorpi:start", at(22))]),
    "e2": ("cam-b", at(25) + dt.timedelta(minutes=1), "meteor", ["f3"],
           [Meta("meteorpi:duration", 3), Meta("meteorpi:comment", "quiet"), Meta("meteorpi:start", at(25))]),
}
IMPORTED_EVENT = ("e4", "cam-a", at(31), "meteorpi:meteor", ["f7"], [Meta("meteorpi:duration", 0.5)])

ALL_FILES = ["f4", "f5", "f1", "f2", "f3", "f6", "f7"]
ALL_EVENTS = ["e3", "e1", "e2", "e4"]


def _status(camera_id: str, lat: float, long: float) -> CameraStatus:
    return CameraStatus(camera_id=camera_id, lens="lens", sensor="sensor", software_version=1,
                        valid_from=NIGHT, location=Location(lat=lat, long=long, gps=True, error=1.0),
                        orientation=Orientation(alt=90, az=0, rot=0, error=1, width=90))


@pytest.fixture
def corpus(db, tmp_path):
    """(db, {name: FileRecord or Event}) holding the records described above."""
    statuses = {cam: db.update_camera_status(_status(cam, *CAMERAS[cam]), time=at(-24))
                for cam in CAMERAS}
    made = {}
    for name, (cam, hours, mime, semantic, meta) in FILES.items():
        path = tmp_path / name
        path.write_bytes(name.encode())
        made[name] = db.register_file(path, mime, semantic, at(hours), meta, cam)
    for name, (cam, time, kind, files, meta) in EVENTS.items():
        made[name] = db.register_event(cam, time, kind, [made[f] for f in files], meta)
    for name, (cam, hours, mime, semantic, meta) in IMPORTED_FILES.items():
        data = name.encode()
        md5 = hashlib.md5(data).hexdigest()
        made[name] = FileRecord(camera_id=cam, status_id=statuses[cam].status_id, file_time=at(hours),
                                mime_type=mime, semantic_type=semantic, file_size=len(data), md5=md5,
                                meta=meta)
        db.file_store.store_stream(made[name].file_id, md5, [data])
    assert db.import_file_record(made["f6"], "central")
    name, cam, time, kind, files, meta = IMPORTED_EVENT
    made[name] = Event(camera_id=cam, status_id=statuses[cam].status_id, event_time=time,
                       event_type=kind, files=[made[f] for f in files], meta=meta)
    assert db.import_event(made[name], "central")
    return db, made


def mc(constraint_type, key, value) -> MetaConstraint:
    return MetaConstraint(constraint_type, NSString.from_string(key), value)


FILE_CASES = [
    ({}, ALL_FILES),
    ({"camera_ids": ["cam-a"]}, ["f1", "f2", "f6", "f7"]),
    ({"camera_ids": ["cam-b", "cam-c"]}, ["f4", "f5", "f3"]),
    ({"camera_ids": ["nobody"]}, []),
    ({"lat_min": 50.0}, ["f5", "f1", "f2", "f3", "f6", "f7"]),
    ({"lat_max": 0.0}, ["f4"]),
    ({"lat_min": 51.6, "lat_max": 53.0}, ["f1", "f2", "f6", "f7"]),
    ({"long_min": 0.0}, ["f4", "f1", "f2", "f6", "f7"]),
    ({"long_max": 0.0}, ["f5", "f3"]),
    ({"long_min": -1.0, "long_max": 1.0, "lat_min": 51.0, "lat_max": 52.0}, ["f5", "f3"]),
    ({"after": at(22)}, ["f1", "f2", "f3", "f6", "f7"]),  # inclusive
    ({"before": at(22)}, ["f4", "f5"]),  # exclusive
    ({"after": at(22), "before": at(25)}, ["f1", "f2"]),
    # 22:00 to midnight local time, whichever the camera's longitude
    ({"after_offset": 36000.0, "before_offset": 43200.0}, ["f4", "f1", "f2"]),
    ({"after_offset": 60000.0}, ["f6", "f7"]),
    ({"before_offset": 30000.0}, ["f5"]),
    ({"mime_type": "image/png"}, ["f4", "f1", "f3"]),
    ({"mime_type": "video/mp4"}, ["f2", "f7"]),
    ({"semantic_type": NSString("image")}, ["f4", "f1", "f6"]),
    ({"semantic_type": NSString("image", "other")}, ["f3"]),
    ({"meta_constraints": [mc("less", "meteorpi:brightness", 3.5)]}, ["f6"]),
    ({"meta_constraints": [mc("greater", "meteorpi:brightness", 3.5)]}, ["f2"]),  # not other:brightness
    ({"meta_constraints": [mc("greater", "other:brightness", 3.5)]}, ["f3"]),
    ({"meta_constraints": [mc("number_equals", "meteorpi:brightness", 3.5)]}, ["f4", "f1"]),
    ({"meta_constraints": [mc("string_equals", "meteorpi:note", "100% sure_it's")]}, ["f1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", "sure")]}, ["f1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", "nowhere")]}, []),
    ({"meta_constraints": [mc("before", "meteorpi:seen", at(24))]}, ["f1"]),
    ({"meta_constraints": [mc("after", "meteorpi:seen", at(24))]}, ["f2"]),
    ({"meta_constraints": [mc("after", "meteorpi:seen", at(22))]}, ["f2"]),  # strictly after
    ({"meta_constraints": [mc("greater", "meteorpi:brightness", 3.0),
                           mc("contains", "meteorpi:note", "sure")]}, ["f1"]),
    ({"exclude_events": True}, ["f5", "f6"]),
    ({"exclude_events": False}, ALL_FILES),
    ({"exclude_imported": True}, ["f4", "f5", "f1", "f2", "f3"]),
    ({"exclude_imported": True, "exclude_events": True}, ["f5"]),
    ({"camera_ids": ["cam-a"], "after": at(23), "mime_type": "video/mp4"}, ["f2", "f7"]),
    # SQL metacharacters are plain text: no error, no wildcard, nothing dropped
    ({"meta_constraints": [mc("contains", "meteorpi:note", "%")]}, ["f1", "f3"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", "_")]}, ["f1", "f3"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", "%_")]}, ["f3"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", "'")]}, ["f1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:note", ";--")]}, ["f3"]),
    ({"meta_constraints": [mc("string_equals", "meteorpi:note", "%")]}, []),
    ({"meta_constraints": [mc("contains", "x'; DROP TABLE file_meta;--:%_", "a")]}, []),
    ({"mime_type": "image/png'; DROP TABLE file_record;--"}, []),
    ({"mime_type": "%"}, []),
    ({"semantic_type": NSString("im_ge%'")}, []),
]

EVENT_CASES = [
    ({}, ALL_EVENTS),
    ({"camera_ids": ["cam-a"]}, ["e1", "e4"]),
    ({"camera_ids": ["cam-b", "cam-c", "nobody"]}, ["e3", "e2"]),
    ({"lat_max": 0.0}, ["e3"]),
    ({"lat_min": 52.0}, ["e1", "e4"]),
    ({"long_max": 0.0}, ["e2"]),
    ({"long_min": 100.0, "long_max": 180.0}, ["e3"]),
    ({"after": at(22) + dt.timedelta(seconds=1)}, ["e1", "e2", "e4"]),
    ({"before": at(22) + dt.timedelta(seconds=1)}, ["e3"]),
    ({"after": at(13), "before": at(31)}, ["e1", "e2"]),
    ({"after_offset": 36000.0, "before_offset": 43200.0}, ["e3", "e1"]),
    ({"after_offset": 43200.0}, ["e2", "e4"]),
    ({"event_type": NSString("meteor")}, ["e1", "e2", "e4"]),
    ({"event_type": NSString("satellite", "other")}, ["e3"]),
    ({"meta_constraints": [mc("greater", "meteorpi:duration", 1)]}, ["e1", "e2"]),
    ({"meta_constraints": [mc("less", "meteorpi:duration", 1)]}, ["e4"]),
    ({"meta_constraints": [mc("number_equals", "meteorpi:duration", 3)]}, ["e2"]),
    ({"meta_constraints": [mc("string_equals", "meteorpi:comment", "quiet")]}, ["e2"]),
    ({"meta_constraints": [mc("before", "meteorpi:start", at(24))]}, ["e1"]),
    ({"meta_constraints": [mc("after", "meteorpi:start", at(24))]}, ["e2"]),
    ({"meta_constraints": [mc("greater", "meteorpi:duration", 1),
                           mc("contains", "meteorpi:comment", "50")]}, ["e1"]),
    ({"exclude_imported": True}, ["e3", "e1", "e2"]),
    ({"camera_ids": ["cam-a"], "exclude_imported": True}, ["e1"]),
    ({"event_type": NSString("meteor"), "lat_min": 52.0, "after_offset": 40000.0}, ["e4"]),
    ({"meta_constraints": [mc("contains", "meteorpi:comment", "%")]}, ["e3", "e1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:comment", "%_")]}, ["e1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:comment", "_")]}, ["e1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:comment", "'")]}, ["e1"]),
    ({"meta_constraints": [mc("contains", "meteorpi:comment", ";--")]}, ["e1"]),
    ({"event_type": NSString("meteor'; DROP TABLE event;--")}, []),
    ({"event_type": NSString("%")}, []),
]


def _names(made: dict, found: list) -> list[str]:
    by_id = {getattr(v, "file_id", None) or v.event_id: k for k, v in made.items()}
    return [by_id[getattr(x, "file_id", None) or x.event_id] for x in found]


@pytest.mark.parametrize("fields, expected", FILE_CASES, ids=[repr(c[0])[:60] for c in FILE_CASES])
def test_search_files_finds_exactly_the_matching_files_in_time_order(corpus, fields, expected):
    db, made = corpus
    result = db.search_files(FileRecordSearch(**fields))
    assert _names(made, result["files"]) == expected
    assert result["count"] == len(expected)
    assert db.search_files(FileRecordSearch())["count"] == len(ALL_FILES)  # nothing was harmed


@pytest.mark.parametrize("fields, expected", EVENT_CASES, ids=[repr(c[0])[:60] for c in EVENT_CASES])
def test_search_events_finds_exactly_the_matching_events_in_time_order(corpus, fields, expected):
    db, made = corpus
    result = db.search_events(EventSearch(**fields))
    assert _names(made, result["events"]) == expected
    assert result["count"] == len(expected)
    assert db.search_events(EventSearch())["count"] == len(ALL_EVENTS)


@pytest.mark.parametrize("limit, skip, expected", [
    (2, 0, ["f4", "f5"]),
    (2, 2, ["f1", "f2"]),
    (2, 6, ["f7"]),
    (3, 7, []),
    (1, 100, []),
    (0, 0, ALL_FILES),  # 0: no limit
    (0, 5, ["f6", "f7"]),
])
def test_limit_and_skip_page_through_files_while_count_stays_the_total(corpus, limit, skip, expected):
    db, made = corpus
    result = db.search_files(FileRecordSearch(limit=limit, skip=skip))
    assert _names(made, result["files"]) == expected
    assert result["count"] == len(ALL_FILES)


def test_limit_and_skip_page_through_events_with_a_filter(corpus):
    db, made = corpus
    pages = [db.search_events(EventSearch(event_type=NSString("meteor"), limit=1, skip=i)) for i in range(4)]
    assert [_names(made, p["events"]) for p in pages] == [["e1"], ["e2"], ["e4"], []]
    assert {p["count"] for p in pages} == {3}


def test_search_events_returns_whole_events_with_files_in_order_and_meta(corpus):
    db, made = corpus
    found = db.search_events(EventSearch(camera_ids=["cam-a"]))["events"]
    assert found == [made["e1"], made["e4"]]
    assert [f.file_id for f in found[0].files] == [made["f1"].file_id, made["f2"].file_id]


def test_search_files_returns_whole_file_records(corpus):
    db, made = corpus
    assert db.search_files(FileRecordSearch(camera_ids=["cam-b"]))["files"] == [made["f5"], made["f3"]]


def test_records_at_the_same_time_come_back_in_one_stable_order(db, tmp_path):
    """Ties on time are broken by id, so pages never repeat or skip a record."""
    db.update_camera_status(_status("cam-a", 52.2, 0.1), time=at(-1))
    path = tmp_path / "x"
    path.write_bytes(b"x")
    ids = {db.register_file(path, "text/plain", "log", at(1), [], "cam-a").file_id for _ in range(5)}
    paged = [f.file_id for i in range(5) for f in db.search_files(FileRecordSearch(limit=1, skip=i))["files"]]
    assert paged == sorted(ids)
    assert [f.file_id for f in db.search_files(FileRecordSearch())["files"]] == paged


def test_a_meta_date_given_in_milliseconds_in_python_still_searches_as_a_date(corpus):
    db, made = corpus
    ms = int(at(24).timestamp() * 1000)
    search = FileRecordSearch(meta_constraints=[MetaConstraint("before", NSString("seen"), ms)])
    assert _names(made, db.search_files(search)["files"]) == ["f1"]


@pytest.mark.parametrize("call, search", [
    ("search_files", EventSearch()),
    ("search_events", FileRecordSearch()),
    ("search_files", FileRecordSearch(lat_min=10.0, lat_max=-10.0)),
    ("search_events", EventSearch(limit=-1)),
    ("search_events", EventSearch(meta_constraints=[MetaConstraint("less", NSString("k"), "text")])),
])
def test_a_malformed_search_is_a_validation_error_not_a_database_error(db, call, search):
    with pytest.raises(ValidationError):
        getattr(db, call)(search)
