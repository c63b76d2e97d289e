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

Beside the goal's figure, ``ingest_vs_cp_md5sum_fsync`` (reported) sets ours against the same
job done with standard tools: ``cp -r``, then ``md5sum`` of every copied file (one process per
core, as ours hashes on every core), then ``sync``. A file record must carry its MD5, so this is
the least any ingest must do; the goal's baseline skips the hashing, which alone takes about as
long as the whole copy on two cores.

The machine is shared: on two busy cores a side's time follows its CPU time (cores are shared
between sessions, not threads), so the note also gives each side's CPU time (user + sys, of the
processes each started; the MD5 reference's own thread), which varies far less than wall time.

Ours runs with its modules' bytecode compiled once before the clock starts (cluster.bytecode_env), as an installed
node has it (pip compiles it; an editable install writes it at first start). Without this,
an environment with PYTHONDONTWRITEBYTECODE set (this one) compiles our sources at every run:
about 0.2 s of CPU a user never pays.
"""
from __future__ import annotations

import hashlib
import os
import resource
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


def _children_cpu() -> float:
    """CPU seconds (user + sys) of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Ingest:
    """Ours: the CLI on a freshly cleared node."""

    def __init__(self, ctx: Context, site, night: Path, detections: int):
        self.ctx, self.site, self.night, self.detections = ctx, site, night, detections
        self.db = site.open()
        self.cpu: list[float] = []
        self.env = {**os.environ, **site.env()}  # bytecode compiled once, as installed (cluster.bytecode_env)

    def run(self, _round: int) -> float:
        self.db.clear_database()
        _sync()
        cpu, t0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run([*ours.meteorpi_command(), "ingest", "rms", str(self.night)], capture_output=True,
                              text=True, env=self.env, timeout=TIMEOUT)
        elapsed = time.perf_counter() - t0
        self.cpu.append(_children_cpu() - cpu)
        if proc.returncode != 0 or f"{self.detections} new event(s)" not in proc.stdout:
            self.ctx.error(f"ingest_vs_cp_fsync: ingest failed: {(proc.stderr or proc.stdout)[-300:]}")
        return elapsed

    def close(self) -> None:
        self.db.close()


class CopyAndSync:
    """Baseline: cp -r and sync."""

    def __init__(self, night: Path, dest: Path):
        self.night, self.dest = night, dest
        self.cpu: list[float] = []

    def run(self, _round: int) -> float:
        shutil.rmtree(self.dest, ignore_errors=True)
        _sync()
        cpu, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(["cp", "-r", str(self.night), str(self.dest)], check=True, timeout=TIMEOUT)
        _sync()
        elapsed = time.perf_counter() - t0
        self.cpu.append(_children_cpu() - cpu)
        return elapsed


class CopyHashAndSync(CopyAndSync):
    """Reference: cp -r, md5sum of the copy on every core, sync."""

    def run(self, _round: int) -> float:
        shutil.rmtree(self.dest, ignore_errors=True)
        _sync()
        cpu, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(["cp", "-r", str(self.night), str(self.dest)], check=True, timeout=TIMEOUT)
        files = sorted(str(p) for p in self.dest.iterdir())
        cores = os.cpu_count() or 1
        hashers = [subprocess.Popen(["md5sum", *files[i::cores]], stdout=subprocess.DEVNULL)
                   for i in range(cores) if files[i::cores]]
        if any(h.wait(timeout=TIMEOUT) for h in hashers):
            raise RuntimeError("md5sum failed")
        _sync()
        elapsed = time.perf_counter() - t0
        self.cpu.append(_children_cpu() - cpu)
        return elapsed


def hash_only(night: Path, cpu: list[float]) -> Callable[[int], float]:
    """Reference: MD5 of every file of the night, one thread, from the page cache."""
    def run(_round: int) -> float:
        c0, t0 = time.thread_time(), time.perf_counter()
        for path in sorted(night.iterdir()):
            digest = hashlib.md5()
            with open(path, "rb") as f:
                while chunk := f.read(MIB):
                    digest.update(chunk)
        cpu.append(time.thread_time() - c0)
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
    baseline, md5_cpu = CopyAndSync(night, ctx.cluster.root / "rms-copy"), []
    hashed = CopyHashAndSync(night, ctx.cluster.root / "rms-copy-hashed")
    try:
        out = alternate({"ours": ingest.run, "baseline": baseline.run, "md5": hash_only(night, md5_cpu),
                         "hashed": hashed.run}, ctx.pairs)
    finally:
        ingest.close()
    md5 = statistics.median(out["md5"])
    cpu = {name: statistics.median(times) for name, times in
           (("ours", ingest.cpu), ("baseline", baseline.cpu), ("md5", md5_cpu), ("hashed", hashed.cpu))}
    return [Figure("ingest_vs_cp_fsync", median_ratio(out["ours"], out["baseline"]), "<= 1.5",
                   f"RMS night: {detections} detections with {detections} FF files of {ff_size / MIB:.1f} MiB "
                   f"({total / MIB:.0f} MiB); `meteorpi ingest rms` vs `cp -r` + `sync`", "s",
                   ours=out["ours"], baseline=out["baseline"],
                   note=f"MD5 of the night's bytes alone, one thread: median {md5:.2f} s "
                        f"({md5 / statistics.median(out['baseline']):.2f} x the baseline); CPU time (user + sys), "
                        f"medians: ours {cpu['ours']:.2f} s, baseline {cpu['baseline']:.2f} s, "
                        f"MD5 alone {cpu['md5']:.2f} s"),
            Figure("ingest_vs_cp_md5sum_fsync", median_ratio(out["ours"], out["hashed"]), "reported",
                   "the same night; `meteorpi ingest rms` vs `cp -r` + `md5sum` of the copy on every core + `sync`",
                   "s", ours=out["ours"], baseline=out["hashed"],
                   note=f"CPU time (user + sys), medians: ours {cpu['ours']:.2f} s, cp + md5sum + sync {cpu['hashed']:.2f} s")]
