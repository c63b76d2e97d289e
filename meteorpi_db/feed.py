"""The change feed's storage: reading ``feed_log`` in commit-safe order, and its retention.

Rows are written by triggers inside each importing transaction (``migrations/003_feed.sql``),
so nothing here is on the import path. A reader's position is a ``Cursor`` — the (xid, seq) of
the last row it saw. Reads return only rows of transactions below the snapshot's xmin: every
such transaction has ended, so a row can never appear later *behind* a cursor already given
out, even when transactions commit in another order than they began.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import re
import uuid
from typing import Any, Iterable

from meteorpi_model import ValidationError, instant_to_ms

from .pool import retry_stale

# Any number of digits: a cursor too big to be one is "out of range", not "not digits-digits".
_CURSOR_RE = re.compile(r"(\d+)-(\d+)", re.ASCII)
KINDS = ("status", "event", "file", "coincidence")  # coincidence: written by the matcher (004_watches.sql)

# ``committed_at``: when the row's transaction committed, from PostgreSQL's commit timestamps
# (``track_commit_timestamp``, on in the embedded server). A server by URL may run without them,
# where asking would be an error: the CASE asks only when the setting is on (it is fixed while
# the server runs), and a transaction that committed before it was turned on reads as NULL.
_ITEM_COLUMNS = """
xid::text::bigint, seq, kind, op, entity_id, camera_id, event_type, event_time, summary, logged_at,
CASE WHEN current_setting('track_commit_timestamp')::boolean THEN pg_xact_commit_timestamp(xid::xid) END
"""
_VISIBLE_AFTER = """
FROM feed_log
WHERE (xid, seq) > (%(xid)s::text::xid8, %(seq)s) AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY feed_log.xid, seq
LIMIT %(limit)s
"""
SELECT_AFTER = "SELECT" + _ITEM_COLUMNS + _VISIBLE_AFTER
# Rows written by transactions that were still running when we read: someone must look again
# once they end (their commit notifies; a rollback or a non-feed writer holding xmin does not).
PENDING_AFTER = """
SELECT EXISTS (SELECT 1 FROM feed_log WHERE (xid, seq) > (%(xid)s::text::xid8, %(seq)s)
               AND xid >= pg_snapshot_xmin(pg_current_snapshot()))
"""
# A page and PENDING_AFTER in one round trip (the feed's latency pays for each): the EXISTS is
# uncorrelated, so asked once, on the statement's one snapshot. Asked from ``after`` rather than
# from the page's last row, it answers the same: a running transaction's rows have xids at or
# above xmin, after every row the page can hold.
READ_PAGE = "SELECT" + _ITEM_COLUMNS + ", (" + PENDING_AFTER + ")" + _VISIBLE_AFTER
SELECT_END = """
SELECT xid::text::bigint, seq FROM feed_log WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY feed_log.xid DESC, seq DESC LIMIT 1
"""
SELECT_HORIZON = "SELECT xid::text::bigint, seq FROM feed_horizon"
# Retention: the newest row to go becomes the horizon, then everything up to it goes.
PRUNE_HORIZON = """
INSERT INTO feed_horizon (xid, seq)
SELECT xid, seq FROM feed_log
WHERE logged_at < %(before)s AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid DESC, seq DESC LIMIT 1
ON CONFLICT (one) DO UPDATE SET xid = excluded.xid, seq = excluded.seq
    WHERE (excluded.xid, excluded.seq) > (feed_horizon.xid, feed_horizon.seq)
"""
PRUNE_ROWS = """
DELETE FROM feed_log WHERE (xid, seq) <= (SELECT xid, seq FROM feed_horizon)
"""


@dataclasses.dataclass(frozen=True, order=True)
class Cursor:
    """A position in the feed: just after the row (xid, seq). ``Cursor(0, 0)`` is the start."""

    xid: int
    seq: int

    def __str__(self) -> str:
        return f"{self.xid}-{self.seq}"

    @classmethod
    def parse(cls, text: str, path: str = "after") -> "Cursor":
        """The cursor a client sent back; ValidationError naming ``path`` when it is not one."""
        m = _CURSOR_RE.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise ValidationError(path, "expected a cursor from this feed (digits-digits, e.g. 742-17)")
        # Length first: int() of thousands of digits is slow, and refused past 4300 of them.
        if any(len(part.lstrip("0")) > 19 or int(part.lstrip("0") or "0") >= 2 ** 63 for part in m.groups()):
            raise ValidationError(path, "cursor out of range (each part is below 2**63)")
        xid, seq = int(m.group(1)), int(m.group(2))
        return cls(xid, seq)


START = Cursor(0, 0)


@dataclasses.dataclass(frozen=True)
class FeedItem:
    """One change as readers see it."""

    cursor: Cursor
    kind: str
    op: str
    entity_id: uuid.UUID
    camera_id: str
    event_type: str | None
    time: _dt.datetime | None
    summary: dict
    logged_at: _dt.datetime                     # when the row was written, inside its transaction
    committed_at: _dt.datetime | None = None    # when that transaction committed; None: not known

    def as_dict(self) -> dict[str, Any]:
        out = {"cursor": str(self.cursor), "kind": self.kind, "op": self.op, "id": self.entity_id.hex,
               "camera_id": self.camera_id, "summary": self.summary,
               "logged_at": instant_to_ms(self.logged_at),
               "committed_at": instant_to_ms(self.committed_at) if self.committed_at else None}
        if self.event_type is not None:
            out["event_type"] = self.event_type
        if self.time is not None:
            out["time"] = instant_to_ms(self.time)
        return out


@dataclasses.dataclass(frozen=True)
class FeedFilter:
    """What one reader wants: cameras, event types (``*`` wildcards) and kinds; empty = all."""

    cameras: frozenset[str] = frozenset()
    event_types: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()

    @classmethod
    def of(cls, cameras: Iterable[str] = (), event_types: Iterable[str] = (),
           kinds: Iterable[str] = ()) -> "FeedFilter":
        kinds = frozenset(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValidationError("kind", f"unknown kind {sorted(unknown)[0]!r} (known: {', '.join(KINDS)})")
        # An event type without a namespace means meteorpi's, as on the wire.
        types = tuple(t if ":" in t else f"meteorpi:{t}" for t in event_types)
        return cls(frozenset(cameras), types, kinds)

    def matches(self, item: FeedItem) -> bool:
        if self.kinds and item.kind not in self.kinds:
            return False
        if self.cameras and item.camera_id not in self.cameras:
            return False
        if self.event_types:
            if item.event_type is None:
                return False
            return any(fnmatch.fnmatchcase(item.event_type, pattern) for pattern in self.event_types)
        return True

    def matches_any(self, batch: Batch) -> bool:
        """Whether any item of ``batch`` matches; the batch's camera and
        kind sets answer first, so a filter on cameras the batch does not touch costs one lookup."""
        if self.kinds and self.kinds.isdisjoint(batch.kinds):
            return False
        if self.cameras and self.cameras.isdisjoint(batch.cameras):
            return False
        return any(self.matches(item) for item in batch.items)


class Batch:
    """Items the listener read at once, with the sets a filter is checked against first."""

    __slots__ = ("items", "cameras", "kinds")

    def __init__(self, items: list[FeedItem]):
        self.items = items
        self.cameras = {item.camera_id for item in items}
        self.kinds = {item.kind for item in items}


@dataclasses.dataclass(frozen=True)
class FeedPage:
    items: list[FeedItem]
    cursor: Cursor          # after the last row read (filtered out or not)
    more: bool              # the page was full: read again at once
    pending: bool           # rows of still-running transactions exist beyond ``cursor``


class FeedStore:
    """Mixed into MeteorDatabase: reading the change feed (on a pooled connection)."""

    @retry_stale
    def feed_read(self, after: Cursor = START, limit: int = 500) -> FeedPage:
        """Up to ``limit`` rows after ``after``, in (xid, seq) order, of ended transactions only."""
        with self.transaction() as cur:
            return read_page(cur, after, limit)

    @retry_stale
    def feed_end(self) -> Cursor:
        """The cursor just after the newest row a reader can see now: "from here on"."""
        with self.transaction() as cur:
            return end_of(cur)

    @retry_stale
    def feed_horizon(self) -> Cursor | None:
        """The newest row retention has removed (a cursor before it may have missed rows)."""
        with self.transaction() as cur:
            return horizon_of(cur)

    @retry_stale
    def feed_prune(self, retention_days: float, now: _dt.datetime | None = None) -> int:
        """Delete rows logged more than ``retention_days`` ago; how many went."""
        with self.transaction() as cur:
            return prune(cur, retention_days, now)


# The reads themselves take any DB-API cursor: the pool's (FeedStore above), or the feed
# listener's own connection (feed_hub.py), which must not wait through the pool.

def read_page(cur, after: Cursor, limit: int) -> FeedPage:
    """Up to ``limit`` rows after ``after``, in (xid, seq) order, of ended transactions only."""
    params = {"xid": after.xid, "seq": after.seq, "limit": limit}
    cur.execute(READ_PAGE, params)
    rows = cur.fetchall()
    items = [feed_item(row[:-1]) for row in rows]
    if rows:
        pending = rows[0][-1]
    else:  # no row to carry the answer: ask on its own
        cur.execute(PENDING_AFTER, params)
        pending = cur.fetchone()[0]
    return FeedPage(items, items[-1].cursor if items else after, len(items) == limit, pending)


def end_of(cur) -> Cursor:
    """The cursor just after the newest row a reader can see now."""
    cur.execute(SELECT_END)
    row = cur.fetchone()
    if row is None:
        cur.execute(SELECT_HORIZON)
        row = cur.fetchone()
    return Cursor(*row) if row else START


def horizon_of(cur) -> Cursor | None:
    """The newest row retention has removed, if any."""
    cur.execute(SELECT_HORIZON)
    row = cur.fetchone()
    return Cursor(*row) if row else None


def prune(cur, retention_days: float, now: _dt.datetime | None = None) -> int:
    """Delete rows logged more than ``retention_days`` ago (in the caller's transaction: the
    horizon moves with the rows); how many went."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    cur.execute(PRUNE_HORIZON, {"before": now - _dt.timedelta(days=retention_days)})
    cur.execute(PRUNE_ROWS)
    return cur.rowcount


def feed_item(row) -> FeedItem:
    """The item of a row of ``SELECT_AFTER``."""
    xid, seq, kind, op, entity_id, camera_id, event_type, event_time, summary, logged_at, committed_at = row
    return FeedItem(Cursor(xid, seq), kind, op, entity_id, camera_id, event_type,
                    event_time.astimezone(_dt.timezone.utc) if event_time else None, summary,
                    logged_at.astimezone(_dt.timezone.utc),
                    committed_at.astimezone(_dt.timezone.utc) if committed_at else None)
