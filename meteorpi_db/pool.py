"""Connections and transactions: a bounded, thread-safe, fork-aware pool of psycopg2 connections.

``with pool.transaction() as cur:`` commits on success and rolls back on any exception: a public
method that writes is one such block, all or nothing. Connection failures become
``StorageUnavailable`` (HTTP 503 upstream). When a pooled connection turns out to be dead (the
server restarted), every idle connection is dropped, since they died with it, and the caller may
retry at once on a fresh one: the app recovers by itself once PostgreSQL is back.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from . import green
from .errors import ConfigError, StorageUnavailable

log = logging.getLogger("meteorpi.db")
CONNECT_TIMEOUT_SECONDS = 10
POOL_WAIT_SECONDS = 30
psycopg2.extras.register_uuid()
T = TypeVar("T")


class StaleConnection(StorageUnavailable):
    """A connection taken from the pool had died; a retry on a new one may well succeed."""


class ConnectionPool:
    """At most ``maxconn`` connections per process; waiting callers block (bounded) for one."""

    def __init__(self, dsn: str, maxconn: int = 20):
        self.dsn = dsn
        self.maxconn = maxconn
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: list = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.maxconn)

    def _connect(self):
        try:
            with green.deadline(CONNECT_TIMEOUT_SECONDS):
                conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                        application_name="meteorpi")
        except psycopg2.OperationalError as e:
            raise StorageUnavailable(f"database unreachable: {str(e).strip().splitlines()[0]}", e) from e
        except psycopg2.ProgrammingError:
            # libpq could not parse the DSN; its message quotes it, password and all, so it is
            # neither shown nor chained (a URL from the configuration was checked at load).
            raise ConfigError("database URL: not a PostgreSQL URL or key=value connection string") from None
        except green.Expired as e:
            raise StorageUnavailable(f"database unreachable: no answer within {CONNECT_TIMEOUT_SECONDS}s", e) from e
        return conn

    @contextmanager
    def connection(self) -> Iterator:
        """A connection for the duration of the block (not a transaction; see ``transaction``)."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use
            self._reset()
        if not self._slots.acquire(timeout=POOL_WAIT_SECONDS):
            raise StorageUnavailable(f"no database connection free after {POOL_WAIT_SECONDS}s")
        conn, reused = None, False
        try:
            with self._lock:
                if self._idle:
                    conn, reused = self._idle.pop(), True
            if conn is None:
                conn = self._connect()
            yield conn, reused
        finally:
            if conn is not None:
                if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    _close(conn)
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: commit when the block ends, roll back if it raises."""
        with self.connection() as (conn, reused):
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except (psycopg2.DatabaseError, psycopg2.InterfaceError) as e:
                if not _is_connection_error(e, conn):
                    _rollback(conn)
                    raise
                _close(conn)
                self.discard_idle()
                cls = StaleConnection if reused else StorageUnavailable
                raise cls(f"database connection lost: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", e) from e
            except BaseException:
                _rollback(conn)
                raise

    def discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)

    def close(self) -> None:
        self.discard_idle()


def _is_connection_error(e: Exception, conn) -> bool:
    if isinstance(e, psycopg2.InterfaceError) or conn.closed:
        return True
    # A server killed mid-query (pg_ctl stop -m immediate) surfaces as the bare DatabaseError
    # "server closed the connection unexpectedly"; its subclasses (IntegrityError, ...) are not.
    if not isinstance(e, psycopg2.OperationalError) and type(e) is not psycopg2.DatabaseError:
        return False
    # Errors with a SQLSTATE are the server speaking (e.g. serialization failure): not lost.
    return getattr(e, "pgcode", None) is None or e.pgcode.startswith(("08", "57P"))


def _rollback(conn) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg2.Error:
        _close(conn)


def _close(conn) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass


def retry_stale(method: Callable[..., T]) -> Callable[..., T]:
    """Run a public database method again, once, if it failed only on a dead pooled connection
    or lost a serialization race; every such method is one transaction, so a rerun is safe."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        for attempt in range(3):
            try:
                return method(*args, **kwargs)
            except StaleConnection:
                if attempt:
                    raise
            except (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected):
                if attempt == 2:
                    raise
        return method(*args, **kwargs)
    return wrapper
