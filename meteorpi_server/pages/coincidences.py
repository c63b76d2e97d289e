"""Coincidences as the pages show them: events of one type seen by other cameras within a few
seconds of each other, found directly in the event table.

The watches branch (issue 15) brings stored coincidence groups and ``GET /coincidences``; when it
lands, these two functions are the only place the pages ask, so they switch to it here.
"""
from __future__ import annotations

from meteorpi_db import MeteorDatabase
from meteorpi_db.overview import EventRow
from meteorpi_model import Event

WINDOW_SECONDS = 3.0
RECENT_EVENTS = 500  # the newest events searched for partners on the index page


def for_event(db: MeteorDatabase, event: Event) -> list[EventRow]:
    """Events of the same type on other cameras within WINDOW_SECONDS of ``event``."""
    return db.events_near(event.camera_id, str(event.event_type), event.event_time, WINDOW_SECONDS)


def latest(db: MeteorDatabase, limit: int = 10) -> list[list[EventRow]]:
    """The newest coincidence groups (events joined through partners), newest first, each in
    time order."""
    parent: dict = {}
    rows: dict = {}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for a, b in db.recent_event_pairs(WINDOW_SECONDS, RECENT_EVENTS):
        for row in (a, b):
            rows.setdefault(row.event_id, row)
            parent.setdefault(row.event_id, row.event_id)
        parent[root(a.event_id)] = root(b.event_id)
    groups: dict = {}
    for event_id in rows:
        groups.setdefault(root(event_id), []).append(rows[event_id])
    ordered = [sorted(g, key=lambda r: (r.event_time, r.camera_id)) for g in groups.values()]
    ordered.sort(key=lambda g: g[-1].event_time, reverse=True)
    return ordered[:limit]
