"""Versioned schema migrations: ``NNN_name.sql`` files applied in order, each in a transaction.

A transaction-scoped advisory lock serialises processes that start at the same moment: the
second waits, then sees the version the first recorded and applies nothing twice.
"""
from __future__ import annotations

import logging
import re
from importlib import resources

log = logging.getLogger("meteorpi.db.migrations")
LOCK_KEY = 0x6D6574656F72  # "meteor"

CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_VERSION = "INSERT INTO schema_version (version, name) VALUES (%(version)s, %(name)s)"


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file shipped with the package, in order."""
    out = []
    for entry in resources.files(__package__).iterdir():
        m = re.match(r"^(\d{3})_(\w+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


# Read without the lock: every process that opens the database asks, and a schema that is
# already current (nearly always) then costs one round trip, not a locked transaction per file.
HAS_VERSION_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL"


def migrate(pool) -> int:
    """Bring the schema up to the newest version; returns that version."""
    shipped = available()
    newest = shipped[-1][0] if shipped else 0
    with pool.transaction() as cur:
        cur.execute(HAS_VERSION_TABLE)
        version = 0
        if cur.fetchone()[0]:
            cur.execute(CURRENT_VERSION)
            version = cur.fetchone()[0]
    if version >= newest:
        return version
    for number, name, sql in shipped:
        with pool.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": LOCK_KEY})
            cur.execute(CREATE_VERSION_TABLE)
            cur.execute(CURRENT_VERSION)
            version = cur.fetchone()[0]
            if number <= version:
                continue
            log.info("applying schema migration %03d_%s", number, name)
            cur.execute(sql)
            cur.execute(RECORD_VERSION, {"version": number, "name": name})
            version = number
    return version
