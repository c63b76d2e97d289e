"""What changes under gevent: real OS threads for work that blocks in C (fsyncs, password
hashes), and a bound on connecting to PostgreSQL.

``meteorpi serve`` runs gevent workers, which monkey-patch ``threading``: a standard
``ThreadPoolExecutor``'s threads then become greenlets on the worker's one OS thread, and an
fsync or a 0.1 s scrypt hash in one of them would hold up every other request of the worker.
gevent's own executor runs real threads while the waiting greenlet yields; fsync and hashlib
release the GIL, so that work runs beside the requests. Outside gevent (the exporter, the CLI,
tests, other WSGI servers) these are the standard library's threads and plain calls.
"""
from __future__ import annotations

import contextlib
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable, ContextManager, TypeVar

T = TypeVar("T")


def under_gevent() -> bool:
    """Whether this process runs on gevent with ``threading`` monkey-patched."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def executor(max_workers: int, name: str) -> Executor:
    """A pool of ``max_workers`` real threads (gevent's native pool under gevent)."""
    if under_gevent():
        from gevent.threadpool import ThreadPoolExecutor as NativeThreadPoolExecutor
        return NativeThreadPoolExecutor(max_workers)
    return ThreadPoolExecutor(max_workers, thread_name_prefix=name)


def call(fn: Callable[..., T], *args) -> T:
    """``fn(*args)``, in a real thread under gevent (only the calling greenlet waits)."""
    if not under_gevent():
        return fn(*args)
    import gevent
    return gevent.get_hub().threadpool.apply(fn, args)


class Expired(Exception):
    """A ``deadline`` passed."""


def deadline(seconds: float) -> ContextManager:
    """Under gevent, ``Expired`` if the block takes longer than ``seconds``; elsewhere nothing.

    For psycopg2.connect: psycogreen makes it connect asynchronously, and libpq applies
    ``connect_timeout`` only to blocking connects, so a database that accepts the connection
    and then says nothing would hold a request for ever."""
    if not under_gevent():
        return contextlib.nullcontext()
    import gevent
    return gevent.Timeout(seconds, Expired)
