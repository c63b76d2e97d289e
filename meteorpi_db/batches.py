"""Many entities per round trip: what the fast path (protocol version 2) asks of storage.

Version 1 costs a request per entity and two per missing file; over a 40 ms link that is
minutes per night. Here one query says which of many ids are missing, and one transaction
imports many entities, each behind its own savepoint so one that contradicts its status is
refused alone while the rest are stored. Entities are imported in id order so two batches
that overlap take their row locks in the same order and cannot deadlock.
"""
from __future__ import annotations

import uuid
from typing import Iterable

from meteorpi_model import CameraStatus, Event, FileRecord

from .pool import retry_stale

HELD_STATUSES = "SELECT status_id FROM camera_status WHERE status_id = ANY(%(ids)s)"
HELD_EVENTS = "SELECT event_id FROM event WHERE event_id = ANY(%(ids)s)"
HELD_FILES = "SELECT file_id FROM file_record WHERE file_id = ANY(%(ids)s)"
SELECT_UPLOAD_FAILURES = "SELECT file_id, failures FROM upload_failure WHERE file_id = ANY(%(ids)s)"


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
        results: dict[uuid.UUID, str | None] = {}
        ordered = sorted(entities, key=lambda e: (isinstance(e, FileRecord), _entity_id(e).bytes))
        with self.transaction() as cur:
            for status in sorted(statuses, key=lambda s: (s.camera_id, s.status_id.bytes)):
                self._insert_status(cur, status)
            for entity in ordered:
                entity_id = _entity_id(entity)
                cur.execute("SAVEPOINT entity")
                cur.execute(HELD_EVENTS if isinstance(entity, Event) else HELD_FILES, {"ids": [entity_id]})
                if cur.fetchone() is not None:
                    results[entity_id] = None
                    cur.execute("RELEASE SAVEPOINT entity")
                    continue
                problem, longitudes = self._check_importable(cur, entity)
                if problem:
                    results[entity_id] = problem
                    cur.execute("ROLLBACK TO SAVEPOINT entity")
                    continue
                if isinstance(entity, Event):
                    self._insert_event(cur, entity, longitudes, user_id)
                else:
                    self._insert_file(cur, entity, longitudes[entity.status_id], user_id)
                cur.execute("RELEASE SAVEPOINT entity")
                results[entity_id] = None
        return results


def _entity_id(entity: Event | FileRecord) -> uuid.UUID:
    return entity.event_id if isinstance(entity, Event) else entity.file_id
