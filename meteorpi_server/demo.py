"""``meteorpi demo``: a camera node replicates one synthetic night to a central archive, end to end.

Everything runs on this machine, in a temporary data directory: one embedded PostgreSQL cluster
holding two databases (``meteorpi_node`` and ``meteorpi_central``, each with its own file
store), the central import service as a real ``meteorpi serve`` child process on a free local
port, and the node's exporter speaking docs/protocol.md to it over HTTP. Afterwards the central
archive is compared with the node, entity for entity and byte for byte (bytes read back through
the read API). ``--kill-server`` SIGKILLs the central server halfway through the bytes and
restarts it: replication must still converge. Exit status 0 only when the archives match.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import click
import requests

from meteorpi_db import Config, MeteorDatabase, embedded, embedded_url
from meteorpi_export import ExportTotals, MeteorExporter
from meteorpi_model import EventSearch, ExportConfiguration, FileRecordSearch

from .archive_check import check_archive
from .progress import ProgressDisplay, human_bytes, parse_size, summary_line
from .synthetic_night import generate_night

READY_TIMEOUT_SECONDS = 60      # for `meteorpi serve` to answer GET /
STOP_TIMEOUT_SECONDS = 30       # for it to stop after SIGTERM
CONVERGE_TIMEOUT_SECONDS = 300  # for the export to finish, failures and retries included
DEMO_USER = "demo-importer"


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``meteorpi serve`` as a child process in a session of its own, so that it and its
    workers are stopped (or killed, to simulate a crash) together and by their own id."""

    def __init__(self, database_url: str, data_dir: Path, port: int | None = None, workers: int = 2,
                 log_path: Path | None = None, env: dict | None = None):
        self.database_url, self.data_dir = database_url, Path(data_dir)
        self.port = port or free_port()
        self.workers = workers
        self.log_path = log_path or self.data_dir / "serve.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Start the server and wait until ``GET /`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
        env.update(METEORPI_DATABASE_URL=self.database_url, METEORPI_DATA_DIR=str(self.data_dir),
                   **self.extra_env)
        argv = [sys.executable, "-m", "meteorpi_server", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers)]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meteorpi serve exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"meteorpi serve did not answer GET / within {timeout:g}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, nothing finishes."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """SIGTERM (requests in flight finish), then SIGKILL if it does not stop in time."""
        if not self.alive:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        try:  # workers that outlived their master
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " / ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def replicate(exporter: MeteorExporter, display: ProgressDisplay, total: int, server: ServeProcess | None = None,
              timeout: float = CONVERGE_TIMEOUT_SECONDS) -> tuple[ExportTotals, int]:
    """Mark and export until nothing is pending (retrying deferred tasks when they fall due,
    restarting ``server`` if it died); returns the totals and what is still pending."""
    totals, deadline, started = ExportTotals(), time.monotonic() + timeout, time.monotonic()
    display.start_round(total)
    while True:
        exporter.mark_all()
        totals.merge(exporter.export_due())
        pending = sum(p.pending for p in exporter.db.get_export_progress())
        if not pending or time.monotonic() > deadline:
            break
        if server is not None and not server.alive:
            server.start()
        time.sleep(exporter.seconds_until_due(limit=5.0))
    display.end_round()
    totals.seconds = time.monotonic() - started
    return totals, pending


def _print_table(rows: list[tuple], out) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))


def run_demo(root: Path, events: int, files_per_event: int, file_size: int, standalone: int,
             kill_server: bool, out=click.echo, on_verified: Callable[[str, bool], None] | None = None) -> bool:
    """The whole demo in ``root``; True when the central archive equals the node's.

    ``on_verified(url, ok)`` is called after the verification while the central server still
    runs (``--serve`` waits there), with the server's URL."""
    node_url, central_url = embedded_url(root, "meteorpi_node"), embedded_url(root, "meteorpi_central")
    config = Config(data_dir=str(root))
    # The demo retries quickly after failures (a killed server) instead of the 10-minute default.
    config.export = dataclasses.replace(config.export, defer_on_failure_seconds=1, max_failures_before_disable=0,
                                        connect_timeout_seconds=5.0, read_timeout_seconds=30.0)
    node = MeteorDatabase(url=node_url, file_store_path=root / "node" / "files", config=config)
    central = MeteorDatabase(url=central_url, file_store_path=root / "central" / "files", config=config)
    # Served on for a browser afterwards: its pages open to anyone, on 127.0.0.1 only.
    server = ServeProcess(central_url, root / "central",
                          env={"METEORPI_SERVER_PUBLIC_READ": "true"} if on_verified else None)
    try:
        password = secrets.token_urlsafe(16)
        central.create_or_update_user(DEMO_USER, password, ["import", "user"])
        server.start()
        out(f"  central server   `meteorpi serve` at {server.url} (pid {server.proc.pid}), "
            f"database meteorpi_central, files in {central.file_store.root}")
        out(f"  camera node      database meteorpi_node, files in {node.file_store.root}")
        started = time.monotonic()
        night = generate_night(node, root / "incoming", events=events, files_per_event=files_per_event,
                               file_size=file_size, standalone=standalone)
        out(f"  synthetic night  1 camera status, {len(night.events)} events x {files_per_event} files, "
            f"{len(night.files)} stand-alone files: {len(night.all_files)} files, "
            f"{human_bytes(night.total_bytes)} (registered in {time.monotonic() - started:.1f} s)")
        for name, kind, search in (("central-events", "event", EventSearch()),
                                   ("central-files", "file", FileRecordSearch())):
            node.create_export_configuration(ExportConfiguration(
                name=name, target_url=f"{server.url}/import", user_id=DEMO_USER, password=password,
                type=kind, search=search))
        sent = {"bytes": 0, "killed": False}
        with ProgressDisplay() as display:
            def on_bytes(n: int) -> None:
                display.on_bytes(n)
                sent["bytes"] += n
                if kill_server and not sent["killed"] and sent["bytes"] >= night.total_bytes // 2:
                    sent["killed"] = True
                    server.kill()  # mid-upload: the exporter sees the connection drop
            with MeteorExporter(node, on_task=display.on_task, on_bytes=on_bytes) as exporter:
                totals, pending = replicate(exporter, display, night.entities, server if kill_server else None)
        out(f"  replication      {summary_line(totals)}")
        if kill_server:
            out(f"  server crash     SIGKILLed mid-upload after {human_bytes(night.total_bytes // 2)}, restarted; "
                f"{totals.failed + totals.confused} task(s) failed and were retried")
        if pending:
            out(f"  NOT CONVERGED    {pending} export task(s) still pending")
        started = time.monotonic()
        check = check_archive(node, central, server.url, (DEMO_USER, password))
        out(f"verification ({time.monotonic() - started:.1f} s, {human_bytes(check.bytes_checked)} read back):")
        _print_table([("", "node", "central", "identical")] + check.rows, out)
        for problem in check.problems[:20]:
            out(f"  PROBLEM: {problem}")
        if on_verified is not None:
            on_verified(server.url, check.ok and not pending)
        return check.ok and not pending
    finally:
        server.stop()
        node.close()
        central.close()


@click.command("demo")
@click.option("--events", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="Events in the synthetic night.")
@click.option("--files-per-event", default=3, show_default=True, type=click.IntRange(1, 256),
              help="Image files of each event.")
@click.option("--file-size", default="256KiB", show_default=True, callback=lambda c, p, v: parse_size(v),
              help="Typical file size (sizes vary by +-25%), e.g. 64K, 2M.")
@click.option("--standalone-files", default=5, show_default=True, type=click.IntRange(0, 100_000),
              help="Files that belong to no event (time-lapse frames).")
@click.option("--kill-server", is_flag=True, help="SIGKILL the central server halfway through and restart it.")
@click.option("--keep", is_flag=True, help="Keep the demo's data directory (default: delete it).")
@click.option("--serve", is_flag=True,
              help="Afterwards keep the central archive running and print the URL of its pages; Ctrl-C stops it.")
def demo(events: int, files_per_event: int, file_size: int, standalone_files: int, kill_server: bool,
         keep: bool, serve: bool) -> None:
    """Replicate a synthetic night from a camera node to a central server over HTTP, then
    verify the central archive byte for byte. Exit status 0 only if it matches."""
    import logging
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = Path(tempfile.mkdtemp(prefix="meteorpi-demo-"))
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    click.echo(f"meteorpi demo in {root}")
    ok = False
    try:
        pg = embedded.attach(root)
        try:
            ok = run_demo(root, events, files_per_event, file_size, standalone_files, kill_server,
                          on_verified=_serve_until_stopped if serve else None)
        finally:
            pg.detach()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if keep:
            click.echo(f"kept {root} (PostgreSQL cluster in postgres/, server log in central/serve.log)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if not ok:
        raise click.ClickException("verification FAILED: the central archive differs from the node's")
    click.echo("PASSED: the central archive holds the node's whole night, byte for byte")


def _serve_until_stopped(url: str, ok: bool) -> None:
    """Print where the archive's pages are and wait for Ctrl-C or SIGTERM (either is a normal
    end: the demo then stops the server and reports as usual)."""
    verdict = "verified" if ok else "NOT verified"
    click.echo(f"Serving the central archive ({verdict}) at {url}/ - open it in a browser; Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        click.echo("stopping the central server")


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop what was started
