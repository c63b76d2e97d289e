"""What one version-1 import costs the database, counted by PostgreSQL itself.

Deployed cameras speak version 1: one request per event. An event whose status and bytes the
archive already holds is decided and stored in one transaction (docs/protocol.md), so its rate
is bounded by one commit, not several. Counted with ``pg_stat_database`` on a database of its
own, served by its own app, with autovacuum off while we count, so nothing else commits there.
"""
from __future__ import annotations

import hashlib
import os
import time

import psycopg2
import pytest

from meteorpi_server import create_app

from .server_fixtures import Api, add_users, serve_in_thread

IMPORTS = 5
# The sessions a count may open: each new connection commits once at start-up, which is the
# pool's doing, not the import's; subtracted using pg_stat_database.sessions.
STATS = "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = %(db)s"
BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s"


@pytest.fixture(scope="module")
def counted(make_database, pg_server):
    """(api, count): a server on a database of its own; ``count(action)`` runs ``action`` and
    says how many transactions it committed there (connection start-ups not included)."""
    if os.environ.get("METEORPI_TEST_DATABASE_URL"):  # see below: autovacuum
        pytest.skip("counting commits needs autovacuum off: only on the test session's own embedded server")
    name = "meteorpi_xact"
    db = make_database(name)
    add_users(db)
    # Autovacuum commits in this database too: a transaction per table it vacuums or analyzes,
    # catalog tables included, whenever its naptime comes round (CI once read 20 commits for 5
    # imports). Switched off for the whole server while this module counts, and back on after;
    # stats() also waits for any worker already running here to end. Only on the session's own
    # embedded server: a server named by METEORPI_TEST_DATABASE_URL is not ours to reconfigure.
    admin = psycopg2.connect(pg_server[0])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("ALTER SYSTEM SET autovacuum = off")
        cur.execute("SELECT pg_reload_conf()")
    app = create_app(db=db)
    url, server = serve_in_thread(app)

    def stats() -> tuple[int, int]:
        # A backend reports its counts when it ends: close the pool's connections and wait for
        # them to be gone, so every commit so far is in the figures.
        db.pool.discard_idle()
        with admin.cursor() as cur:
            deadline = time.monotonic() + 10
            while True:
                cur.execute(BACKENDS, {"db": name})
                if cur.fetchone()[0] == 0:
                    break
                assert time.monotonic() < deadline, "the server's database connections did not end"
                time.sleep(0.02)
            cur.execute(STATS, {"db": name})
            return cur.fetchone()

    def count(action) -> int:
        commits, sessions = stats()
        action()
        commits_after, sessions_after = stats()
        return (commits_after - commits) - (sessions_after - sessions)

    yield Api(url), count
    server.shutdown()
    with admin.cursor() as cur:
        cur.execute("ALTER SYSTEM RESET autovacuum")
        cur.execute("SELECT pg_reload_conf()")
    admin.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_an_event_whose_status_and_bytes_are_held_costs_one_transaction(counted, records):
    """Each of several events (two files each) whose status and file bytes are held: one POST,
    ``complete``, and exactly one committed transaction."""
    api, count = counted
    status = records.status()
    assert api.post(status)[1] == {"state": "continue"}  # also signs the importer in (cached)
    events = []
    for _ in range(IMPORTS):
        event, files = records.event(status, sizes=[100, 200])
        for file_id, data in files.items():
            assert api.upload(file_id, md5(data), data)[1] == {"state": "continue"}
        events.append(event)

    answers = []
    committed = count(lambda: answers.extend(api.post(e) for e in events))

    assert answers == [(200, {"state": "complete"})] * IMPORTS
    assert committed == IMPORTS, f"{committed / IMPORTS:.1f} committed transactions per event import"


def test_a_file_record_whose_status_and_bytes_are_held_costs_one_transaction(counted, records):
    """The same for stand-alone file records."""
    api, count = counted
    status = records.status()
    assert api.post(status)[1] == {"state": "continue"}
    bodies = []
    for _ in range(IMPORTS):
        body, data = records.file(status)
        assert api.upload(body["file"]["file_id"], md5(data), data)[1] == {"state": "continue"}
        bodies.append(body)

    answers = []
    committed = count(lambda: answers.extend(api.post(b) for b in bodies))

    assert answers == [(200, {"state": "complete"})] * IMPORTS
    assert committed == IMPORTS, f"{committed / IMPORTS:.1f} committed transactions per file import"


def test_an_event_already_held_costs_one_transaction(counted, records):
    """Sent again (an exporter that lost the answer): ``complete``, one transaction, nothing written."""
    api, count = counted
    status = records.status()
    api.post(status)
    event, files = records.event(status, sizes=[100])
    for file_id, data in files.items():
        api.upload(file_id, md5(data), data)
    assert api.post(event)[1] == {"state": "complete"}

    answers = []
    committed = count(lambda: answers.extend(api.post(event) for _ in range(IMPORTS)))

    assert answers == [(200, {"state": "complete"})] * IMPORTS
    assert committed == IMPORTS
