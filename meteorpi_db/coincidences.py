"""Coincidence groups: the same meteor recorded by two or more cameras.

Events of one type from distinct cameras within Δt of each other whose cameras (the camera
status each event refers to) are within D km form a group. The relation chains: an event joins
a group when it is within Δt and D of *any* member, and when it links two groups they merge
(the younger is kept as ``merged_into`` the older, so links to it still resolve). The matcher
calls ``_link_events`` once per new event, in its own transaction; since the relation is
symmetric and every event is linked once, the groups are the connected components whatever the
order of arrival — a camera whose night arrives the next morning still joins.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid

import psycopg2.extras

from meteorpi_model import as_uuid, instant_to_ms
from meteorpi_model.watch import haversine_km

from .pool import retry_stale

# Every earlier-or-later event of the same type, other camera, within Δt of each new event.
# One index range scan (event_type_time) per new event, whatever the planner thinks of the
# table's size: a join it is free to reorder became a scan of every event per new one.
SELECT_NEIGHBOURS = """
SELECT x.event_id, n.event_id, n.camera_id, n.event_time, s.lat, s.long, m.group_id
FROM event x
CROSS JOIN LATERAL (
    SELECT e.event_id, e.camera_id, e.event_time, e.status_id FROM event e
    WHERE e.event_type = x.event_type
      AND e.event_time BETWEEN x.event_time - %(dt)s AND x.event_time + %(dt)s
      AND e.camera_id <> x.camera_id
    OFFSET 0) n
JOIN camera_status s ON s.status_id = n.status_id
LEFT JOIN coincidence_member m ON m.event_id = n.event_id
WHERE x.event_id = ANY(%(ids)s)
"""
SELECT_MEMBER_GROUPS = "SELECT event_id, group_id FROM coincidence_member WHERE event_id = ANY(%(ids)s)"
INSERT_GROUP = """
INSERT INTO coincidence_group (group_id, event_type, first_time, last_time, camera_count, created_at)
VALUES (%(group_id)s, %(event_type)s, %(time)s, %(time)s, 0, clock_timestamp())
"""
# New and moved members, written together once a page of events is linked.
INSERT_MEMBERS = """
INSERT INTO coincidence_member (event_id, group_id, camera_id, event_time, lat, long) VALUES %s
ON CONFLICT (event_id) DO UPDATE SET group_id = excluded.group_id
"""
MOVE_MEMBERS = """
UPDATE coincidence_member SET group_id = %(into)s WHERE group_id = ANY(%(groups)s) RETURNING event_id
"""
MARK_MERGED = """
UPDATE coincidence_group SET merged_into = %(into)s, camera_count = 0, updated_at = now()
WHERE group_id = ANY(%(groups)s)
"""
REFRESH_GROUP = """
UPDATE coincidence_group g SET first_time = agg.first_time, last_time = agg.last_time,
       camera_count = agg.cameras, updated_at = now()
FROM (SELECT min(event_time) AS first_time, max(event_time) AS last_time,
             count(DISTINCT camera_id) AS cameras
      FROM coincidence_member WHERE group_id = %(group_id)s) agg
WHERE g.group_id = %(group_id)s
RETURNING g.group_id, g.event_type, g.first_time, g.last_time, g.camera_count, g.created_at, g.updated_at
"""
SELECT_MEMBERS = """
SELECT m.group_id, m.event_id, m.camera_id, m.event_time, m.lat, m.long
FROM coincidence_member m WHERE m.group_id = ANY(%(groups)s) ORDER BY m.event_time, m.camera_id
"""
LOG_GROUP = """
INSERT INTO feed_log (kind, op, entity_id, camera_id, event_type, event_time, summary)
VALUES ('coincidence', %(op)s, %(group_id)s, %(camera_id)s, %(event_type)s, %(time)s, %(summary)s)
"""
SELECT_GROUPS = """
SELECT group_id, event_type, first_time, last_time, camera_count, created_at, updated_at, count(*) OVER ()
FROM coincidence_group g
WHERE merged_into IS NULL
  AND (%(after)s::timestamptz IS NULL OR first_time >= %(after)s)
  AND (%(before)s::timestamptz IS NULL OR first_time < %(before)s)
  AND (%(camera)s::text IS NULL OR EXISTS (SELECT 1 FROM coincidence_member m
                                           WHERE m.group_id = g.group_id AND m.camera_id = %(camera)s))
ORDER BY first_time DESC, group_id
LIMIT %(limit)s OFFSET %(skip)s
"""
# The newest current groups for the index page: a backward walk of coincidence_group_time
# (no count of every group, which get_coincidences gives and which reads them all).
SELECT_LATEST_GROUPS = """
SELECT group_id, event_type, first_time, last_time, camera_count, created_at, updated_at
FROM coincidence_group WHERE merged_into IS NULL
ORDER BY first_time DESC LIMIT %(limit)s
"""
# The group an event is a member of: members move on a merge, so this is never a merged-away one.
SELECT_GROUP_OF_EVENT = """
SELECT g.group_id, g.event_type, g.first_time, g.last_time, g.camera_count, g.created_at, g.updated_at
FROM coincidence_member m JOIN coincidence_group g ON g.group_id = m.group_id
WHERE m.event_id = %(event_id)s
"""
SELECT_GROUP = """
SELECT group_id, event_type, first_time, last_time, camera_count, created_at, updated_at, merged_into
FROM coincidence_group WHERE group_id = %(group_id)s
"""


@dataclasses.dataclass
class Member:
    event_id: uuid.UUID
    camera_id: str
    event_time: _dt.datetime
    lat: float
    long: float

    def as_dict(self) -> dict:
        return {"event_id": self.event_id.hex, "camera_id": self.camera_id,
                "event_time": instant_to_ms(self.event_time), "lat": self.lat, "long": self.long}


@dataclasses.dataclass
class Coincidence:
    """A coincidence group as readers see it."""
    group_id: uuid.UUID
    event_type: str
    first_time: _dt.datetime
    last_time: _dt.datetime
    camera_count: int
    created_at: _dt.datetime
    updated_at: _dt.datetime
    members: list[Member]

    def as_dict(self) -> dict:
        return {"group_id": self.group_id.hex, "event_type": self.event_type,
                "first_time": instant_to_ms(self.first_time), "last_time": instant_to_ms(self.last_time),
                "camera_count": self.camera_count, "cameras": sorted({m.camera_id for m in self.members}),
                "created_at": instant_to_ms(self.created_at), "updated_at": instant_to_ms(self.updated_at),
                "members": [m.as_dict() for m in self.members]}


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """What the coincidence linker needs of one new event."""
    event_id: uuid.UUID
    camera_id: str
    event_type: str
    event_time: _dt.datetime
    lat: float
    long: float


class CoincidenceStore:
    """Mixed into MeteorDatabase: linking events into groups, and reading the groups."""

    def _link_events(self, cur, events: list[NewEvent], window_s: float, max_km: float) -> dict[uuid.UUID, str]:
        """Link each of ``events`` into coincidence groups; {group_id: 'added'|'changed'} of
        every group that gained a camera or was created (merged-away groups are not listed)."""
        if not events:
            return {}
        cur.execute(SELECT_NEIGHBOURS, {"ids": [e.event_id for e in events],
                                        "dt": _dt.timedelta(seconds=window_s)})
        neighbours: dict[uuid.UUID, list[tuple]] = {}
        for x, n, camera, time, lat, long, group in cur.fetchall():
            neighbours.setdefault(x, []).append((n, camera, time, lat, long, group))
        cur.execute(SELECT_MEMBER_GROUPS, {"ids": [e.event_id for e in events]})
        group_of: dict[uuid.UUID, uuid.UUID] = dict(cur.fetchall())
        touched: dict[uuid.UUID, str] = {}
        pending: dict[uuid.UUID, list] = {}  # event_id -> member row not yet written
        for e in events:
            near = [n for n in neighbours.get(e.event_id, ())
                    if haversine_km(e.lat, e.long, n[3], n[4]) <= max_km]
            if not near:
                continue
            for n in near:  # what this transaction already changed wins over what was read
                if n[0] not in group_of and n[5] is not None:
                    group_of[n[0]] = n[5]
            groups = {group_of[x] for x in [e.event_id, *(n[0] for n in near)] if x in group_of}
            target = self._merge(cur, groups, group_of, touched, pending) if groups else None
            if target is None:
                target = uuid.uuid4()
                cur.execute(INSERT_GROUP, {"group_id": target, "event_type": e.event_type, "time": e.event_time})
                touched[target] = "added"
            for event_id, camera, time, lat, long in [(e.event_id, e.camera_id, e.event_time, e.lat, e.long),
                                                      *(n[:5] for n in near)]:
                if group_of.get(event_id) != target:
                    pending[event_id] = [event_id, target, camera, time, lat, long]
                    group_of[event_id] = target
                    touched.setdefault(target, "changed")
        if pending:
            psycopg2.extras.execute_values(cur, INSERT_MEMBERS, list(pending.values()), page_size=1000)
        return touched

    def _merge(self, cur, groups: set[uuid.UUID], group_of: dict, touched: dict,
               pending: dict[uuid.UUID, list]) -> uuid.UUID:
        """Merge ``groups`` into the oldest one (``created_at`` is the clock's, so groups made in
        one round are ordered too); the group kept."""
        if len(groups) == 1:
            return next(iter(groups))
        cur.execute("SELECT group_id FROM coincidence_group WHERE group_id = ANY(%(groups)s) "
                    "ORDER BY created_at, group_id", {"groups": list(groups)})
        ordered = [row[0] for row in cur.fetchall()]
        keep, others = ordered[0], ordered[1:]
        cur.execute(MOVE_MEMBERS, {"into": keep, "groups": others})
        for (event_id,) in cur.fetchall():
            group_of[event_id] = keep
        for row in pending.values():  # members of this page, not written yet
            if row[1] in others:
                row[1] = keep
                group_of[row[0]] = keep
        cur.execute(MARK_MERGED, {"into": keep, "groups": others})
        for other in others:
            touched.pop(other, None)
        touched.setdefault(keep, "changed")
        return keep

    def _refresh_groups(self, cur, touched: dict[uuid.UUID, str]) -> list[Coincidence]:
        """Recount the touched groups, log each on the feed; the groups with their members."""
        out = []
        members = self._members(cur, list(touched))
        for group_id, op in touched.items():
            cur.execute(REFRESH_GROUP, {"group_id": group_id})
            group_members = members.get(group_id, [])
            group = Coincidence(*cur.fetchone(), members=group_members)
            event_type, first_time, count = group.event_type, group.first_time, group.camera_count
            summary = {"camera_count": count, "cameras": sorted({m.camera_id for m in group_members}),
                       "event_ids": [m.event_id.hex for m in group_members[:50]]}
            cur.execute(LOG_GROUP, {"op": op, "group_id": group_id, "camera_id": group_members[-1].camera_id,
                                    "event_type": event_type, "time": first_time,
                                    "summary": psycopg2.extras.Json(summary)})
            out.append(group)
        return out

    def _members(self, cur, groups: list[uuid.UUID]) -> dict[uuid.UUID, list[Member]]:
        cur.execute(SELECT_MEMBERS, {"groups": groups})
        out: dict[uuid.UUID, list[Member]] = {}
        for group_id, *rest in cur.fetchall():
            out.setdefault(group_id, []).append(Member(*rest))
        return out

    @retry_stale
    def get_coincidences(self, after: _dt.datetime | None = None, before: _dt.datetime | None = None,
                         camera_id: str | None = None, limit: int = 100, skip: int = 0) -> dict:
        """Current groups (merged-away ones left out), newest first: {"count", "coincidences"}."""
        with self.transaction() as cur:
            cur.execute(SELECT_GROUPS, {"after": after, "before": before, "camera": camera_id,
                                        "limit": limit or None, "skip": skip})
            rows = cur.fetchall()
            members = self._members(cur, [r[0] for r in rows])
        return {"count": rows[0][7] if rows else 0,
                "coincidences": [Coincidence(*r[:7], members=members.get(r[0], [])) for r in rows]}

    @retry_stale
    def get_coincidence(self, group_id) -> Coincidence | None:
        """One group; a merged-away id gives the group it was merged into."""
        group_id = as_uuid(group_id)
        with self.transaction() as cur:
            for _ in range(100):  # merges chain; bounded all the same
                cur.execute(SELECT_GROUP, {"group_id": group_id})
                row = cur.fetchone()
                if row is None:
                    return None
                if row[7] is None:
                    return Coincidence(*row[:7], members=self._members(cur, [group_id]).get(group_id, []))
                group_id = row[7]
        return None

    @retry_stale
    def latest_coincidences(self, limit: int = 10) -> list[Coincidence]:
        """The newest ``limit`` current groups with their members, newest first (by first time)."""
        with self.transaction() as cur:
            cur.execute(SELECT_LATEST_GROUPS, {"limit": limit})
            rows = cur.fetchall()
            members = self._members(cur, [r[0] for r in rows])
        return [Coincidence(*r, members=members.get(r[0], [])) for r in rows]

    @retry_stale
    def coincidence_of_event(self, event_id) -> Coincidence | None:
        """The group ``event_id`` belongs to, with its members; None when no other camera's
        event has been linked to it (or the matcher has not reached it yet)."""
        with self.transaction() as cur:
            cur.execute(SELECT_GROUP_OF_EVENT, {"event_id": as_uuid(event_id)})
            row = cur.fetchone()
            if row is None:
                return None
            return Coincidence(*row, members=self._members(cur, [row[0]]).get(row[0], []))
