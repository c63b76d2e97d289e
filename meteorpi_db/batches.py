"""Many entities per round trip: what the fast path (protocol version 2) asks of storage.

Version 1 costs a request per entity and two per missing file; over a 40 ms link that is
minutes per night. Here one query says which of many ids are missing, and one transaction
imports many entities set-wise: the statuses they refer to are read once, each entity is
checked against them (and its bytes against the store) in Python, and those that pass are
written by a few multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` statements, in id
order so two batches that overlap take their row locks in the same order and cannot deadlock.
A refused entity writes nothing; the others are unaffected. An entity another import wrote
meanwhile is simply not returned by its insert, and its parts are left to that import.
"""
from __future__ import annotations

import uuid
from typing import Iterable

from psycopg2.extras import execute_values

from meteorpi_model import CameraStatus, Event, FileRecord, night_offset_seconds

from .pool import retry_stale
from .records import _file_params, _meta_rows

HELD_STATUSES = "SELECT status_id FROM camera_status WHERE status_id = ANY(%(ids)s)"
HELD_EVENTS = "SELECT event_id FROM event WHERE event_id = ANY(%(ids)s)"
HELD_FILES = "SELECT file_id FROM file_record WHERE file_id = ANY(%(ids)s)"
SELECT_UPLOAD_FAILURES = "SELECT file_id, failures FROM upload_failure WHERE file_id = ANY(%(ids)s)"
BULK_EVENTS = """
INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type) VALUES %s
ON CONFLICT (event_id) DO NOTHING RETURNING event_id
"""
BULK_FILES = """
INSERT INTO file_record (file_id, camera_id, status_id, file_time, file_offset, mime_type, semantic_type,
                         file_name, file_size, md5) VALUES %s
ON CONFLICT (file_id) DO NOTHING RETURNING file_id
"""
BULK_FILE_META = """
INSERT INTO file_meta (file_id, meta_index, meta_key, string_value, number_value, date_value) VALUES %s
"""
BULK_EVENT_META = """
INSERT INTO event_meta (event_id, meta_index, meta_key, string_value, number_value, date_value) VALUES %s
"""
BULK_EVENT_FILES = "INSERT INTO event_file (event_id, file_index, file_id) VALUES %s"
BULK_IMPORTS = """
INSERT INTO import_record (entity_id, entity_type, user_id) VALUES %s ON CONFLICT (entity_id) DO NOTHING
"""
PAGE = 1000


class BatchStore:
    """Mixed into MeteorDatabase: bulk look-ups and bulk imports for the fast path."""

    @retry_stale
    def missing_ids(self, status_ids: Iterable[uuid.UUID] = (), event_ids: Iterable[uuid.UUID] = (),
                    file_ids: Iterable[uuid.UUID] = ()) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
        """(statuses, events, file records) among those given that are not held, in given order."""
        out = []
        with self.transaction() as cur:
            for query, ids in ((HELD_STATUSES, list(status_ids)), (HELD_EVENTS, list(event_ids)),
                               (HELD_FILES, list(file_ids))):
                if not ids:
                    out.append([])
                    continue
                cur.execute(query, {"ids": ids})
                held = {row[0] for row in cur.fetchall()}
                out.append([i for i in ids if i not in held])
        return out[0], out[1], out[2]

    @retry_stale
    def upload_failure_counts(self, file_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Failed uploads so far for each of ``file_ids`` that has any."""
        ids = list(file_ids)
        if not ids:
            return {}
        with self.transaction() as cur:
            cur.execute(SELECT_UPLOAD_FAILURES, {"ids": ids})
            return dict(cur.fetchall())

    @retry_stale
    def import_batch(self, statuses: Iterable[CameraStatus], entities: Iterable[Event | FileRecord],
                     user_id: str) -> dict[uuid.UUID, str | None]:
        """Import statuses, then events and files, in one transaction; {entity id: None or why not}.

        Same rules as ``import_event``/``import_file_record``: an entity already held is a no-op
        (None), one that contradicts what is held is refused with the reason and nothing of it
        is written; either way the others of the batch are unaffected.
        """
        entities = sorted(entities, key=lambda e: (isinstance(e, FileRecord), _entity_id(e).bytes))
        results: dict[uuid.UUID, str | None] = {}
        with self.transaction() as cur:
            for status in sorted(statuses, key=lambda s: (s.camera_id, s.status_id.bytes)):
                self._insert_status(cur, status)
            held = set(_held(cur, HELD_EVENTS, [e.event_id for e in entities if isinstance(e, Event)]))
            held |= set(_held(cur, HELD_FILES, [e.file_id for e in entities if isinstance(e, FileRecord)]))
            rows = self._status_rows(cur, {s for e in entities for s in _status_ids(e)})
            accepted, longitudes = [], {sid: row[4] for sid, row in rows.items()}
            for entity in entities:
                entity_id = _entity_id(entity)
                problem = None if entity_id in held else self._check_importable(cur, entity, rows)[0]
                results[entity_id] = problem
                if problem is None and entity_id not in held:
                    accepted.append(entity)
            self._insert_many(cur, accepted, longitudes, user_id)
        return results

    def _insert_many(self, cur, entities: list[Event | FileRecord], longitudes: dict, user_id: str) -> None:
        events = [e for e in entities if isinstance(e, Event)]
        new_events = set(_returned(cur, BULK_EVENTS, [
            (e.event_id, e.camera_id, e.status_id, e.event_time,
             night_offset_seconds(e.event_time, longitudes[e.status_id]), str(e.event_type)) for e in events]))
        events = [e for e in events if e.event_id in new_events]
        files = sorted({f.file_id: f for e in events for f in e.files}.values(), key=lambda f: f.file_id.bytes)
        files += [e for e in entities if isinstance(e, FileRecord)]
        new_files = set(_returned(cur, BULK_FILES, [
            tuple(_file_params(f, longitudes[f.status_id]).values()) for f in files]))
        files = [f for f in files if f.file_id in new_files]
        _insert(cur, BULK_FILE_META, [tuple(r.values()) for f in files for r in _meta_rows(f.file_id, f.meta)])
        _insert(cur, BULK_EVENT_META, [tuple(r.values()) for e in events for r in _meta_rows(e.event_id, e.meta)])
        _insert(cur, BULK_EVENT_FILES, [(e.event_id, i, f.file_id) for e in events for i, f in enumerate(e.files)])
        if user_id is not None:  # None: registered on this node, not imported
            _insert(cur, BULK_IMPORTS, [(e.event_id, "event", user_id) for e in events]
                    + [(f.file_id, "file", user_id) for f in files])


def _held(cur, query: str, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    if not ids:
        return []
    cur.execute(query, {"ids": ids})
    return [row[0] for row in cur.fetchall()]


def _returned(cur, query: str, rows: list[tuple]) -> list:
    if not rows:
        return []
    return [row[0] for row in execute_values(cur, query, rows, page_size=PAGE, fetch=True)]


def _insert(cur, query: str, rows: list[tuple]) -> None:
    if rows:
        execute_values(cur, query, rows, page_size=PAGE)


def _status_ids(entity: Event | FileRecord) -> set[uuid.UUID]:
    return {entity.status_id} | ({f.status_id for f in entity.files} if isinstance(entity, Event) else set())


def _entity_id(entity: Event | FileRecord) -> uuid.UUID:
    return entity.event_id if isinstance(entity, Event) else entity.file_id
