"""Shared fixtures: one real PostgreSQL per test session, a clean database per test.

The server is the embedded one (started in a temporary data directory) unless
METEORPI_TEST_DATABASE_URL names another; either way the tests create and use their own
databases on it and never touch a user's data directory.
"""
from __future__ import annotations

pytest_plugins = ["tests.server_fixtures"]

import json
import os
import shutil
import signal
import tempfile
import urllib.parse
from pathlib import Path

import psycopg2
import pytest

from meteorpi_db import Config, MeteorDatabase
from meteorpi_db.database import ensure_database

# The protocol vectors: request bodies as deployed version-1 exporters send them, and the
# bytes they describe (tests/vectors/README.md). Kept in the repository: a clone stands alone.
VECTORS = Path(__file__).resolve().parent / "vectors"


def pytest_configure(config):
    # No test may hang CI: a generous per-test ceiling unless --timeout says otherwise.
    # --long runs tens of thousands of examples per test: an hour each, still not for ever.
    if hasattr(config.option, "timeout") and not config.option.timeout:
        config.option.timeout = 3600 if config.getoption("--long", False) else 300


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="run the reliability suite with its big numbers")


@pytest.fixture(scope="session")
def pg_server():
    """(admin_url, data_dir) of the session's PostgreSQL server."""
    data_dir = Path(tempfile.mkdtemp(prefix="meteorpi-test-"))
    url = os.environ.get("METEORPI_TEST_DATABASE_URL")
    server = None
    if url:
        admin_url = url
    else:
        from meteorpi_db import embedded
        server = embedded.attach(data_dir)
        admin_url = server.uri("postgres")
    yield admin_url, data_dir
    if server is not None:
        server.detach()
    shutil.rmtree(data_dir, ignore_errors=True)


def database_url(admin_url: str, name: str) -> str:
    """URL of database ``name`` on the server of ``admin_url`` (created if missing)."""
    ensure_database(admin_url, name)
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (one a test made for itself with ``database_url``)."""
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}"')
    finally:
        conn.close()


@pytest.fixture(scope="session")
def make_database(pg_server):
    """Factory: a MeteorDatabase on its own database and file store (e.g. node and central)."""
    admin_url, data_dir = pg_server
    made = {}

    def make(name: str = "meteorpi_test") -> MeteorDatabase:
        if name not in made:
            config = Config(data_dir=str(data_dir / name))
            config.database.url = database_url(admin_url, name)
            made[name] = MeteorDatabase(url=config.database.url, file_store_path=data_dir / name / "files",
                                        config=config)
        db = made[name]
        db.clear_database()
        return db

    yield make
    for db in made.values():
        db.close()


@pytest.fixture
def db(make_database) -> MeteorDatabase:
    """A clean MeteorDatabase for one test."""
    return make_database("meteorpi_test")


@pytest.fixture(scope="session")
def vectors() -> dict:
    """The protocol vectors of tests/vectors: bodies by name, bytes by file name."""
    out = {name: json.loads((VECTORS / f"{name}.json").read_text()) for name in ("status", "file", "event")}
    out["bytes"] = {p.name: p.read_bytes() for p in VECTORS.glob("*.bin")}
    return out


# -- Exporter tests: their fixtures (node, central, relay) live in tests/export_fixtures.py ----
pytest_plugins = [*pytest_plugins, "tests.export_fixtures", "tests.page_fixtures"]
# -- Watch tests: cameras at chosen places, a signature-checking webhook receiver, an SMTP server
pytest_plugins = [*pytest_plugins, "tests.watch_fixtures"]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process during the test, as at a terminal. A test
    run started in the background by a non-interactive shell (a CI script's ``&``) inherits
    SIGINT ignored, and Python then leaves it ignored: a Ctrl-C test would see nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
