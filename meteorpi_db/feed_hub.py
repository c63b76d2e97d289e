"""One listener per process: LISTEN for the feed's notifications, read new rows once, share them.

Why one per process and not one per reader: a server may hold hundreds of open streams; if each
woke and queried on every commit, a busy night would cost hundreds of queries per import. Here a
thread with its own autocommit connection waits for ``meteorpi_feed`` notifications, reads what
is new with one query per wake, appends it to a bounded ring of recent items and wakes readers,
who filter in Python. A reader whose cursor has fallen out of the ring (a client that was away,
or reads slowly) reads its backlog from the database instead: memory stays bounded whatever the
readers do, and nobody loses anything.

When PostgreSQL goes away the thread reconnects with back-off and reads on from its cursor.
A poll every ``poll_seconds`` backs the notifications up (a notification can be missed while
reconnecting, and a transaction that held the snapshot back may end without notifying).
"""
from __future__ import annotations

import collections
import logging
import select
import threading
import time
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions

from .feed import START, Cursor, FeedFilter, FeedItem

if TYPE_CHECKING:
    from .database import MeteorDatabase

log = logging.getLogger("meteorpi.feed")
CHANNEL = "meteorpi_feed"


class FeedResult:
    """What a read gives a reader: items, its new cursor, and whether it has caught up."""

    __slots__ = ("items", "cursor", "up_to_date", "must_refetch")

    def __init__(self, items: list[FeedItem], cursor: Cursor, up_to_date: bool, must_refetch: bool = False):
        self.items, self.cursor, self.up_to_date, self.must_refetch = items, cursor, up_to_date, must_refetch


class FeedHub:
    """The process's view of the feed. ``start()`` once; readers call ``read`` and ``wait``."""

    def __init__(self, db: "MeteorDatabase", ring_size: int = 10000, poll_seconds: float = 5.0,
                 page: int = 500, retention_days: float = 30.0, prune_every_seconds: float = 3600.0):
        self.db = db
        self.ring: collections.deque[FeedItem] = collections.deque()
        self.ring_size = ring_size
        self.poll_seconds = poll_seconds
        self.page = page
        self.retention_days = retention_days
        self.prune_every_seconds = prune_every_seconds
        self.changed = threading.Condition()
        self.cursor: Cursor | None = None      # the hub's own position (None until started)
        self.ring_start: Cursor | None = None  # items after this are all in the ring
        self.horizon: Cursor | None = None
        self.connected = False
        self.closing = False                    # the process is stopping: streams end now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None

    # -- life -----------------------------------------------------------------------------
    def start(self) -> "FeedHub":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="meteorpi-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close_readers(self) -> None:
        """End every stream and long-poll of this process soon (a graceful server stop must not
        wait for streams that would run for an hour). Safe to call from a signal handler: the
        wake-up happens on a thread of its own, never under a lock the handler interrupted."""
        self.closing = True

        def wake() -> None:
            with self.changed:
                self.changed.notify_all()
        threading.Thread(target=wake, daemon=True).start()

    def ready(self, timeout: float = 10.0) -> bool:
        """Wait until the hub knows where the feed ends (for tests and start-up)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.cursor is None and time.monotonic() < deadline:
                self.changed.wait(0.05)
            return self.cursor is not None

    def _run(self) -> None:
        backoff = 0.2
        last_prune = 0.0
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = 0.2
                if self.cursor is None:
                    end = self.db.feed_end()
                    with self.changed:
                        self.cursor = self.ring_start = end
                        self.changed.notify_all()
                pending = self._catch_up()
                while not self._stop.is_set():
                    if time.monotonic() - last_prune > self.prune_every_seconds:
                        last_prune = time.monotonic()
                        self._prune()
                    self._wait_for_notify(0.05 if pending else self.poll_seconds)
                    pending = self._catch_up()
            except Exception as e:  # PostgreSQL away, connection lost: back off, reconnect
                self.connected = False
                self._disconnect()
                if self._stop.is_set():
                    break
                log.warning("feed listener: %s; retrying in %.1f s", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self._disconnect()

    def _connect(self) -> None:
        self._disconnect()
        conn = psycopg2.connect(self.db.pool.dsn, connect_timeout=10, application_name="meteorpi-feed")
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        self._conn = conn
        self.connected = True

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _wait_for_notify(self, timeout: float) -> bool:
        """True when a notification came within ``timeout`` seconds."""
        conn = self._conn
        if conn.notifies:
            conn.notifies.clear()
            return True
        ready, _, _ = select.select([conn], [], [], timeout)
        if ready:
            conn.poll()
        got = bool(conn.notifies)
        conn.notifies.clear()
        return got

    def _catch_up(self) -> bool:
        """Read every new row into the ring (one query per page); whether rows are pending."""
        while True:
            page = self.db.feed_read(self.cursor, self.page)
            if page.items:
                with self.changed:
                    for item in page.items:
                        if len(self.ring) >= self.ring_size:
                            # Readers at or before the dropped item now read from the database.
                            self.ring_start = self.ring.popleft().cursor
                        self.ring.append(item)
                    self.cursor = page.cursor
                    self.changed.notify_all()
            if not page.more:
                return page.pending

    def _prune(self) -> None:
        try:
            self.db.feed_prune(self.retention_days)
        finally:
            self.horizon = self.db.feed_horizon()

    # -- readers --------------------------------------------------------------------------
    def must_refetch(self, after: Cursor) -> bool:
        """Rows after ``after`` may have been deleted by retention: the reader must start over."""
        horizon = self.horizon
        return horizon is not None and after < horizon

    def read(self, after: Cursor, wanted: FeedFilter, limit: int = 500) -> FeedResult:
        """What ``after`` has not seen yet, filtered; from the ring when it reaches back that far."""
        if self.must_refetch(after):
            return FeedResult([], after, False, must_refetch=True)
        with self.changed:
            cursor, ring_start = self.cursor, self.ring_start
            if cursor is not None and after >= ring_start:
                if after >= cursor:
                    return FeedResult([], after, True)
                out, last = [], after
                for item in self.ring:
                    if item.cursor <= after:
                        continue
                    last = item.cursor
                    if wanted.matches(item):
                        out.append(item)
                        if len(out) >= limit:
                            return FeedResult(out, last, last >= cursor)
                return FeedResult(out, cursor, True)
        return self._read_database(after, wanted, limit)

    def _read_database(self, after: Cursor, wanted: FeedFilter, limit: int) -> FeedResult:
        out, cursor = [], after
        for _ in range(20):  # bounded work per call; the reader calls again
            page = self.db.feed_read(cursor, self.page)
            out.extend(item for item in page.items if wanted.matches(item))
            cursor = page.cursor
            if not page.more or len(out) >= limit:
                break
        up_to_date = self.cursor is not None and cursor >= self.cursor
        return FeedResult(out, cursor, up_to_date)

    def sync(self, timeout: float = 2.0) -> bool:
        """Wait until the hub holds everything committed before this call (one query, per
        request, not per commit): "up to date" then includes what the caller just imported."""
        end = self.db.feed_end()
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.cursor is None or self.cursor < end:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self.changed.wait(left)
        return True

    def wait(self, after: Cursor, timeout: float) -> bool:
        """Block until the feed has moved past ``after`` (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self._stop.is_set() and not self.closing:
                if self.cursor is not None and self.cursor > after:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return False

