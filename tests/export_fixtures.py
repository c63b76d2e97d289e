"""Fixtures for the exporter tests: a camera node, archives served over real sockets, exports.

A node is a clean database of its own (``make_database("export_node")``). An archive is another
clean database served by the real import service (``create_app``) in a thread on 127.0.0.1, with
the test users of server_fixtures. Test modules import what they use from here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from meteorpi_db import MeteorDatabase
from meteorpi_export import MeteorExporter
from meteorpi_export.exporter import ExportTotals
from meteorpi_model import EventSearch, ExportConfiguration, FileRecordSearch
from meteorpi_server import create_app
from meteorpi_server.archive_check import check_archive
from meteorpi_server.synthetic_night import Night, generate_night
from tests.server_fixtures import IMPORTER, READER, add_users, serve_in_thread

# Small files: each request costs the server a password hash (~0.15 s), sizes cost little.
FILE_SIZE = 16 * 1024
SUBPROCESS_TIMEOUT = 60


@dataclass
class Archive:
    """A database served by the import service; ``url`` is the server's base URL."""
    db: MeteorDatabase
    url: str
    server: Any = None

    @property
    def import_url(self) -> str:
        return f"{self.url}/import"

    def check(self, node: MeteorDatabase):
        """check_archive of ``node`` against this archive."""
        return check_archive(node, self.db, self.url, READER)

    def counts(self) -> tuple[int, int]:
        """(events, files) held."""
        return (self.db.search_events(EventSearch(limit=1))["count"],
                self.db.search_files(FileRecordSearch(limit=1))["count"])


def serve_archive(db: MeteorDatabase) -> Archive:
    """Serve ``db`` with the real app in a thread; stop it with ``archive.server.shutdown()``."""
    add_users(db)
    url, server = serve_in_thread(create_app(db=db))
    return Archive(db, url, server)


@pytest.fixture
def node(make_database) -> MeteorDatabase:
    """A clean camera-node database with its own file store."""
    return make_database("export_node")


@contextlib.contextmanager
def archive_named(make_database, name: str) -> Iterator[Archive]:
    """A clean database ``name`` served over HTTP for the duration."""
    archive = serve_archive(make_database(name))
    try:
        yield archive
    finally:
        archive.server.shutdown()
        archive.server.server_close()


@pytest.fixture
def central(make_database):
    """A clean central archive served over HTTP."""
    with archive_named(make_database, "export_central") as archive:
        yield archive


@pytest.fixture
def relay(make_database):
    """A second archive, for node -> relay -> central."""
    with archive_named(make_database, "export_relay") as archive:
        yield archive


def night(db: MeteorDatabase, tmp_path: Path, events: int = 2, files_per_event: int = 2, standalone: int = 1,
          file_size: int = FILE_SIZE, camera_id: str = "test-cam") -> Night:
    """A small synthetic night registered on ``db``."""
    return generate_night(db, tmp_path / f"incoming-{uuid.uuid4().hex[:6]}", camera_id=camera_id, events=events,
                          files_per_event=files_per_event, file_size=file_size, standalone=standalone, seed=1)


def add_export(db: MeteorDatabase, target_url: str, kind: str, name: str | None = None,
               auth: tuple[str, str] = IMPORTER, **search) -> ExportConfiguration:
    """An export configuration of ``kind`` (event or file) to ``target_url``."""
    search_cls = EventSearch if kind == "event" else FileRecordSearch
    return db.create_export_configuration(ExportConfiguration(
        name=name or f"to-{kind}s", target_url=target_url, user_id=auth[0], password=auth[1], type=kind,
        search=search_cls(**search)))


def exporter(db: MeteorDatabase, **settings) -> MeteorExporter:
    """An exporter of ``db`` with export settings overridden (e.g. defer_on_failure_seconds=0)."""
    return MeteorExporter(db, dataclasses.replace(db.config.export, **settings))


def cli_env(db: MeteorDatabase, **extra: str) -> dict[str, str]:
    """Environment for a ``meteorpi`` child process working on ``db``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
    env.update(METEORPI_DATABASE_URL=db.url, METEORPI_DATA_DIR=str(db.file_store.root.parent),
               METEORPI_LOGGING_LEVEL="INFO", **extra)
    return env


def meteorpi(*args: str, env: dict, timeout: float = SUBPROCESS_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``meteorpi`` command in a child process; its output as text."""
    return subprocess.run([sys.executable, "-m", "meteorpi_server", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def start_meteorpi(*args: str, env: dict, stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start the ``meteorpi`` command in a child process (the caller stops it by its pid)."""
    return subprocess.Popen([sys.executable, "-m", "meteorpi_server", *args], env=env, stdout=stdout,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(interval)


def in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def stub_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 in threads for the duration (a target that misbehaves
    as no meteorpi server would); its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def export_round(node: MeteorDatabase, **settings) -> ExportTotals:
    """One round of ``node``'s exporter (settings overridden as ``exporter``): every due task
    marked and sent; the totals."""
    with exporter(node, **settings) as e:
        e.mark_all()
        return e.export_due()

