"""Polling RMS's data folder as a service: each finished night is ingested once.

A night is remembered once ingested, or once refused for its format (until its FTPdetectinfo
changes: RMS re-ran on it), so a poll costs a directory listing per night, not a re-read.
Nights in progress, or losing files to RMS housekeeping, are tried again at every poll (and
reported once, not at every poll).
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable

from meteorpi_db import MeteorDatabase

from .errors import RmsError
from .ingest import NightResult, ingest_paths
from .night import scan_night

# RMS copies a finished night to ArchivedFiles after processing: wait until its files are quiet.
DEFAULT_SETTLE_SECONDS = 60.0


def _signature(root: Path) -> tuple | None:
    """What must change for a night to be looked at again: its FTPdetectinfo's identity."""
    try:
        folder = scan_night(root)
        if folder.ftpdetectinfo is None:
            return None
        st = (root / folder.ftpdetectinfo).stat()
        return str(root), folder.ftpdetectinfo, st.st_size, st.st_mtime_ns
    except (OSError, RmsError):  # vanishing: looked at again at the next poll
        return None


def follow(db: MeteorDatabase, paths: list[Path], interval: float, stop: threading.Event,
           on_result: Callable[[NightResult], None], on_plan=None, on_stored=None,
           settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> None:
    """Poll ``paths`` every ``interval`` seconds until ``stop`` is set; a night is taken once
    none of its files changed for ``settle_seconds``. ValueError unless both are finite, the
    interval above 0: a NaN interval made the loop poll without a pause (a CPU at 97%)."""
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval {interval!r}: must be a finite number of seconds above 0")
    if not (math.isfinite(settle_seconds) and settle_seconds >= 0):
        raise ValueError(f"settle_seconds {settle_seconds!r}: must be a finite number of seconds, 0 or more")
    done: set[tuple] = set()

    def seen(root: Path) -> bool:
        return _signature(root) in done

    told: set[tuple[str, str]] = set()  # a skip or refusal is reported once, not every poll
    while not stop.is_set():
        for result in ingest_paths(db, paths, on_plan, on_stored, skip=seen, settle_seconds=settle_seconds):
            if result.state == "ingested" or (str(result.folder), result.message) not in told:
                on_result(result)
            if result.state != "ingested":
                told.add((str(result.folder), result.message))
            if result.state in ("ingested", "failed") and (sig := _signature(result.folder)) is not None:
                done.add(sig)
            if stop.is_set():
                return
        stop.wait(interval)
