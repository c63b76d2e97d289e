"""What the web pages show at a glance: cameras with their last status and last sign of life,
events per night, the newest events. (Coincidences are the stored groups of coincidences.py.)

Every query here is shaped for an index (EXPLAIN-checked in tests/test_overview.py), because the
index page renders on every visit: the newest row per camera comes from the ``(camera_id, time)``
indexes one backward index step per camera, never from a scan of the event table. A "night" is
the noon-to-noon (UTC) day it started on: the date of ``time - 12 h``.
"""
from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass

from .pool import retry_stale

NIGHT_SHIFT = _dt.timedelta(hours=12)

# The newest status of each camera, plus its newest event and file (one index step each).
SELECT_CAMERAS = """
SELECT c.camera_id, c.status_id, c.valid_from, c.lat, c.long, c.lens, c.sensor, c.inst_name,
       c.alt, c.az, c.width,
       (SELECT max(e.event_time) FROM event e WHERE e.camera_id = c.camera_id) AS last_event,
       (SELECT max(f.file_time) FROM file_record f WHERE f.camera_id = c.camera_id) AS last_file
FROM (SELECT DISTINCT ON (camera_id) * FROM camera_status ORDER BY camera_id DESC, valid_from DESC) c
ORDER BY c.camera_id
"""
SELECT_LATEST_EVENT_TIME = "SELECT max(event_time) FROM event"
# Events per camera in [start, end): a range of the event_time index.
SELECT_COUNTS_BETWEEN = """
SELECT camera_id, count(*) FROM event
WHERE event_time >= %(start)s AND event_time < %(end)s
GROUP BY camera_id
"""
SELECT_LATEST_EVENTS = """
SELECT event_id, camera_id, event_time, event_type FROM event
ORDER BY event_time DESC, event_id DESC LIMIT %(limit)s
"""
# One camera's events per night, newest nights first, within [start, end).
SELECT_NIGHTS = """
SELECT ((event_time AT TIME ZONE 'UTC') - interval '12 hours')::date AS night, count(*)
FROM event
WHERE camera_id = %(camera_id)s AND event_time >= %(start)s AND event_time < %(end)s
GROUP BY night ORDER BY night
"""
SELECT_CAMERA_LATEST_EVENT = "SELECT max(event_time) FROM event WHERE camera_id = %(camera_id)s"
SELECT_STATUS_IDS = """
SELECT status_id FROM camera_status WHERE camera_id = %(camera_id)s
ORDER BY valid_from DESC LIMIT %(limit)s
"""


@dataclass(frozen=True)
class CameraSummary:
    """A camera as the index page shows it: its newest status and when it was last heard of."""
    camera_id: str
    status_id: uuid.UUID
    valid_from: _dt.datetime
    lat: float
    long: float
    lens: str
    sensor: str
    inst_name: str | None
    alt: float
    az: float
    width: float
    last_event: _dt.datetime | None
    last_file: _dt.datetime | None

    @property
    def last_seen(self) -> _dt.datetime:
        """The newest of its status, events and files: a camera that sends anything is alive."""
        return max(t for t in (self.valid_from, self.last_event, self.last_file) if t is not None)


@dataclass(frozen=True)
class EventRow:
    """An event without its files and meta: enough for a line in a list."""
    event_id: uuid.UUID
    camera_id: str
    event_time: _dt.datetime
    event_type: str


def night_of(time: _dt.datetime) -> _dt.date:
    """The night ``time`` belongs to: the date of the (UTC) noon before it."""
    return (time.astimezone(_dt.timezone.utc) - NIGHT_SHIFT).date()


def night_start(night: _dt.date) -> _dt.datetime:
    """The noon (UTC) that night ``night`` starts at."""
    return _dt.datetime.combine(night, _dt.time(12), tzinfo=_dt.timezone.utc)


def _utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return value.astimezone(_dt.timezone.utc) if value is not None else None


def _event_row(row) -> EventRow:
    return EventRow(event_id=row[0], camera_id=row[1], event_time=_utc(row[2]), event_type=row[3])


class OverviewStore:
    """Mixed into MeteorDatabase: the page queries (one transaction each, all read-only)."""

    @retry_stale
    def camera_summaries(self) -> list[CameraSummary]:
        """Every camera with its newest status and its newest event and file times."""
        with self.transaction() as cur:
            cur.execute(SELECT_CAMERAS)
            return [CameraSummary(*row[:2], _utc(row[2]), *row[3:11], _utc(row[11]), _utc(row[12]))
                    for row in cur.fetchall()]

    @retry_stale
    def last_night(self) -> tuple[_dt.date | None, dict[str, int]]:
        """The night of the newest event in the archive and each camera's events in it
        (an archive read days later still shows the last night anyone observed)."""
        with self.transaction() as cur:
            cur.execute(SELECT_LATEST_EVENT_TIME)
            latest = cur.fetchone()[0]
            if latest is None:
                return None, {}
            night = night_of(latest)
            start = night_start(night)
            cur.execute(SELECT_COUNTS_BETWEEN, {"start": start, "end": start + _dt.timedelta(days=1)})
            return night, dict(cur.fetchall())

    @retry_stale
    def latest_events(self, limit: int = 20) -> list[EventRow]:
        """The newest ``limit`` events of every camera, newest first."""
        with self.transaction() as cur:
            cur.execute(SELECT_LATEST_EVENTS, {"limit": limit})
            return [_event_row(r) for r in cur.fetchall()]

    @retry_stale
    def events_per_night(self, camera_id: str, nights: int = 30) -> list[tuple[_dt.date, int]]:
        """(night, events) for the ``nights`` nights up to the camera's newest event, oldest
        first, nights without events included as 0 (a gap in a bar chart is information)."""
        with self.transaction() as cur:
            cur.execute(SELECT_CAMERA_LATEST_EVENT, {"camera_id": camera_id})
            latest = cur.fetchone()[0]
            if latest is None:
                return []
            last = night_of(latest)
            first = last - _dt.timedelta(days=nights - 1)
            cur.execute(SELECT_NIGHTS, {"camera_id": camera_id, "start": night_start(first),
                                        "end": night_start(last) + _dt.timedelta(days=1)})
            counts = dict(cur.fetchall())
        return [(first + _dt.timedelta(days=i), counts.get(first + _dt.timedelta(days=i), 0))
                for i in range(nights)]

    @retry_stale
    def status_history(self, camera_id: str, limit: int = 100):
        """The camera's newest ``limit`` statuses (with regions), newest first."""
        with self.transaction() as cur:
            cur.execute(SELECT_STATUS_IDS, {"camera_id": camera_id, "limit": limit})
            return [self._load_status(cur, row[0]) for row in cur.fetchall()]
