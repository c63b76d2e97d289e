"""Does a central archive hold exactly what a node holds? Entity for entity, byte for byte.

Entities are compared in their wire form (``as_dict``), so any field lost or changed on the way
shows. File bytes are read back through the central server's read API
(``GET /files/<id>/data``), hashed as they stream, and compared with the node's MD5: the
check covers what a user of the archive would actually get.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import requests

from meteorpi_db import MeteorDatabase
from meteorpi_model import EventSearch, FileRecordSearch

PAGE = 500
CHUNK_SIZE = 1024 * 1024
TIMEOUT = (5.0, 60.0)   # connect, read (seconds) for each file read back
MAX_PROBLEMS_SHOWN = 20


@dataclass
class ArchiveCheck:
    """Counts per kind of entity, and every difference found."""
    rows: list[tuple[str, int, int, int]] = field(default_factory=list)  # kind, node, central, equal
    problems: list[str] = field(default_factory=list)
    bytes_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _all(db: MeteorDatabase, kind: str) -> list:
    """Every event or every file of ``db``, page by page, in time order."""
    out, skip = [], 0
    while True:
        if kind == "events":
            page = db.search_events(EventSearch(limit=PAGE, skip=skip))["events"]
        else:
            page = db.search_files(FileRecordSearch(limit=PAGE, skip=skip))["files"]
        out.extend(page)
        if len(page) < PAGE:
            return out
        skip += PAGE


def _count(db: MeteorDatabase, kind: str) -> int:
    if kind == "events":
        return db.search_events(EventSearch(limit=1))["count"]
    return db.search_files(FileRecordSearch(limit=1))["count"]


def _same(kind: str, node_items: list, get_central, check: ArchiveCheck) -> int:
    equal = 0
    for item in node_items:
        item_id = item.event_id if kind == "event" else item.file_id if kind == "file" else item.status_id
        held = get_central(item_id)
        if held is None:
            check.problems.append(f"{kind} {item_id.hex} is missing from the central archive")
        elif held.as_dict() != item.as_dict():
            check.problems.append(f"{kind} {item_id.hex} differs: node {item.as_dict()} / central {held.as_dict()}")
        else:
            equal += 1
    return equal


def _read_back(session: requests.Session, base_url: str, auth, record) -> str | None:
    """The problem with the central copy of ``record``'s bytes, if any."""
    url = f"{base_url.rstrip('/')}/files/{record.file_id.hex}/data"
    try:
        with session.get(url, auth=auth, stream=True, timeout=TIMEOUT) as response:
            if response.status_code != 200:
                return f"file {record.file_id.hex}: GET /files/<id>/data answered HTTP {response.status_code}"
            digest, size = hashlib.md5(), 0
            for chunk in response.iter_content(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
    except requests.RequestException as e:
        return f"file {record.file_id.hex}: reading it back failed ({type(e).__name__})"
    if digest.hexdigest() != record.md5 or size != record.file_size:
        return (f"file {record.file_id.hex}: central bytes have MD5 {digest.hexdigest()} ({size} bytes), "
                f"node has {record.md5} ({record.file_size} bytes)")
    return None


def check_archive(node: MeteorDatabase, central: MeteorDatabase, base_url: str, auth: tuple[str, str],
                  session: requests.Session | None = None) -> ArchiveCheck:
    """Compare everything ``node`` holds with ``central`` (records in its database, bytes via
    the read API at ``base_url`` with ``auth``, a user with the read role)."""
    check = ArchiveCheck()
    events, files = _all(node, "events"), _all(node, "files")
    status_ids = sorted({e.status_id for e in events} | {f.status_id for f in files})
    statuses = [node.get_camera_status_by_id(s) for s in status_ids]
    check.rows.append(("camera statuses", len(statuses), sum(central.has_status_id(s) for s in status_ids),
                       _same("status", statuses, central.get_camera_status_by_id, check)))
    check.rows.append(("events", len(events), _count(central, "events"), _same("event", events, central.get_event, check)))
    check.rows.append(("files", len(files), _count(central, "files"), _same("file", files, central.get_file, check)))
    for kind, node_count, central_count in ((r[0], r[1], r[2]) for r in check.rows[1:]):
        if central_count != node_count:
            check.problems.append(f"central holds {central_count} {kind}, the node {node_count}")
    own = session or requests.Session()
    try:
        verified = 0
        for record in files:
            problem = _read_back(own, base_url, auth, record)
            if problem:
                check.problems.append(problem)
            else:
                verified += 1
                check.bytes_checked += record.file_size
        check.rows.append(("file bytes (MD5 via GET /files/<id>/data)", len(files), verified, verified))
    finally:
        if session is None:
            own.close()
    return check
