"""Ingesting an RMS night against copying its folder durably: ``ingest_vs_cp_fsync``.

Ours: ``meteorpi ingest rms <night>`` as a camera operator runs it (a subprocess: Python
start-up, parsing, hashing, copying into the file store with an fsync per file, one
transaction). Baseline: ``cp -r <night> <dest> && sync``, the cheapest way to keep the same
bytes durably. Both read the same night from the page cache; each side's previous copy is
removed and flushed (``sync``) before its clock starts. The night is written by the tests'
RMS writer (tests/rms_writer.py): N detections, each with its FF file of the given size. The
figure is the median of ours' time over the baseline's (lower is better). Beside them, the
time to MD5-hash the night's bytes alone (one thread, what the protocol's file records
require of any ingest) is reported in the note: the floor a reader compares ours against.
"""
from __future__ import annotations

import hashlib
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from tests.rms_writer import Meteor, NightSpec, write_night

from .. import ours
from ..harness import Figure, alternate, median_ratio
from . import MIB, Context, log

TIMEOUT = 3600


def _sync() -> None:
    subprocess.run(["sync"], check=True, timeout=TIMEOUT)


class Ingest:
    """Ours: the CLI on a freshly cleared node."""

    def __init__(self, ctx: Context, site, night: Path, detections: int):
        self.ctx, self.site, self.night, self.detections = ctx, site, night, detections
        self.db = site.open()

    def run(self, _round: int) -> float:
        self.db.clear_database()
        _sync()
        t0 = time.perf_counter()
        proc = ours._cli(self.site, ["ingest", "rms", str(self.night)], timeout=TIMEOUT)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or f"{self.detections} new event(s)" not in proc.stdout:
            self.ctx.error(f"ingest_vs_cp_fsync: ingest failed: {(proc.stderr or proc.stdout)[-300:]}")
        return elapsed

    def close(self) -> None:
        self.db.close()


class CopyAndSync:
    """Baseline: cp -r and sync."""

    def __init__(self, night: Path, dest: Path):
        self.night, self.dest = night, dest

    def run(self, _round: int) -> float:
        shutil.rmtree(self.dest, ignore_errors=True)
        _sync()
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(self.night), str(self.dest)], check=True, timeout=TIMEOUT)
        _sync()
        return time.perf_counter() - t0


def hash_only(night: Path) -> Callable[[int], float]:
    """Reference: MD5 of every file of the night, one thread, from the page cache."""
    def run(_round: int) -> float:
        t0 = time.perf_counter()
        for path in sorted(night.iterdir()):
            digest = hashlib.md5()
            with open(path, "rb") as f:
                while chunk := f.read(MIB):
                    digest.update(chunk)
        return time.perf_counter() - t0
    return run


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    detections, ff_size = ctx.sizes.rms_night
    spec = NightSpec(meteors=[Meteor(block) for block in range(detections)], ff_size=ff_size)
    night = write_night(ctx.cluster.root / "rms-source", spec)
    total = sum(p.stat().st_size for p in night.iterdir())
    log(f"rms ingest: {detections} detections, {detections} FF files of {ff_size / MIB:.1f} MiB "
        f"({total / MIB:.0f} MiB in the night)")
    ingest = Ingest(ctx, ctx.cluster.site("rmsnode"), night, detections)
    try:
        out = alternate({"ours": ingest.run, "baseline": CopyAndSync(night, ctx.cluster.root / "rms-copy").run,
                         "md5": hash_only(night)}, ctx.pairs)
    finally:
        ingest.close()
    return [Figure("ingest_vs_cp_fsync", median_ratio(out["ours"], out["baseline"]), "<= 1.5",
                   f"RMS night: {detections} detections with {detections} FF files of {ff_size / MIB:.1f} MiB "
                   f"({total / MIB:.0f} MiB); `meteorpi ingest rms` vs `cp -r` + `sync`", "s",
                   ours=out["ours"], baseline=out["baseline"],
                   note=f"MD5 of the night's bytes alone, one thread: median {statistics.median(out['md5']):.2f} s "
                        f"({statistics.median(out['md5']) / statistics.median(out['baseline']):.2f} x the baseline)")]
