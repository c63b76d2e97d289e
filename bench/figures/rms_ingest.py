"""Ingesting an RMS night against copying its folder durably: ``ingest_vs_cp_fsync``.

Ours: ``meteorpi ingest rms <night>`` as a camera operator runs it (a subprocess: Python
start-up, parsing, hashing, copying into the file store with an fsync per file, one
transaction). Baseline: ``cp -r <night> <dest> && sync``, the cheapest way to keep the same
bytes durably. Both read the same night from the page cache; each side's previous copy is
removed and flushed (``sync``) before its clock starts. The night is written by the tests'
RMS writer (tests/rms_writer.py): N detections, each with its FF file of the given size. The
figure is the median of ours' time over the baseline's (lower is better).
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

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
        out = alternate({"ours": ingest.run,
                         "baseline": CopyAndSync(night, ctx.cluster.root / "rms-copy").run}, ctx.pairs)
    finally:
        ingest.close()
    return [Figure("ingest_vs_cp_fsync", median_ratio(out["ours"], out["baseline"]), "<= 1.5",
                   f"RMS night: {detections} detections with {detections} FF files of {ff_size / MIB:.1f} MiB "
                   f"({total / MIB:.0f} MiB); `meteorpi ingest rms` vs `cp -r` + `sync`", "s",
                   ours=out["ours"], baseline=out["baseline"])]
