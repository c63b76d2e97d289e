"""Registering a whole batch of what a camera recorded — e.g. an RMS night — all or nothing.

``register_file``/``register_event`` take one entity per transaction and mint random ids;
an ingest of recorded data wants the opposite: ids it derived from the data (so a repeat
registers nothing), and one transaction for the whole batch, so a failure never leaves half
a night. The bytes must already be in the file store (``FileStore.store_files``): a failure
here leaves them as orphans, which are harmless because the store is content-addressed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from meteorpi_model import CameraStatus, Event, FileRecord

from .errors import Conflict
from .pool import retry_stale


@dataclass(frozen=True)
class Registered:
    """How many of each kind the registration added (0 everywhere: it was all held)."""
    statuses: int
    events: int
    files: int


class RegistrationStore:
    """Mixed into MeteorDatabase: atomic registration of recorded entities with given ids."""

    @retry_stale
    def register_recorded(self, statuses: Iterable[CameraStatus],
                          entities: Iterable[Event | FileRecord]) -> Registered:
        """Store statuses (kept as given: id and validity), then events with their files and
        stand-alone files, in one transaction. Held ids are no-ops. Raises Conflict, and writes
        nothing, when any entity's time lies outside its status or its bytes are not held."""
        statuses = sorted(statuses, key=lambda s: (s.camera_id, s.status_id.bytes))
        entities = sorted(entities, key=lambda e: (isinstance(e, FileRecord), e.entity_id.bytes))
        for item in [*statuses, *entities]:
            item.validate()
        with self.transaction() as cur:
            new_statuses = sum(1 for s in statuses if self._insert_status(cur, s))
            events = [e for e in entities if isinstance(e, Event)]
            files = {f.file_id: f for e in events for f in e.files}
            files.update({f.file_id: f for f in entities if isinstance(f, FileRecord)})
            # Read once for the whole batch: a query per entity cost 600 round trips a night.
            held_md5 = self._held_md5s(cur, files)
            held = self._held_event_ids(cur, [e.event_id for e in events]) | set(held_md5)
            rows = self._status_rows(cur, {e.status_id for e in events} | {f.status_id for f in files.values()})
            accepted = []
            for entity in entities:
                if entity.entity_id in held:
                    continue
                problem = self._check_importable(cur, entity, rows, held_md5)[0]
                if problem:
                    raise Conflict(problem)
                accepted.append(entity)
            self._insert_many(cur, accepted, {sid: row[4] for sid, row in rows.items()}, None)
        new_events = sum(1 for e in events if e.event_id not in held)
        return Registered(new_statuses, new_events, sum(1 for i in files if i not in held))

