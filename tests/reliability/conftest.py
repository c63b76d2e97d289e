"""Fixtures of the reliability suite: scale (CI or ``--long``), tallies, real servers.

``scale(ci, long)`` picks the number for this run. ``tally`` records what a test did; at the end
of the session the tallies of the tests that ran are written outside the repository (results.py;
``python -m tests.reliability.results --update`` puts them in the committed report). ``served`` starts ``meteorpi serve`` (gunicorn, real processes) on a
database of the session's PostgreSQL and stops it, by its own process group, at teardown.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from meteorpi_db import MeteorDatabase
from meteorpi_server.demo import ServeProcess
from tests.server_fixtures import add_users

from . import results

_tallies: dict[str, results.Tally] = {}
_outcomes: dict[str, tuple[str, float]] = {}
_area_of_module = {
    "test_kill_server": "kill server", "test_kill_exporter": "kill exporter", "test_postgres_stop": "postgres",
    "test_network_faults": "network", "test_concurrency": "concurrency", "test_fuzz": "fuzz",
    "test_openapi": "openapi", "test_hostile_input": "hostile input", "test_security": "security",
}


@pytest.fixture(scope="session")
def long_run(request) -> bool:
    """Whether this is a ``--long`` run."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def scale(long_run) -> Callable[[int, int], int]:
    """``scale(ci, long)``: the number for this run."""
    return lambda ci, long: long if long_run else ci


@pytest.fixture
def tally(request) -> results.Tally:
    """Counters of this test, written to results.json at the end of the session."""
    paragraph = " ".join((request.function.__doc__ or request.node.name).strip().split("\n\n")[0].split())
    doc = paragraph.split(": ")[0].split(". ")[0].rstrip(".")
    module = request.node.module.__name__.rsplit(".", 1)[-1]
    t = _tallies.setdefault(request.node.nodeid, results.Tally(doc, _area_of_module.get(module, module)))
    return t


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.nodeid in _tallies or report.when == "call":
        previous = _outcomes.get(item.nodeid, ("passed", 0.0))
        state = report.outcome if report.outcome != "passed" or previous[0] == "passed" else previous[0]
        _outcomes[item.nodeid] = (state, previous[1] + report.duration)


def pytest_sessionfinish(session, exitstatus):
    ran = {}
    for nodeid, t in _tallies.items():
        outcome, seconds = _outcomes.get(nodeid, ("not run", 0.0))
        ran[nodeid] = {**t.as_dict(), "outcome": outcome, "seconds": round(seconds, 1)}
    if not ran:
        return
    mode = "long" if session.config.getoption("--long") else "ci"
    results.save_run(mode, ran)


# -- servers ----------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path) -> Callable[..., ServeProcess]:
    """Factory: ``served(db, workers=1, **env)`` is ``meteorpi serve`` on ``db``, started."""
    started: list[ServeProcess] = []

    def start(db: MeteorDatabase, workers: int = 1, **env: str) -> ServeProcess:
        server = start_served(db, tmp_path / f"serve-{len(started)}.log", workers, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def start_served(db: MeteorDatabase, log_path: Path, workers: int = 1, **env: str) -> ServeProcess:
    """``meteorpi serve`` on ``db`` with the test users, started; the caller stops it."""
    add_users(db)
    server = ServeProcess(db.url, Path(db.file_store.root).parent, workers=workers, log_path=log_path,
                          env={"METEORPI_LOGGING_LEVEL": "INFO", **env})
    server.start()
    return server
