"""What "nothing lost, nothing duplicated, nothing changed" means, as checks on real storage.

* ``compare_archives`` — the central archive equals the node: every entity once and whole
  (``archive_check``: wire form compared, bytes read back through the read API and hashed),
  the same number of rows per entity table, the held files exactly the node's, each re-hashed,
  and temp files left by crashes never counted as held.
* ``fingerprint`` — a digest of every table and of the file store (temp files included), so a
  rejected request can be shown to have changed nothing.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from meteorpi_db import MeteorDatabase
from meteorpi_db.database import TABLES
from meteorpi_server.archive_check import check_archive
from tests.server_fixtures import READER

# The tables that hold replicated entities (a duplicate would show as an extra row in one).
ENTITY_TABLES = ("camera_status", "status_region", "file_record", "file_meta", "event", "event_meta", "event_file")
# What "storage changed" means: every table but the count of refused uploads, which a refused
# upload is meant to leave behind (server.max_failed_uploads), the one trace a refusal may leave,
# and the notifier's position in the feed, which moves by itself beside the served app.
FINGERPRINT_TABLES = tuple(t for t in TABLES if t not in ("upload_failure", "watch_cursor"))


def row_counts(db: MeteorDatabase, tables=ENTITY_TABLES) -> dict[str, int]:
    with db.transaction() as cur:
        cur.execute(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in tables))
        return dict(cur.fetchall())


def held_files(db: MeteorDatabase) -> set[tuple[str, str]]:
    """(file_id hex, md5) of every published file in the store (temp files excluded)."""
    root = Path(db.file_store.root)
    out = set()
    for path in root.glob("??/??/*_*"):
        file_id, _, md5 = path.name.partition("_")
        out.add((file_id, md5))
    return out


def temp_files(db: MeteorDatabase) -> list[Path]:
    return sorted(Path(db.file_store.tmp).iterdir())


def temp_written_since(db: MeteorDatabase, since: float) -> bool:
    """Whether an upload wrote a temp file after ``since``; a live server publishes or discards
    temp files at any moment, so one vanishing between listing and stat is simply not there."""
    for path in temp_files(db):
        try:
            if path.stat().st_mtime > since:
                return True
        except FileNotFoundError:
            continue
    return False


def node_files(db: MeteorDatabase) -> set[tuple[str, str]]:
    with db.transaction() as cur:
        cur.execute("SELECT file_id, md5 FROM file_record")
        return {(str(fid).replace("-", ""), md5) for fid, md5 in cur.fetchall()}


@dataclass
class Comparison:
    """How a central archive differs from its node; empty ``problems`` means equal."""
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    entities: int = 0
    files: int = 0
    bytes: int = 0
    temp_files_left: int = 0


def compare_archives(node: MeteorDatabase, central: MeteorDatabase, central_url: str,
                     auth=READER) -> Comparison:
    """Everything that must hold after replication, whatever faults happened on the way."""
    result = Comparison()
    check = check_archive(node, central, central_url, auth)
    result.problems += check.problems
    result.lost = sum(1 for p in check.problems if "missing" in p or "differs" in p or "MD5" in p
                      or "answered HTTP" in p)
    node_rows, central_rows = row_counts(node), row_counts(central)
    for table in ENTITY_TABLES:
        if central_rows[table] > node_rows[table]:
            result.duplicated += central_rows[table] - node_rows[table]
        if central_rows[table] != node_rows[table]:
            result.problems.append(f"{table}: node has {node_rows[table]} rows, central {central_rows[table]}")
    expected, held = node_files(node), held_files(central)
    if held != expected:
        result.problems.append(f"central holds files {sorted(held - expected)[:5]} the node has not, and lacks "
                               f"{sorted(expected - held)[:5]}")
    for file_id, md5 in held:
        if not central.file_store.verify(uuid.UUID(file_id), md5):
            result.problems.append(f"held file {file_id} does not hash to {md5}")
    temps = temp_files(central)
    result.temp_files_left = len(temps)
    held_ids = {file_id for file_id, _ in held}
    for temp in temps:  # a crash's leftovers: the server must not count them as held bytes
        file_id = temp.name.split(".", 1)[0]
        if file_id not in held_ids and central.has_file_data(file_id):
            result.problems.append(f"temp file {temp.name} is counted as held")
    result.entities = node_rows["event"] + node_rows["file_record"] - node_rows["event_file"]
    result.files = len(expected)
    result.bytes = check.bytes_checked
    return result


def fingerprint(db: MeteorDatabase) -> tuple[str, tuple]:
    """(digest of every table's rows but refused-upload counts, every path and size under the
    file store)."""
    with db.transaction() as cur:
        cur.execute(" UNION ALL ".join(
            f"SELECT '{t}', count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
            for t in FINGERPRINT_TABLES))
        tables = hashlib.sha256(repr(sorted(cur.fetchall())).encode()).hexdigest()
    root = str(db.file_store.root)
    store = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                store.append((os.path.relpath(path, root), os.stat(path).st_size))
            except FileNotFoundError:
                continue
    return tables, tuple(sorted(store))
