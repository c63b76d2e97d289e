"""Our side of the figures, driven only through what users run: ``meteorpi serve`` and
``meteorpi export add/run`` as subprocesses, each with its site's environment.

Why subprocesses: the figure is what a camera operator sees, Python start-up, imports and
process boundaries included. The server runs in a session of its own so stopping it (SIGTERM
to the gunicorn master we started, by pid) takes its workers along.

``meteorpi serve`` logs each request with its duration in microseconds (serving.ACCESS_LOG_FORMAT):
the 16-exporter figure reads its latencies from there.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from meteorpi_db import MeteorDatabase
from meteorpi_server.demo import ServeProcess

from .cluster import Site
from .harness import NotAvailable

READY_TIMEOUT_SECONDS = 60
EXPORT_TIMEOUT_SECONDS = 3600
CLI_TIMEOUT_SECONDS = 120
WORKERS_QUIET_SECONDS = 0.3  # a booted worker waits for requests: no CPU used for this long
IMPORT_USER = "bench-importer"
IMPORT_PASSWORD = "bench-password-not-secret"
# serving.ACCESS_LOG_FORMAT: ... "POST /import/v2/data HTTP/1.1" 200 27 5321us "agent"
_REQUEST = re.compile(r'"(GET|POST|PUT|HEAD) (\S+) HTTP/[\d.]+" (\d{3}) \S+ (\d+)us')
_SUMMARY = re.compile(r"completed (\d+), failed (\d+).*?, (\d+) requests")


def meteorpi_command() -> list[str]:
    """``meteorpi`` next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).with_name("meteorpi")
    return [str(local)] if local.exists() else ["meteorpi"]


@functools.lru_cache(maxsize=None)
def _has_command(*words: str) -> bool:
    try:
        proc = subprocess.run([*meteorpi_command(), *words, "--help"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def check_available() -> None:
    """Raise NotAvailable naming what of ours is missing (figures then print ``n/a``)."""
    try:
        import meteorpi_server.serving  # noqa: F401
    except ImportError as e:
        raise NotAvailable(f"server not importable yet: {e}") from None
    if not _has_command("export", "run"):
        raise NotAvailable("`meteorpi export run` does not exist yet")


class ServerProcess(ServeProcess):
    """``meteorpi serve`` for ``site`` (the demo's ServeProcess), as a context manager, plus
    what the figures read off it: RSS of its processes and its access log."""

    def __init__(self, site: Site, log_path: Path, workers: int | None = None):
        super().__init__(site.url, site.data_dir, workers=workers or 2, log_path=log_path,
                         # The notifier (watches) is measured by the alerts group, which starts its
                         # own server; here it would only race the figures' resets (a TRUNCATE
                         # beside its reads deadlocked once) and add work no figure asks about.
                         env={"METEORPI_LOGGING_LEVEL": "WARNING", "METEORPI_NOTIFY_ENABLED": "false"})

    def __enter__(self) -> "ServerProcess":
        self.start(READY_TIMEOUT_SECONDS)
        return self

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Start and wait until every worker has booted, not just the first to answer: a worker
        still importing its app when a timed run starts would charge its boot to that run."""
        super().start(timeout)
        self._wait_workers_settled(timeout)

    def restart(self) -> None:
        """A fresh server on the same port (no cache, pool or login kept from earlier runs)."""
        self.stop()
        self.start(READY_TIMEOUT_SECONDS)

    def _wait_workers_settled(self, timeout: float) -> None:
        """Until all ``workers`` workers exist and none used CPU for WORKERS_QUIET_SECONDS."""
        deadline, last, quiet_since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            workers = self.processes()[1:]
            try:
                used = [sum(p.cpu_times()[:2]) for p in workers]
            except psutil.Error:
                used = None
            if used is None or len(used) < self.workers or used != last:
                last, quiet_since = used, time.monotonic()
            elif time.monotonic() - quiet_since >= WORKERS_QUIET_SECONDS:
                return
            time.sleep(0.05)
        raise RuntimeError(f"meteorpi serve's {self.workers} workers did not settle within {timeout:g}s")

    def __exit__(self, *exc) -> None:
        self.stop()

    def processes(self) -> list[psutil.Process]:
        """The gunicorn master and its workers."""
        master = psutil.Process(self.proc.pid)
        return [master, *master.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User + system CPU the master and workers have used so far (a worker that is
        respawning is skipped)."""
        total = 0.0
        for p in self.processes():
            try:
                total += sum(p.cpu_times()[:2])
            except psutil.Error:
                continue
        return total

    def rss_bytes(self) -> int:
        """Summed RSS of the master and workers (a worker may be respawning: skip it)."""
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def log_offset(self) -> int:
        """Where the access log ends now: count requests made after this point."""
        return self.log_path.stat().st_size

    def _import_lines(self, since: int) -> list[tuple[str, float | None]]:
        """(path, milliseconds or None) of each POST /import... logged after offset ``since``."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            logged = _REQUEST.search(line)
            if not logged:
                continue
            method, path, ms = logged.group(1), logged.group(2), int(logged.group(4)) / 1000.0
            if method == "POST" and path.startswith("/import"):
                out.append((path, ms))
        return out

    def import_requests(self, since: int = 0) -> list[str]:
        """Paths of POST /import... requests logged after offset ``since``."""
        return [path for path, _ in self._import_lines(since)]

    def import_latencies_ms(self, since: int = 0) -> list[float]:
        """Durations of POST /import... requests, in milliseconds."""
        return [ms for _, ms in self._import_lines(since) if ms is not None]


# -- central ----------------------------------------------------------------------------------
def reset_central(db: MeteorDatabase) -> None:
    """Empty the archive and give it back its import user (clear_database removes users)."""
    db.clear_database()
    db.create_or_update_user(IMPORT_USER, IMPORT_PASSWORD, ["import"])


# -- a camera node's exporter -----------------------------------------------------------------
def _cli(site: Site, args: list[str], stdin: str | None = None, timeout: float = CLI_TIMEOUT_SECONDS):
    env = {**os.environ, **site.env()}
    return subprocess.run([*meteorpi_command(), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)


def export_add(site: Site, name: str, target: str, export_type: str) -> None:
    """``meteorpi export add NAME --target URL --user U --password-stdin --type T`` on the node."""
    proc = _cli(site, ["export", "add", name, "--target", target, "--user", IMPORT_USER,
                       "--password-stdin", "--type", export_type], stdin=IMPORT_PASSWORD + "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"meteorpi export add {name} failed: {proc.stderr.strip()[-300:]}")


def reset_exports(db: MeteorDatabase) -> None:
    """Delete and re-add every export configuration of the node (same settings, new id), so
    the next run exports everything again. Through the API: 16 nodes x 2 CLI calls per pair
    would cost more than the runs themselves."""
    for config in db.get_export_configurations():
        db.delete_export_configuration(config.name)
        db.create_export_configuration(dataclasses.replace(config, config_id=uuid.uuid4()))


@dataclass
class ExportRun:
    """One ``meteorpi export run --once``: how long, how it ended, what it said."""
    seconds: float
    returncode: int
    completed: int | None
    failed: int | None
    requests: int | None
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failed


def start_export(site: Site) -> tuple[subprocess.Popen, float]:
    """Start ``meteorpi export run --once`` on the node; (process, start time)."""
    env = {**os.environ, **site.env()}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*meteorpi_command(), "export", "run", "--once"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, t0


def finish_export(proc: subprocess.Popen, t0: float) -> ExportRun:
    """Wait for a started export (bounded) and parse its summary line."""
    try:
        _, err = proc.communicate(timeout=EXPORT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    m = _SUMMARY.search(err or "")
    tail = " / ".join(line.strip() for line in (err or "").strip().splitlines()[-3:])
    return ExportRun(seconds, proc.returncode, *(int(g) for g in m.groups()) if m else (None, None, None),
                     stderr=tail[-400:])


def export_once(site: Site) -> ExportRun:
    """Time one ``meteorpi export run --once`` on the node, start to exit."""
    return finish_export(*start_export(site))


def count_held(db: MeteorDatabase) -> tuple[int, int]:
    """(events, file records) the archive holds: to check a run replicated everything."""
    with db.transaction() as cur:
        cur.execute("SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM file_record)")
        return cur.fetchone()


def task_problems(db: MeteorDatabase) -> int:
    """Export tasks on the node not complete after a run (failed or confused ones stay pending)."""
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM export_task WHERE state <> 'complete'")
        return cur.fetchone()[0]
