"""What the archive does with an event or file record a node sends: decided once, in one transaction.

An import is answered by what the archive holds: the record may be stored now, be held already,
need the camera status it refers to, need the bytes of one of its files, or be refused (why).
``import_entity`` decides and stores in one transaction, so an import whose status and bytes
are held costs one commit, and nothing can change between the decision and the write. The
import service maps each outcome to its protocol's answer.

The rules, in the order the version-1 protocol answers them (docs/protocol.md):

1. a file id held with another MD5 refuses the record naming it (never answered complete);
2. a record already held is a no-op, when the held copy says the same (else it is refused, naming
   the first field that differs: an id names one record for good); so is each held file of an event;
3. every status the record and its files refer to must be held (else: needs that status);
4. the record and each file must fit their status: its camera, and a time inside its validity;
5. each file's verified bytes must be held (else: needs them, unless bytes under another MD5 are
   there, or this account's uploads of them were refused ``server.max_failed_uploads`` times).

``import_event``/``import_file_record`` (and the fast path, batches.py) apply the same rules to
records whose statuses and bytes must already be held, raising ``Conflict`` with the reason.
"""
from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass

from meteorpi_model import Event, FileRecord, instant_to_ms

from .errors import Conflict
from .pool import retry_stale
from .records import content_contradiction, files_of, held_content_problem, held_md5_problem, md5_contradiction
from .upload_failures import refused_too_often


# What the archive holds of one entity: its file records' MD5s, its statuses' camera, validity
# and longitude, and the event itself. The tables are records.py's and statuses.py's; read here
# together because a version-1 import is one request, and each round trip costs it.
WHAT_IS_HELD = """
SELECT 'file', file_id, md5, NULL, NULL::timestamptz, NULL::timestamptz, NULL::double precision
FROM file_record WHERE file_id = ANY(%(file_ids)s::uuid[])
UNION ALL
SELECT 'status', status_id, NULL, camera_id, valid_from, valid_to, long
FROM camera_status WHERE status_id = ANY(%(status_ids)s::uuid[])
UNION ALL
SELECT 'event', event_id, NULL, NULL, NULL, NULL, NULL FROM event WHERE event_id = %(event_id)s
"""


class ImportOutcome:
    """What ``import_entity`` did with a record, or what it needs first."""


@dataclass(frozen=True)
class Stored(ImportOutcome):
    """The record (with its files, metadata and file order) is held now, written by this import."""


@dataclass(frozen=True)
class AlreadyHeld(ImportOutcome):
    """The record was held before (by an earlier import, or a concurrent one): nothing written."""


@dataclass(frozen=True)
class NeedsStatus(ImportOutcome):
    """The camera status ``status_id`` is not held: send it, then the record again."""
    status_id: uuid.UUID


@dataclass(frozen=True)
class NeedsBytes(ImportOutcome):
    """The verified bytes of file ``file_id`` are not held: upload them, then the record again."""
    file_id: uuid.UUID


@dataclass(frozen=True)
class Refused(ImportOutcome):
    """The record cannot be held: ``reason`` names the field path and what is wrong."""
    reason: str


class ImportStore:
    """Mixed into MeteorDatabase: deciding imports against what is held."""

    @retry_stale
    def import_entity(self, entity: Event | FileRecord, user_id: str | None) -> ImportOutcome:
        """Decide what an event or file record sent by ``user_id`` gets, and store it when it may
        be stored, in one transaction. Stray bytes found under another MD5 are removed and count
        as a refused upload of the file."""
        try:
            with self.transaction() as cur:
                return self._decide_import(cur, entity, user_id)
        except Conflict as e:  # a row another import wrote since we looked says otherwise
            return Refused(str(e))

    def _decide_import(self, cur, entity: Event | FileRecord, user_id: str | None) -> ImportOutcome:
        parts = _parts(entity)
        files = [(path, item) for path, item in parts if isinstance(item, FileRecord)]
        held_md5, rows, event_held = _what_is_held(cur, entity, parts)
        for path, record in files:
            problem = md5_contradiction(record, held_md5.get(record.file_id))
            if problem:
                return Refused(f"{path}.md5: {problem}")
        held_whole = entity.file_id in held_md5 if isinstance(entity, FileRecord) else event_held
        problem = self._held_parts_problem(cur, parts, held_md5, held_whole)
        if problem:
            return Refused(problem)
        if held_whole:
            return AlreadyHeld()
        for _, item in parts:
            if item.status_id not in rows:
                return NeedsStatus(item.status_id)
        for path, item in parts:
            problem = _misfit_at_path(path, item, rows[item.status_id])
            if problem:
                return Refused(problem)
        for path, record in files:
            if not self.file_store.has(record.file_id, record.md5):
                return self._bytes_wanted(cur, path, record, user_id)
        written = self._insert_many(cur, [entity], {status_id: row[4] for status_id, row in rows.items()}, user_id,
                                    checked=held_md5)
        return Stored() if (entity.event_id if isinstance(entity, Event) else entity.file_id) in written else AlreadyHeld()

    def _held_parts_problem(self, cur, parts: list[tuple[str, Event | FileRecord]], held_md5: dict,
                            held_whole: bool) -> str | None:
        """Why the entity (when ``held_whole``: compared whole) or one of its files held already
        says something else than the held copy, worded at its field path; None when all agree.
        Reads only when something is held: a new record with new files costs nothing more."""
        entity = parts[0][1]
        compared = parts[:1] if held_whole else [(p, f) for p, f in parts[1:] if f.file_id in held_md5]
        if not compared:
            return None
        held = self._held_records(cur, [entity.event_id] if held_whole and isinstance(entity, Event) else [],
                                  [f.file_id for _, f in compared if isinstance(f, FileRecord)])
        for path, item in compared:
            problem = content_contradiction(held[item.entity_id], item) if item.entity_id in held else None
            if problem:  # a file of the entity is named at its path; the entity names itself
                return f"{path}: {problem}" if item is not entity else problem
        return None

    def _bytes_wanted(self, cur, path: str, record: FileRecord, user_id: str | None) -> ImportOutcome:
        """The file's bytes are not held: ask for them, unless that is pointless."""
        problem = self._stray_bytes(cur, path, record, user_id)
        if problem:
            return Refused(problem)
        failures = self._upload_failures(cur, record.file_id, record.md5, user_id)
        if failures >= self.config.server.max_failed_uploads:
            return Refused(refused_too_often(record.file_id, record.md5, failures))
        return NeedsBytes(record.file_id)

    def _stray_bytes(self, cur, path: str, record: FileRecord, user_id: str | None) -> str | None:
        """Why bytes held for this file id under another MD5 make the record fail, if they do.

        An exporter may put the MD5 of the bytes it has now in the upload URL: they verify
        against that and are stored, yet never match the record, and it would be asked for them
        for ever. Such stray bytes count as a refused upload and are removed (so a later, right
        upload is asked for); bytes of a held record are the record's, never removed.
        """
        other_md5 = self.file_store.held_md5(record.file_id)
        if other_md5 is None or other_md5 == record.md5.lower():
            return None  # none, or the right bytes, published by a concurrent upload since we looked
        held_md5 = self._held_md5s(cur, [record.file_id]).get(record.file_id)  # written meanwhile?
        problem = md5_contradiction(record, held_md5)
        if problem:
            return f"{path}.md5: {problem}"
        if held_md5 is not None:
            return None  # held with this record's MD5: its bytes are asked for, the stray ones stay
        self.file_store.remove(record.file_id, other_md5)
        count = self._add_upload_failure(cur, record.file_id, record.md5, user_id)
        return (f"{path}.md5: the bytes uploaded for file {record.file_id.hex} have MD5 {other_md5}, "
                f"the record says {record.md5} (refused uploads of this file so far: {count})")

    # -- records whose statuses and bytes must be held: Conflict otherwise ----------------------
    def _check_importable(self, cur, entity: Event | FileRecord, statuses: dict | None = None,
                          held_md5: dict[uuid.UUID, str] | None = None,
                          held_files: dict[uuid.UUID, FileRecord] | None = None) -> tuple[str | None, dict]:
        """(problem, {status_id: longitude}): why ``entity`` cannot be stored now, if it cannot.
        ``statuses`` (status_id -> validity row), ``held_md5`` (file_id -> MD5 of the records
        held) and ``held_files`` (file_id -> those records) spare the queries when a batch loaded
        them."""
        timed = [item for _, item in _parts(entity)]
        if statuses is None:
            statuses = self._status_rows(cur, {t.status_id for t in timed})
        for item in timed:
            what = f"{'event' if isinstance(item, Event) else 'file'} {item.event_id.hex if isinstance(item, Event) else item.file_id.hex}"
            row = statuses.get(item.status_id)
            if row is None:
                return f"{what}: camera status {item.status_id.hex} is not held", {}
            misfit = _misfit(item, row)
            _, camera_id, valid_from, valid_to, _ = row
            if misfit == "camera":
                return f"{what}: camera {item.camera_id!r} differs from status {item.status_id.hex}'s camera {camera_id!r}", {}
            if misfit == "time":
                return (f"{what}: time {_time_of(item).isoformat()} lies outside the validity of camera status "
                        f"{item.status_id.hex} ({valid_from.isoformat()} to "
                        f"{valid_to.isoformat() if valid_to else 'open'})"), {}
        files = [item for item in timed if isinstance(item, FileRecord)]
        if held_md5 is None:
            held_md5 = self._held_md5s(cur, [f.file_id for f in files])
        problem = held_md5_problem(entity, held_md5)
        if problem:
            return problem, {}
        held_here = [f.file_id for f in files if f.file_id in held_md5]
        if held_here:
            if held_files is None:
                held_files = self._held_records(cur, [], held_here)
            problem = held_content_problem(entity, held_files)
            if problem:
                return problem, {}
        for f in files:
            if not self.file_store.has(f.file_id, f.md5):
                return f"file {f.file_id.hex}: verified bytes with MD5 {f.md5} are not held", {}
        return None, {t.status_id: statuses[t.status_id][4] for t in timed}

    @retry_stale
    def import_problem(self, entity: Event | FileRecord) -> str | None:
        """Why ``entity`` could not be imported right now (None when it could); writes nothing."""
        with self.transaction() as cur:
            return self._check_importable(cur, entity)[0]

    def _import(self, entity: Event | FileRecord, user_id: str) -> bool:
        with self.transaction() as cur:
            held_md5 = self._held_md5s(cur, [f.file_id for f in files_of(entity)])
            held = self._has_event(cur, entity.event_id) if isinstance(entity, Event) else entity.file_id in held_md5
            if held:  # a no-op, unless what is held says otherwise
                problem = held_md5_problem(entity, held_md5) or held_content_problem(
                    entity, self._held_records(cur, [entity.event_id] if isinstance(entity, Event) else [],
                                               [] if isinstance(entity, Event) else [entity.file_id]))
                if problem:
                    raise Conflict(problem)
                return False
            problem, longitudes = self._check_importable(cur, entity, held_md5=held_md5)
            if problem:
                raise Conflict(problem)
            written = self._insert_many(cur, [entity], longitudes, user_id, checked=held_md5)
            return (entity.event_id if isinstance(entity, Event) else entity.file_id) in written

    @retry_stale
    def import_file_record(self, file_record: FileRecord, user_id: str) -> bool:
        """Hold a stand-alone file record from ``user_id``; False if it was already held.
        Raises Conflict (nothing written) when its status or bytes are missing or contradict it,
        or its id is held with another MD5."""
        return self._import(file_record, user_id)

    @retry_stale
    def import_event(self, event: Event, user_id: str) -> bool:
        """Hold an event, its files, metadata and file order in one transaction; False if held.
        Raises Conflict (nothing written) when a status or file's bytes are missing or contradict it,
        or one of its file ids is held with another MD5."""
        return self._import(event, user_id)


def _what_is_held(cur, entity: Event | FileRecord, parts: list[tuple[str, Event | FileRecord]]
                  ) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, tuple], bool]:
    """({file_id: MD5} of the entity's file records held, {status_id: validity row} of its
    statuses held, whether the event is held), read in one round trip: the decision's only read."""
    cur.execute(WHAT_IS_HELD, {
        "file_ids": [item.file_id for _, item in parts if isinstance(item, FileRecord)],
        "status_ids": list({item.status_id for _, item in parts}),
        "event_id": entity.event_id if isinstance(entity, Event) else None})
    held_md5, rows, event_held = {}, {}, False
    for kind, held_id, md5, camera_id, valid_from, valid_to, longitude in cur.fetchall():
        if kind == "file":
            held_md5[held_id] = md5
        elif kind == "status":
            rows[held_id] = (held_id, camera_id, valid_from, valid_to, longitude)
        else:
            event_held = True
    return held_md5, rows, event_held


def _parts(entity: Event | FileRecord) -> list[tuple[str, Event | FileRecord]]:
    """(field path, record) of the entity and each of its files, in the order they are checked."""
    if isinstance(entity, FileRecord):
        return [("file", entity)]
    return [("event", entity)] + [(f"event.files[{i}]", f) for i, f in enumerate(entity.files)]


def _time_of(item: Event | FileRecord) -> _dt.datetime:
    return item.event_time if isinstance(item, Event) else item.file_time


def _misfit(item: Event | FileRecord, row: tuple) -> str | None:
    """How ``item`` does not fit the status of ``row`` (status_id, camera_id, valid_from,
    valid_to, long): ``camera`` (another camera's), ``time`` (outside its validity), or None."""
    _, camera_id, valid_from, valid_to, _ = row
    if item.camera_id != camera_id:
        return "camera"
    time = _time_of(item)
    if time < valid_from or (valid_to is not None and time >= valid_to):
        return "time"
    return None


def _misfit_at_path(path: str, item: Event | FileRecord, row: tuple) -> str | None:
    """``_misfit`` worded for the record at ``path``, as the import service answers it."""
    misfit = _misfit(item, row)
    if misfit is None:
        return None
    status_id, camera_id, valid_from, valid_to, _ = row
    if misfit == "camera":
        return f"{path}.camera_id: {item.camera_id!r} differs from camera {camera_id!r} of status {status_id.hex}"
    name = "event_time" if isinstance(item, Event) else "file_time"
    until = f"until {_ms(valid_to)}" if valid_to else "onwards"
    return (f"{path}.{name}: {_ms(_time_of(item))} lies outside the validity of status {status_id.hex} "
            f"(from {_ms(valid_from)} {until})")


def _ms(value: _dt.datetime) -> str:
    value = value.astimezone(_dt.timezone.utc)
    return f"{instant_to_ms(value)} ({value.isoformat()})"
