"""One listener per process: LISTEN for the feed's notifications, read new rows once, share them.

Why one per process and not one per reader: a server may hold hundreds of open streams; if each
woke and queried on every commit, a busy night would cost hundreds of queries per import. Here a
thread with its own autocommit connection waits for ``meteorpi_feed`` notifications, reads what
is new with one query per wake, appends it to a bounded ring of recent items and hands it on.
A reader whose cursor has fallen out of the ring (a client that was away, or reads slowly) reads
its backlog from the database instead: memory stays bounded whatever the readers do, and nobody
loses anything.

Why readers ``subscribe`` instead of waiting for any change: open streams share the worker's CPU
with imports. Waking every stream on every commit to filter out what it does not want, each
scanning the ring, cost imports about half their rate with 500 streams open (bench
``feed_subscribers_import_ratio``; py-spy put a third of a worker's CPU in ``read``). So the
listener reads at most once per ``coalesce_seconds`` while commits keep coming (a burst of
imports costs one query, not one per commit), checks each subscriber's filter against what it
read (camera and kind sets first, so a stream on a quiet camera costs a set lookup), wakes only
those with something to send, and moves the others' cursors past what they did not want: an idle
stream is not woken until its heartbeat is due.

Why the listener is a real OS thread with a connection of its own, also under ``meteorpi
serve``'s gevent workers (where ``threading`` makes greenlets): as a greenlet it waited behind
the worker's busy import greenlets at every step — woken by the loop only when they yielded,
then its read waiting for a pooled connection and yielding twice more on psycogreen's round
trips. With 16 exporters importing, that put the read at 20 ms median and over 150 ms at the
99th percentile after commit (bench ``feed_latency_p99_ms``). Its own thread wakes when the
notification arrives and reads on its own asynchronous connection (feed_listener.py says why
asynchronous), so the read takes a few ms; it then hands the rows to the readers' side through
``green.poster`` (``run_callback_threadsafe``: the worker's loop applies them when it next
turns, without scheduling a greenlet for it). Readers' state (ring, cursor, subscriptions,
their events) is only ever touched on the readers' side, under ``changed``: gevent's locks and
events belong to the worker's thread. Outside gevent the same thread hands on directly.

When PostgreSQL goes away the thread reconnects with back-off and reads on from its own
position (``_position``; ``cursor`` is what the readers have been given). A poll every
``poll_seconds`` backs the notifications up (a notification can be missed while reconnecting,
and a transaction that held the snapshot back may end without notifying).
"""
from __future__ import annotations

import bisect
import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from . import green
from .feed import Batch, Cursor, FeedFilter, FeedItem, end_of, horizon_of, prune, read_page
from .feed_listener import ListenerConnection, ListenerCursor

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
    """The process's view of the feed. ``start()`` once; servers' readers ``subscribe``, a lone
    reader may call ``read`` and ``wait``."""

    def __init__(self, db: "MeteorDatabase", ring_size: int = 10000, poll_seconds: float = 5.0,
                 page: int = 500, retention_days: float = 30.0, prune_every_seconds: float = 3600.0,
                 coalesce_seconds: float = 0.02):
        self.db = db
        self.ring: collections.deque[FeedItem] = collections.deque()
        self.ring_size = ring_size
        self.poll_seconds = poll_seconds
        # The listener reads at most this often while notifications keep coming: commits in a
        # burst share one query (and one round of wakes); a commit after a quiet spell is read
        # at once. Adds at most this much to the feed's latency.
        self.coalesce_seconds = coalesce_seconds
        self.page = page
        self.retention_days = retention_days
        self.prune_every_seconds = prune_every_seconds
        self.changed = threading.Condition()
        self.cursor: Cursor | None = None      # the hub's own position (None until started)
        self.ring_start: Cursor | None = None  # items after this are all in the ring
        self.horizon: Cursor | None = None
        self.connected = False
        self.closing = False                    # the process is stopping: streams end now
        self.subscriptions: set[Subscription] = set()
        self._last_read = float("-inf")
        self._stop = threading.Event()          # for readers, on the readers' side
        self._stopping = False                  # for the listener (which may be a native thread)
        self._thread: green.NativeThread | None = None
        self._listener: ListenerConnection | None = None
        self._position: Cursor | None = None    # the listener's: what it has read
        self._inbox: collections.deque[tuple[list[FeedItem], Cursor]] = collections.deque()
        self._in_loop = False                   # whether readers' side is a gevent loop
        self._post = None
        self._wake_r = self._wake_w = -1

    # -- life -----------------------------------------------------------------------------
    def start(self) -> "FeedHub":
        if self._thread is None:
            self._in_loop, self._post = green.under_gevent(), green.poster()
            self._wake_r, self._wake_w = os.pipe()
            self._thread = green.NativeThread(self._run, "meteorpi-feed")
        return self

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        self._wake_everyone()
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            if self._thread.join(timeout=10):  # else it may still select on the pipe: leave it
                os.close(self._wake_r)
                os.close(self._wake_w)
            self._thread = None

    def close_readers(self) -> None:
        """End every stream and long-poll of this process soon (a graceful server stop must not
        wait for streams that would run for an hour). Safe to call from a signal handler: the
        wake-up happens on a thread of its own, never under a lock the handler interrupted."""
        self.closing = True

        threading.Thread(target=self._wake_everyone, daemon=True).start()

    def _wake_everyone(self) -> None:
        with self.changed:
            self.changed.notify_all()
            for subscription in self.subscriptions:
                subscription.woken.set()

    def ready(self, timeout: float = 10.0) -> bool:
        """Wait until the hub knows where the feed ends (for tests and start-up)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.cursor is None and time.monotonic() < deadline:
                self.changed.wait(0.05)
            return self.cursor is not None

    # -- the listener's thread: touches no reader's state but through ``_publish`` ------------
    def _run(self) -> None:
        backoff = 0.2
        last_prune = 0.0
        while not self._stopping:
            try:
                self._listener = ListenerConnection(self.db.pool.dsn, CHANNEL, self._wake_r)
                self.connected = True
                backoff = 0.2
                if self._position is None:
                    self._position = end_of(ListenerCursor(self._listener))
                    self._publish([], self._position)
                pending = self._catch_up()
                while not self._stopping:
                    if time.monotonic() - last_prune > self.prune_every_seconds:
                        last_prune = time.monotonic()
                        self._prune()
                    self._listener.wait(self.coalesce_seconds if pending else self.poll_seconds)
                    self._coalesce()
                    pending = self._catch_up()
            except Exception as e:  # PostgreSQL away, connection lost: back off, reconnect
                self.connected = False
                self._disconnect()
                if self._stopping:
                    break
                log.warning("feed listener: %s; retrying in %.1f s", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
        self._disconnect()

    def _disconnect(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _pause(self, seconds: float) -> None:
        """Sleep on this thread (not gevent's), ended early by ``stop`` (whose byte stays in the
        pipe: every wait after it ends at once too)."""
        green.real_select()([self._wake_r], [], [], max(seconds, 0))

    def _coalesce(self) -> None:
        """Let a burst of commits gather: read no sooner than ``coalesce_seconds`` after the last
        read, then drop the notifications that came meanwhile (the read about to happen covers
        their commits, so they must not cause another)."""
        left = self._last_read + self.coalesce_seconds - time.monotonic()
        if left > 0:
            self._pause(left)
        self._listener.take_notifications()

    def _catch_up(self) -> bool:
        """Read every new row and publish it (one query per page); whether rows are pending."""
        while True:
            self._last_read = time.monotonic()
            page = read_page(ListenerCursor(self._listener), self._position, self.page)
            if page.items:
                self._position = page.cursor
                self._publish(page.items, page.cursor)
            if not page.more:
                return page.pending

    def _prune(self) -> None:
        with self._listener.transaction() as conn:
            cur = ListenerCursor(conn)
            prune(cur, self.retention_days)
            self.horizon = horizon_of(cur)

    # -- handing on: the readers' side ---------------------------------------------------------
    def _publish(self, items: list[FeedItem], cursor: Cursor) -> None:
        """Hand what the listener read to the readers, in order: at once outside gevent; under
        gevent, in the worker's loop as soon as it turns (readers' locks and events are gevent's,
        which belong to that thread)."""
        self._inbox.append((items, cursor))
        self._post(self._take_inbox)

    def _take_inbox(self, wait: bool = False) -> None:
        # In the loop a callback must not block. No greenlet holds ``changed`` across a switch,
        # so it is free here; should that ever change, a greenlet takes the inbox instead.
        if not self.changed.acquire(blocking=wait or not self._in_loop):
            threading.Thread(target=self._take_inbox, args=(True,), daemon=True).start()
            return
        try:
            while self._inbox:
                items, cursor = self._inbox.popleft()
                self._apply(items, cursor)
            self.changed.notify_all()
        finally:
            self.changed.release()

    def _apply(self, items: list[FeedItem], cursor: Cursor) -> None:
        """Under ``self.changed``: the ring takes ``items``, the hub moves to ``cursor``."""
        if self.cursor is None:  # the listener's start: where the feed ended then
            self.cursor = self.ring_start = cursor
            return
        for item in items:
            if len(self.ring) >= self.ring_size:
                # Readers at or before the dropped item now read from the database.
                self.ring_start = self.ring.popleft().cursor
            self.ring.append(item)
        before, self.cursor = self.cursor, cursor
        self._hand_on(before, items)

    def _hand_on(self, before: Cursor, items: list[FeedItem]) -> None:
        """Wake the subscribers ``items`` has something for; move the others past them.
        Under ``self.changed``. Only subscribers that had read up to ``before`` are judged: one
        still behind reads through the ring by itself (its ``wait`` returns at once)."""
        batch = Batch(items)
        for subscription in self.subscriptions:
            if subscription.cursor != before:
                continue
            if subscription.wanted.matches_any(batch):
                subscription.woken.set()
            else:
                subscription.cursor = self.cursor

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
                # Straight to the first item after ``after`` (a reader is usually near the end).
                ring = self.ring
                for index in range(bisect.bisect_right(ring, after, key=_cursor_of), len(ring)):
                    item = ring[index]
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

    def subscribe(self, after: Cursor, wanted: FeedFilter) -> "Subscription":
        """A reader of items matching ``wanted`` after ``after``, woken only when one comes;
        ``close()`` it (or use it as a context manager) when the reader goes."""
        subscription = Subscription(self, after, wanted)
        with self.changed:
            self.subscriptions.add(subscription)
        return subscription

    def wait(self, after: Cursor, timeout: float) -> bool:
        """Block until the feed has moved past ``after`` (True) or ``timeout`` passed (False).
        Any change wakes it: for one reader (``meteorpi feed``); servers ``subscribe``."""
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


def _cursor_of(item: FeedItem) -> Cursor:
    return item.cursor


class Subscription:
    """One reader's place in the feed (a stream, a long-poll): ``read`` what is new, ``wait``
    until the listener has read something it wants (or ``timeout`` for a heartbeat).

    ``cursor`` moves when the reader reads, and when the listener reads items none of which it
    wants: either way, nothing before it is for this reader. Changed under the hub's lock."""

    def __init__(self, hub: FeedHub, after: Cursor, wanted: FeedFilter):
        self.hub, self.cursor, self.wanted = hub, after, wanted
        self.woken = threading.Event()

    def read(self, limit: int = 500) -> FeedResult:
        """What this reader has not seen yet (``FeedHub.read`` from its cursor)."""
        hub = self.hub
        with hub.changed:
            self.woken.clear()  # a wake from now on is for items this read may not include
            after = self.cursor
        result = hub.read(after, self.wanted, limit)
        with hub.changed:
            if result.cursor > self.cursor:
                self.cursor = result.cursor
        return result

    def wait(self, timeout: float) -> bool:
        """True when there may be something to read: the listener woke it, or it has not read
        up to where the listener is; False after ``timeout`` or when the hub is stopping."""
        hub = self.hub
        with hub.changed:
            if hub.closing or hub._stop.is_set():
                return False
            if hub.cursor is not None and self.cursor < hub.cursor:
                return True
        return self.woken.wait(timeout) and not hub.closing and not hub._stop.is_set()

    def close(self) -> None:
        with self.hub.changed:
            self.hub.subscriptions.discard(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
