"""The matcher: reads the feed after commit with its own cursor, links coincidence groups and
writes notifications — all in one transaction with the cursor's advance.

So after a crash or restart the matcher resumes exactly where its last commit left it: nothing
is missed, nothing is matched twice (and were it ever, ``UNIQUE(subscriber, group_key)`` would
make the second notification a no-op). A transaction-scoped advisory lock lets one matcher work
at a time; the others find it taken and wait. (Not a row lock: that would give the round a
transaction id from its start, and every feed reader waits for transactions that hold one, so
rounds are also kept short: ``MatchSettings.batch`` rows each.)
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid

from meteorpi_model import instant_to_ms

from .coincidences import Coincidence, NewEvent
from .feed import SELECT_AFTER, Cursor, feed_item
from .notifications import RateBook
from .pool import retry_stale
from .records import meta_from_row

LOCK_KEY = 0x7761746368  # "watch"
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%(key)s)"
SELECT_CURSOR = "SELECT xid::text::bigint, seq FROM watch_cursor"
INIT_CURSOR = "INSERT INTO watch_cursor (xid, seq) VALUES ('0'::xid8, 0) ON CONFLICT (one) DO NOTHING"
SAVE_CURSOR = "UPDATE watch_cursor SET xid = %(xid)s::text::xid8, seq = %(seq)s"
SELECT_EVENTS = """
SELECT e.event_id, e.camera_id, e.event_type, e.event_time, s.lat, s.long
FROM event e JOIN camera_status s ON s.status_id = e.status_id
WHERE e.event_id = ANY(%(ids)s)
"""
SELECT_META = """
SELECT event_id, meta_key, string_value, number_value, date_value FROM event_meta
WHERE event_id = ANY(%(ids)s) ORDER BY event_id, meta_index
"""
# Each camera's last sign of life: the newest feed row, else its newest status.
SELECT_LAST_SEEN = """
SELECT c.camera_id, greatest(max(f.logged_at), max(c.valid_from))
FROM camera_status c LEFT JOIN feed_log f ON f.camera_id = c.camera_id AND f.kind <> 'coincidence'
GROUP BY c.camera_id
"""


@dataclasses.dataclass
class MatchSettings:
    """How the matcher judges: the coincidence window and distance, the rate window, links."""
    window_seconds: float = 3.0
    max_km: float = 300.0
    rate_window_seconds: float = 3600.0
    base_url: str = "http://127.0.0.1:12080"
    batch: int = 200


@dataclasses.dataclass
class RoundResult:
    items: int = 0
    notifications: int = 0
    groups: int = 0
    busy: bool = False  # another matcher held the cursor
    more: bool = False


class MatcherStore:
    """Mixed into MeteorDatabase: one round of matching."""

    @retry_stale
    def match_round(self, settings: MatchSettings) -> RoundResult:
        """Match the next page of the feed; advance the cursor in the same transaction."""
        result = RoundResult()
        with self.transaction() as cur:
            cur.execute(TRY_LOCK, {"key": LOCK_KEY})
            if not cur.fetchone()[0]:
                result.busy = True
                return result
            cur.execute(SELECT_CURSOR)
            row = cur.fetchone()
            if row is None:  # a fresh database: start at the feed's beginning
                cur.execute(INIT_CURSOR)
                result.more = True
                return result
            after = Cursor(*row)
            cur.execute(SELECT_AFTER, {"xid": after.xid, "seq": after.seq, "limit": settings.batch})
            items = [feed_item(r) for r in cur.fetchall()]
            if not items:
                return result
            result.items, result.more = len(items), len(items) == settings.batch
            now = _dt.datetime.now(_dt.timezone.utc)
            rate = RateBook(_dt.timedelta(seconds=settings.rate_window_seconds), now)
            watches = self._active_watches(cur, ("event", "coincidence"))
            logged = {i.entity_id: i.logged_at for i in items if i.kind == "event"}
            events = self._new_events(cur, list(logged))
            touched = self._link_events(cur, events, settings.window_seconds, settings.max_km)
            groups = self._refresh_groups(cur, touched)
            result.groups = len(groups)
            event_watches = [a for a in watches if a.watch.kind == "event"]
            group_watches = [a for a in watches if a.watch.kind == "coincidence"]
            need_meta = any(a.watch.meta for a in watches)
            ids = [e.event_id for e in events] + [m.event_id for g in groups for m in g.members]
            metas = self._metas(cur, ids) if need_meta else {}
            if event_watches:
                for e in events:
                    for active in event_watches:
                        if active.created_at <= logged[e.event_id] and active.watch.event_matches(
                                e.event_type, e.camera_id, e.lat, e.long, metas.get(e.event_id, ())):
                            result.notifications += self._notify(
                                cur, active, f"event:{e.event_id.hex}", "event", self._event_data(e, settings), rate)
            for group in groups:
                for active in group_watches:
                    watch = active.watch
                    if any(watch.event_matches(group.event_type, m.camera_id, m.lat, m.long, metas.get(m.event_id, ()))
                           for m in group.members):
                        key = f"coincidence:{group.group_id.hex}"
                        if watch.notify_on_join:
                            key += f":{group.camera_count}"
                        result.notifications += self._notify(
                            cur, active, key, "coincidence", self._group_data(group, settings), rate)
            cur.execute(SAVE_CURSOR, {"xid": items[-1].cursor.xid, "seq": items[-1].cursor.seq})
        return result

    def _new_events(self, cur, ids: list[uuid.UUID]) -> list[NewEvent]:
        if not ids:
            return []
        cur.execute(SELECT_EVENTS, {"ids": ids})
        by_id = {row[0]: NewEvent(*row) for row in cur.fetchall()}
        return [by_id[i] for i in ids if i in by_id]  # feed order

    def _metas(self, cur, ids: list[uuid.UUID]) -> dict:
        out: dict = {}
        if ids:
            cur.execute(SELECT_META, {"ids": ids})
            for event_id, *rest in cur.fetchall():
                out.setdefault(event_id, []).append(meta_from_row(*rest))
        return out

    @staticmethod
    def _event_data(e: NewEvent, settings: MatchSettings) -> dict:
        return {"event": {"id": e.event_id.hex, "camera_id": e.camera_id, "event_type": e.event_type,
                          "time": instant_to_ms(e.event_time), "lat": e.lat, "long": e.long,
                          "url": f"{settings.base_url}/events/{e.event_id.hex}"}}

    @staticmethod
    def _group_data(group: Coincidence, settings: MatchSettings) -> dict:
        members = [{"event_id": m.event_id.hex, "camera_id": m.camera_id, "time": instant_to_ms(m.event_time),
                    "url": f"{settings.base_url}/events/{m.event_id.hex}"} for m in group.members[:50]]
        return {"coincidence": {"id": group.group_id.hex, "event_type": group.event_type,
                                "first_time": instant_to_ms(group.first_time),
                                "camera_count": group.camera_count,
                                "cameras": sorted({m.camera_id for m in group.members}),
                                "url": f"{settings.base_url}/coincidences/{group.group_id.hex}",
                                "members": members, "more_members": max(0, len(group.members) - 50)}}

    @retry_stale
    def match_absences(self, settings: MatchSettings) -> int:
        """Notify absence watches of cameras silent longer than their ``silent_hours``: once per
        silence (the group key carries when the camera was last heard of)."""
        sent = 0
        with self.transaction() as cur:
            watches = self._active_watches(cur, ("absence",))
            if not watches:
                return 0
            now = _dt.datetime.now(_dt.timezone.utc)
            rate = RateBook(_dt.timedelta(seconds=settings.rate_window_seconds), now)
            cur.execute(SELECT_LAST_SEEN)
            last_seen = cur.fetchall()
            for active in watches:
                watch = active.watch
                for camera_id, seen in last_seen:
                    if watch.cameras and camera_id not in watch.cameras:
                        continue
                    if now - seen < _dt.timedelta(hours=watch.silent_hours):
                        continue
                    data = {"absence": {"camera_id": camera_id, "last_seen": instant_to_ms(seen),
                                        "silent_hours": round((now - seen).total_seconds() / 3600, 2)}}
                    sent += self._notify(cur, active, f"absence:{camera_id}:{instant_to_ms(seen)}",
                                         "absence", data, rate)
        return sent
