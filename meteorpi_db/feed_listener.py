"""The feed listener's own connection: LISTEN, and the listener's reads, on one asynchronous
psycopg2 connection that its thread polls with the real ``select``.

Why its own connection, not the pool's: a listener waiting for a pooled connection while
imports hold them all would add their time to every item's delay. Why asynchronous: under
``meteorpi serve`` the listener is a real OS thread (feed_hub.py says why), and psycogreen's
wait callback is process-wide: a synchronous connection would wait through gevent, on a hub of
the listener's thread. An asynchronous connection never calls the wait callback; this thread
waits in ``select`` itself, under or outside gevent alike. Every wait is bounded.

Asynchronous connections are in autocommit; ``transaction`` sends BEGIN and COMMIT itself.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import psycopg2
import psycopg2.extensions

from . import green

CONNECT_SECONDS = 10    # as the pool's connect_timeout
STATEMENT_SECONDS = 30  # a feed read takes milliseconds; past this the server is gone


class ListenerConnection:
    """One asynchronous connection LISTENing on ``channel``. ``wake_fd`` (a pipe's read end) ends
    every wait early once readable: the hub writes to it when it stops."""

    def __init__(self, dsn: str, channel: str, wake_fd: int):
        self.dsn, self.channel, self.wake_fd = dsn, channel, wake_fd
        self._select = green.real_select()
        self.conn = psycopg2.connect(dsn, async_=True, application_name="meteorpi-feed")
        try:
            self._poll(time.monotonic() + CONNECT_SECONDS, "connecting")
            self.execute(f"LISTEN {channel}")
        except BaseException:
            self.close()
            raise

    def execute(self, sql: str, params: dict | None = None):
        """Run one statement to its end; the cursor, to fetch from."""
        cur = self.conn.cursor()
        cur.execute(sql, params)
        self._poll(time.monotonic() + STATEMENT_SECONDS, "a feed query")
        return cur

    @contextlib.contextmanager
    def transaction(self) -> Iterator["ListenerConnection"]:
        """BEGIN ... COMMIT around the block (a failure closes the connection: the listener
        reconnects, and the server rolls back what the closed connection began)."""
        self.execute("BEGIN")
        yield self
        self.execute("COMMIT")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification (True) or a wake; either way return
        early. Notifications already received count at once, and are taken."""
        if not self.conn.notifies:
            ready, _, _ = self._select([self.conn, self.wake_fd], [], [], max(timeout, 0))
            if self.conn in ready:
                self.conn.poll()
        return self.take_notifications()

    def take_notifications(self) -> bool:
        """Whether notifications have come since last asked (reading what has arrived)."""
        self._poll(time.monotonic() + STATEMENT_SECONDS, "notifications")
        got = bool(self.conn.notifies)
        self.conn.notifies.clear()
        return got

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg2.Error:
            pass

    def _poll(self, deadline: float, what: str) -> None:
        while True:
            state = self.conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise psycopg2.OperationalError(f"the database did not answer {what} in time")
            if state == psycopg2.extensions.POLL_READ:
                self._select([self.conn], [], [], left)
            else:
                self._select([], [self.conn], [], left)


class ListenerCursor:
    """A DB-API cursor's ``execute``/``fetchone``/``fetchall``/``rowcount`` over a
    ``ListenerConnection``, for the feed's queries (feed.py), which take any cursor."""

    def __init__(self, conn: ListenerConnection):
        self._conn, self._cur = conn, None

    def execute(self, sql: str, params: dict | None = None) -> None:
        self._cur = self._conn.execute(sql, params)

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self):
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount
