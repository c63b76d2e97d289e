"""One exporter per node: the lock that keeps two `meteorpi export run` from draining one queue.

A camera node typically runs `meteorpi export run` as a service and, now and then, somebody
(or a cron job still running last hour's `--once`) starts another. Nothing would be lost (the
archive's imports are idempotent) but both would send every task, doubling the traffic on a
thin link, and their failure counts would mix. So the exporter takes an exclusive ``flock`` on
``exporter.lock`` in the node's file store (the store and its database belong to one node). The
kernel drops the lock when its holder dies, however it dies (SIGKILL, power cut), so a crashed
exporter never blocks the next one. The holder writes its pid into the file so that the one
refused can say who is in the way.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from typing import Iterator

from meteorpi_db import FileStoreError, MeteorDatabase

from .errors import ExporterBusy

log = logging.getLogger("meteorpi.exporter")
LOCK_FILE = "exporter.lock"
POLL_SECONDS = 1.0


@contextmanager
def exporter_lock(db: MeteorDatabase, wait: threading.Event | None = None) -> Iterator[bool]:
    """Hold this node's exporter lock for the block; yields whether it is held.

    With ``wait`` None a lock held elsewhere raises ExporterBusy at once (`export run --once`:
    the caller should not queue behind a long upload). Otherwise it waits, polling, until the
    lock is free (True) or ``wait`` is set (False: stopped before it ever ran).
    """
    path = db.file_store.root / LOCK_FILE
    try:
        fh = open(path, "a+")
    except OSError as e:  # a store owned by another user, a read-only disk
        raise FileStoreError(f"cannot open the exporter lock {path}: {e.strerror or e}", e) from e
    with fh:
        announced = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fh)
                if wait is None:
                    raise ExporterBusy(f"another exporter{holder} is already sending this node's exports; "
                                       f"wait for it to finish or stop it") from None
                if not announced:
                    log.info("waiting for the exporter%s that is sending this node's exports to finish", holder)
                    announced = True
                if wait.wait(POLL_SECONDS):
                    yield False
                    return
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield True
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _holder(fh) -> str:
    """`` (pid N)`` from the lock file, or nothing when it cannot be read."""
    try:
        fh.seek(0)
        pid = int(fh.read(32).strip())
    except (OSError, ValueError):
        return ""
    return f" (pid {pid})"
