"""Many entities per round trip: what the fast path (protocol version 2) asks of storage.

Version 1 costs a request per entity and two per missing file; over a 40 ms link that is
minutes per night. Here one query says which of many ids are missing, and one transaction
imports many entities set-wise: the statuses they refer to and the file records they name are
read once, each entity is checked against them (and its bytes against the store) in Python, and
those that pass are written by a few multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
statements, in id order so two batches that overlap take their row locks in the same order and
cannot deadlock.

One refused entity never costs the others. An id sent twice is imported once (two different
copies of one id are both refused: neither could be answered complete). A file id held, or named
earlier in the batch, with another MD5 refuses the entity naming it; so does an id held (or named
earlier) whose copy says something else (records.content_contradiction). The set-wise write runs
under one savepoint; when the database refuses it (a constraint, a value it cannot hold, a file
row written meanwhile by another import with another MD5), the transaction rolls back to that
savepoint and writes the entities again one by one, each under a savepoint of its own, so only
the refused ones are left out, each answered with the reason. Statuses are written the same way
before them. An entity another import wrote meanwhile is simply not returned by its insert, and
its parts are left to that import.
"""
from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Callable, Iterable

import psycopg2

from meteorpi_model import CameraStatus, Event, FileRecord
from meteorpi_model.differences import first_difference
from meteorpi_model.logtext import escape_log_text

from .errors import Conflict
from .pool import retry_stale
from .records import describe, files_of, held_content_problem, held_md5_problem

log = logging.getLogger("meteorpi.db")
# What the database may refuse of one entity's rows, refusing that entity and not the batch: a
# constraint, a value it cannot hold, a contradiction found while writing. Lost connections,
# deadlocks and serialisation failures (OperationalError) still end the whole transaction: it is
# retried whole (retry_stale) or answered 503.
REFUSALS = (Conflict, psycopg2.IntegrityError, psycopg2.DataError, psycopg2.NotSupportedError)

class BatchStore:
    """Mixed into MeteorDatabase: bulk look-ups and bulk imports for the fast path."""

    @retry_stale
    def missing_ids(self, status_ids: Iterable[uuid.UUID] = (), event_ids: Iterable[uuid.UUID] = (),
                    file_ids: Iterable[uuid.UUID] = ()) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
        """(statuses, events, file records) among those given that are not held, in given order."""
        out = []
        with self.transaction() as cur:
            for held_among, ids in ((self._held_status_ids, list(status_ids)), (self._held_event_ids, list(event_ids)),
                                    (self._held_file_ids, list(file_ids))):
                held = held_among(cur, ids)
                out.append([i for i in ids if i not in held])
        return out[0], out[1], out[2]

    @retry_stale
    def import_batch(self, statuses: Iterable[CameraStatus], entities: Iterable[Event | FileRecord],
                     user_id: str) -> dict[uuid.UUID, str | None]:
        """Import statuses, then events and files, in one transaction; {id: None or why not} for
        every status, event and file record sent, statuses first, each in the order first sent.

        Same rules as ``import_camera_status``/``import_event``/``import_file_record``: an id
        already held is a no-op (None) unless what was sent contradicts what is held (a status
        or record saying something else, a file id held with another MD5): then it is refused
        with the reason and nothing of it is written; an entity whose status is refused is
        refused naming it; either way the others of the batch are unaffected. Each id is
        answered once, however often it was sent: a status too, so that a node is told why a
        status of its was not taken (two differing copies, a held one changed) instead of
        meeting silence. An id sent both as a status and as an event or file record is refused
        as both (answers are keyed by id alone: neither could be told apart).
        """
        statuses, entities = list(statuses), list(entities)
        sent_statuses = list(dict.fromkeys(s.status_id for s in statuses))
        clashes = _status_entity_clashes(statuses, entities)
        entities, results = _distinct([e for e in entities if e.entity_id not in clashes])
        statuses, twice = _distinct_statuses([s for s in statuses if s.status_id not in clashes])
        results.update(clashes)
        with self.transaction() as cur:
            refused_statuses = clashes | twice | _write_or_each_alone(
                cur, statuses, lambda some: [self._insert_status(cur, s) for s in some],
                lambda s: s.status_id, describe)
            accepted, longitudes, checked = self._accept(cur, entities, refused_statuses, results)
            results.update(_write_or_each_alone(
                cur, accepted, lambda some: self._insert_many(cur, some, longitudes, user_id, checked),
                lambda e: e.entity_id, describe))
        answered = {status_id: refused_statuses.get(status_id) for status_id in sent_statuses}
        answered.update(results)  # a clash's one entry says the same either way
        return answered

    def _accept(self, cur, entities: list[Event | FileRecord], refused_statuses: dict[uuid.UUID, str],
                results: dict) -> tuple[list[Event | FileRecord], dict[uuid.UUID, float], set[uuid.UUID]]:
        """Check each entity against what is held and what the batch named before it; fills
        ``results``; (the entities to write, {status_id: longitude} of the statuses held, the
        file ids found held and compared)."""
        held_events = self._held_event_ids(cur, [e.event_id for e in entities if isinstance(e, Event)])
        held_md5 = self._held_md5s(cur, {f.file_id for e in entities for f in files_of(e)})
        # The held copies a re-sent entity (or a new event's held file) must agree with: read only
        # when the batch names something held.
        copies = self._held_records(cur, held_events, held_md5) if held_events or held_md5 else {}
        named: dict[uuid.UUID, str] = {}  # file_id -> MD5 of the files the batch's accepted entities name
        named_files: dict[uuid.UUID, FileRecord] = {}  # and those files
        rows = self._status_rows(cur, {s for e in entities for s in e.status_ids})
        accepted = []
        for entity in entities:
            entity_id = entity.entity_id
            held = entity_id in held_events if isinstance(entity, Event) else entity_id in held_md5
            problem = (_refused_status(entity, refused_statuses)
                       or held_md5_problem(entity, named, "is named earlier in this request")
                       or held_content_problem(entity, named_files, "is named earlier in this request")
                       or (held_md5_problem(entity, held_md5) or held_content_problem(entity, copies) if held
                           else self._check_importable(cur, entity, rows, held_md5, copies)[0]))
            results[entity_id] = problem
            if problem is None:
                for f in files_of(entity):
                    if f.file_id not in held_md5:
                        named[f.file_id], named_files[f.file_id] = f.md5, f
                if not held:
                    accepted.append(entity)
        return accepted, {sid: row[4] for sid, row in rows.items()}, set(held_md5)


@contextlib.contextmanager
def _savepoint(cur):
    """Undo what the block wrote if the database (or a check) refuses it; the transaction goes on."""
    cur.execute("SAVEPOINT batch_part")
    try:
        yield
    except REFUSALS:
        cur.execute("ROLLBACK TO SAVEPOINT batch_part")
        raise
    cur.execute("RELEASE SAVEPOINT batch_part")


def _write_or_each_alone(cur, items: list, write: Callable[[list], object], key: Callable,
                         describe: Callable) -> dict[uuid.UUID, str]:
    """Write ``items`` together under one savepoint; if that is refused, roll back to it and write
    each alone under its own, leaving out only those refused: {key(item): why} for them.

    The first attempt costs two statements more than no savepoint at all; the one-by-one
    fallback runs only for a batch that holds a refusal.
    """
    if not items:
        return {}
    try:
        with _savepoint(cur):
            write(items)
        return {}
    except REFUSALS as e:
        # The database's words may quote a value of the batch (what a client sent): escaped.
        log.info("a batch of %d was refused as a whole (%s); writing each alone", len(items),
                 escape_log_text(_reason(e)))
    refused = {}
    for item in items:
        try:
            with _savepoint(cur):
                write([item])
        except REFUSALS as e:
            reason = _reason(e)
            refused[key(item)] = reason if reason.startswith(describe(item)) else f"{describe(item)}: {reason}"
            log.warning("import refused: %s", escape_log_text(refused[key(item)]))
    return refused


def _reason(error: Exception) -> str:
    """What the database said, without the row's values (its first line: no DETAIL)."""
    if isinstance(error, psycopg2.Error):
        primary = error.diag.message_primary or str(error).strip().splitlines()[0]
        return f"the database refused it ({primary})"
    return str(error)


def _distinct(entities: Iterable[Event | FileRecord]) -> tuple[list[Event | FileRecord], dict[uuid.UUID, str | None]]:
    """Each id once, events first, each kind in id order (the order rows are locked in); and
    {id: why} for the ids sent twice with different content, neither copy of which is kept."""
    by_id: dict[uuid.UUID, Event | FileRecord] = {}
    different: dict[uuid.UUID, str] = {}
    for entity in entities:
        entity_id = entity.entity_id
        first = by_id.setdefault(entity_id, entity)
        if type(first) is not type(entity):
            different[entity_id] = (f"id {entity_id.hex}: sent in this request both as an event and as a file "
                                    f"record; an id names one entity")
        elif first is not entity and first_difference(first, entity) and entity_id not in different:
            different[entity_id] = f"{describe(first)}: sent twice in this request, with different content"
    refused = dict(different)
    unique = [e for i, e in by_id.items() if i not in different]
    return sorted(unique, key=lambda e: (isinstance(e, FileRecord), e.entity_id.bytes)), refused


def _distinct_statuses(statuses: Iterable[CameraStatus]) -> tuple[list[CameraStatus], dict[uuid.UUID, str]]:
    """Each status once, in the order their cameras are locked in; and {id: why} for the ids sent
    twice saying different things (their end of validity aside), neither copy of which is kept."""
    by_id: dict[uuid.UUID, CameraStatus] = {}
    twice: dict[uuid.UUID, str] = {}
    for status in statuses:
        first = by_id.setdefault(status.status_id, status)
        if first is not status and first_difference(first, status) and status.status_id not in twice:
            twice[status.status_id] = f"{describe(status)}: sent twice in this request, with different content"
    unique = [s for i, s in by_id.items() if i not in twice]
    return sorted(unique, key=lambda s: (s.camera_id, s.status_id.bytes)), twice


def _status_entity_clashes(statuses: list[CameraStatus], entities: list[Event | FileRecord]) -> dict[uuid.UUID, str]:
    """{id: why} for the ids sent in this request both as a status and as an event or file record."""
    kinds = {e.entity_id: "an event" if isinstance(e, Event) else "a file record" for e in entities}
    return {s.status_id: f"id {s.status_id.hex}: sent in this request both as a camera status and as "
                         f"{kinds[s.status_id]}; an id names one entity"
            for s in statuses if s.status_id in kinds}


def _refused_status(entity: Event | FileRecord, refused_statuses: dict[uuid.UUID, str]) -> str | None:
    for status_id in sorted(entity.status_ids, key=lambda s: s.bytes):
        if status_id in refused_statuses:
            return f"{describe(entity)}: its {refused_statuses[status_id]}"
    return None
