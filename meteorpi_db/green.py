"""What changes under gevent: real OS threads for work that blocks in C (fsyncs, password
hashes) or must not wait for greenlets (the feed's listener), and a bound on connecting to
PostgreSQL.

``meteorpi serve`` runs gevent workers, which monkey-patch ``threading``: a standard
``ThreadPoolExecutor``'s threads then become greenlets on the worker's one OS thread, and an
fsync or a 0.1 s scrypt hash in one of them would hold up every other request of the worker.
gevent's own executor runs real threads while the waiting greenlet yields; fsync and hashlib
release the GIL, so that work runs beside the requests. Outside gevent (the exporter, the CLI,
tests, other WSGI servers) these are the standard library's threads and plain calls.
"""
from __future__ import annotations

import contextlib
import select
import sys
import threading
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


def start(fn: Callable[..., T], *args):
    """Under gevent, ``fn(*args)`` started in a real thread: a handle for ``finish``, while the
    calling greenlet goes on. Elsewhere None: the caller runs ``fn`` itself (there is no loop
    to keep free)."""
    if not under_gevent():
        return None
    import gevent
    return gevent.get_hub().threadpool.spawn(fn, *args)


def finish(started) -> T:
    """The result of a ``start``ed call (its exception raised here). Interrupted meanwhile (a
    deadline), it still waits for the call to end before raising: the call may be using a file
    the caller closes next."""
    try:
        return started.get()
    except BaseException:
        while not started.ready():
            try:
                started.wait()
            except BaseException:
                pass
        raise


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


class NativeThread:
    """A real OS thread even under gevent, which ``join`` waits for (only the calling greenlet
    waits). For work that must not wait for the worker's greenlets to yield (the feed's
    listener): it blocks in real system calls and must touch no gevent object of the worker's
    thread, whose hub it cannot use (gevent objects belong to one thread's loop)."""

    def __init__(self, target: Callable[[], None], name: str):
        if under_gevent():
            from gevent.threadpool import ThreadPool
            self._pool = ThreadPool(1)
            self._done = self._pool.spawn(target)
        else:
            self._pool = None
            self._thread = threading.Thread(target=target, name=name, daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> bool:
        """Whether the thread ended within ``timeout`` seconds."""
        if self._pool is None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        ended = self._done.wait(timeout) is not None or self._done.ready()
        if ended:
            self._pool.kill()
        return ended


def real_select() -> Callable:
    """``select.select`` itself, not gevent's (which waits on the calling thread's hub)."""
    if under_gevent():
        from gevent import monkey
        return monkey.get_original("select", "select")
    return select.select


def poster() -> Callable[..., None]:
    """A function that runs ``fn(*args)`` on the thread that called ``poster``, called from any
    thread. Under gevent: queued on this thread's loop (``run_callback_threadsafe``), so it runs
    as soon as the loop turns, without waiting for a greenlet to be scheduled; ``fn`` then runs
    in the loop itself and must not block. Elsewhere: called at once, in the caller's thread."""
    if not under_gevent():
        return lambda fn, *args: fn(*args)
    import gevent
    loop = gevent.get_hub().loop
    return loop.run_callback_threadsafe
