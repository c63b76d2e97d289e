"""File records and events: their rows, registered on a camera node, written by imports.

This module owns the SQL of ``event``, ``event_meta``, ``event_file``, ``file_record``,
``file_meta`` and ``import_record``; what may be imported is decided in imports.py. An event is stored with its file records, their metadata and the file order in one
transaction; an id already held makes the import a no-op (``ON CONFLICT DO NOTHING``), so two
nodes delivering the same event at the same moment both succeed and one copy is kept
(docs/protocol.md weak point 4). A file id held with another MD5 is no such no-op: the record that
says otherwise is refused (``Conflict``), checked before writing and again on every file row an
insert found already held (another import may have written it meanwhile), so a node is never
told its version arrived while the archive keeps another. Nor is a held id whose copy sent says
something else in any other field (``content_contradiction``), checked at the same two points.
"""
from __future__ import annotations

import datetime as _dt
import os
import uuid
from collections import defaultdict
from typing import Iterable, Mapping

from psycopg2.extras import execute_values

from meteorpi_model import CameraStatus, Event, FileRecord, Meta, NSString, as_uuid, night_offset_seconds
from meteorpi_model.differences import first_difference

from .errors import Conflict
from .pool import retry_stale

SELECT_FILES = """
SELECT file_id, camera_id, status_id, file_time, mime_type, semantic_type, file_name, file_size, md5
FROM file_record WHERE file_id = ANY(%(ids)s)
"""
SELECT_FILE_META = """
SELECT file_id, meta_key, string_value, number_value, date_value FROM file_meta
WHERE file_id = ANY(%(ids)s) ORDER BY file_id, meta_index
"""
SELECT_EVENTS = """
SELECT event_id, camera_id, status_id, event_time, event_type FROM event WHERE event_id = ANY(%(ids)s)
"""
SELECT_EVENT_META = """
SELECT event_id, meta_key, string_value, number_value, date_value FROM event_meta
WHERE event_id = ANY(%(ids)s) ORDER BY event_id, meta_index
"""
SELECT_EVENT_FILES = """
SELECT event_id, file_id FROM event_file WHERE event_id = ANY(%(ids)s) ORDER BY event_id, file_index
"""
HAS_FILE = "SELECT 1 FROM file_record WHERE file_id = %(id)s"
SELECT_FILE_MD5S = "SELECT file_id, md5 FROM file_record WHERE file_id = ANY(%(ids)s)"
HAS_EVENT = "SELECT 1 FROM event WHERE event_id = %(id)s"
HELD_EVENTS = "SELECT event_id FROM event WHERE event_id = ANY(%(ids)s)"
HELD_FILES = "SELECT file_id FROM file_record WHERE file_id = ANY(%(ids)s)"
# Many at once (the fast path, registrations): one statement per PAGE rows.
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

def _meta_rows(owner_id: uuid.UUID, metas: Iterable[Meta]) -> list[dict]:
    rows = []
    for i, m in enumerate(metas):
        rows.append({"owner_id": owner_id, "meta_index": i, "meta_key": str(m.key),
                     "string_value": m.value if m.type == "string" else None,
                     "number_value": m.value if m.type == "number" else None,
                     "date_value": m.value if m.type == "date" else None})
    return rows


def meta_from_row(key, string_value, number_value, date_value) -> Meta:
    if date_value is not None:
        return Meta(key=NSString.from_string(key), value=_utc(date_value), type="date")
    if number_value is not None:
        value = int(number_value) if float(number_value).is_integer() and abs(number_value) < 2 ** 53 else number_value
        return Meta(key=NSString.from_string(key), value=value, type="number")
    return Meta(key=NSString.from_string(key), value=string_value or "", type="string")


def _utc(value: _dt.datetime) -> _dt.datetime:
    return value.astimezone(_dt.timezone.utc)


def md5_contradiction(record: FileRecord, held_md5: str | None, held_as: str = "is held") -> str | None:
    """Why ``record`` contradicts the record held for its file id (another MD5), if it does."""
    if held_md5 is None or held_md5.lower() == record.md5.lower():
        return None
    return f"file {record.file_id.hex} {held_as} with MD5 {held_md5.lower()}, this record says {record.md5.lower()}"


def held_md5_problem(entity: Event | FileRecord, held_md5: Mapping[uuid.UUID, str],
                     held_as: str = "is held") -> str | None:
    """The first of ``entity``'s files held (``held_md5``: file_id -> MD5) with another MD5."""
    for record in files_of(entity):
        problem = md5_contradiction(record, held_md5.get(record.file_id), held_as)
        if problem:
            return problem if isinstance(entity, FileRecord) else f"event {entity.event_id.hex}: {problem}"
    return None


def content_contradiction(held: Event | FileRecord | CameraStatus, sent: Event | FileRecord | CameraStatus,
                          held_as: str = "is held") -> str | None:
    """Why ``sent`` contradicts the copy of its id that is held (it says something else), if it
    does: the node would be told its version arrived while the archive keeps another. Names the
    first field that differs, never its value."""
    differs = first_difference(held, sent)
    if differs is None:
        return None
    return (f"{describe(sent)} {held_as} with other content ({differs} differs): an id names one record "
            f"for good, so a changed record needs an id of its own")


def held_content_problem(entity: Event | FileRecord, held: Mapping[uuid.UUID, Event | FileRecord],
                         held_as: str = "is held") -> str | None:
    """Why ``entity``, or one of its files, contradicts the copy of its id in ``held`` (id ->
    record held), if one does. A held event is compared whole, its files included."""
    parts = [entity] if entity.entity_id in held else [f for f in files_of(entity) if f.file_id in held]
    for part in parts:
        problem = content_contradiction(held[part.entity_id], part, held_as)
        if problem:
            return problem if part is entity else f"{describe(entity)}: {problem}"
    return None


def describe(entity: Event | FileRecord | CameraStatus) -> str:
    """How messages name an entity: ``event <id>``, ``file <id>``, ``camera status <id>``."""
    kind = {Event: "event", FileRecord: "file", CameraStatus: "camera status"}[type(entity)]
    return f"{kind} {entity.entity_id.hex}"


def files_of(entity: Event | FileRecord) -> list[FileRecord]:
    """The file records an entity names: an event's files, or the file record itself."""
    return list(entity.files) if isinstance(entity, Event) else [entity]


def _file_params(record: FileRecord, longitude: float) -> dict:
    return {"file_id": record.file_id, "camera_id": record.camera_id, "status_id": record.status_id,
            "file_time": record.file_time, "file_offset": night_offset_seconds(record.file_time, longitude),
            "mime_type": record.mime_type, "semantic_type": str(record.semantic_type),
            "file_name": record.file_name, "file_size": record.file_size, "md5": record.md5}


class RecordStore:
    """Mixed into MeteorDatabase: files, events, their metadata and imports."""

    # -- loading ------------------------------------------------------------------------------
    def _load_files(self, cur, file_ids: list[uuid.UUID]) -> list[FileRecord]:
        """Full file records for ``file_ids``, in that order (missing ids are skipped)."""
        if not file_ids:
            return []
        cur.execute(SELECT_FILE_META, {"ids": list(file_ids)})
        metas = defaultdict(list)
        for file_id, *meta in cur.fetchall():
            metas[file_id].append(meta_from_row(*meta))
        cur.execute(SELECT_FILES, {"ids": list(file_ids)})
        by_id = {}
        for file_id, camera_id, status_id, file_time, mime, semantic, name, size, md5 in cur.fetchall():
            by_id[file_id] = FileRecord(
                file_id=file_id, camera_id=camera_id, status_id=status_id, file_time=_utc(file_time),
                mime_type=mime, semantic_type=NSString.from_string(semantic), file_name=name,
                file_size=size, md5=md5, meta=metas.get(file_id, []))
        return [by_id[i] for i in file_ids if i in by_id]

    def _load_events(self, cur, event_ids: list[uuid.UUID]) -> list[Event]:
        """Full events (meta, files in order) for ``event_ids``, in that order."""
        if not event_ids:
            return []
        ids = list(event_ids)
        cur.execute(SELECT_EVENT_META, {"ids": ids})
        metas = defaultdict(list)
        for event_id, *meta in cur.fetchall():
            metas[event_id].append(meta_from_row(*meta))
        cur.execute(SELECT_EVENT_FILES, {"ids": ids})
        file_ids = defaultdict(list)
        for event_id, file_id in cur.fetchall():
            file_ids[event_id].append(file_id)
        files = {f.file_id: f for f in self._load_files(cur, [f for fs in file_ids.values() for f in fs])}
        cur.execute(SELECT_EVENTS, {"ids": ids})
        by_id = {}
        for event_id, camera_id, status_id, event_time, event_type in cur.fetchall():
            by_id[event_id] = Event(
                event_id=event_id, camera_id=camera_id, status_id=status_id, event_time=_utc(event_time),
                event_type=NSString.from_string(event_type), meta=metas.get(event_id, []),
                files=[files[f] for f in file_ids.get(event_id, []) if f in files])
        return [by_id[i] for i in ids if i in by_id]

    @retry_stale
    def get_file(self, file_id) -> FileRecord | None:
        """The file record with this id, or None."""
        with self.transaction() as cur:
            found = self._load_files(cur, [as_uuid(file_id)])
        return found[0] if found else None

    @retry_stale
    def get_event(self, event_id) -> Event | None:
        """The event with this id (with its files, in order), or None."""
        with self.transaction() as cur:
            found = self._load_events(cur, [as_uuid(event_id)])
        return found[0] if found else None

    @retry_stale
    def get_entities(self, event_ids: list[uuid.UUID], file_ids: list[uuid.UUID]) -> dict[uuid.UUID, Event | FileRecord]:
        """Many events and files by id in one transaction (the exporter's fast path)."""
        with self.transaction() as cur:
            return self._held_records(cur, event_ids, file_ids)

    def _held_records(self, cur, event_ids: Iterable[uuid.UUID], file_ids: Iterable[uuid.UUID]
                      ) -> dict[uuid.UUID, Event | FileRecord]:
        """{id: held copy} of the events and file records held among these ids."""
        found = self._load_events(cur, list(event_ids)) + self._load_files(cur, list(file_ids))
        return {e.entity_id: e for e in found}

    @retry_stale
    def has_file_id(self, file_id) -> bool:
        """Whether a file record with this id is held."""
        with self.transaction() as cur:
            cur.execute(HAS_FILE, {"id": as_uuid(file_id)})
            return cur.fetchone() is not None

    def _held_md5s(self, cur, file_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        ids = list(file_ids)
        if not ids:
            return {}
        cur.execute(SELECT_FILE_MD5S, {"ids": ids})
        return dict(cur.fetchall())

    @retry_stale
    def held_file_md5s(self, file_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        """{file_id: MD5} of the file records held among ``file_ids``: what any record or upload
        of those ids must agree with."""
        with self.transaction() as cur:
            return self._held_md5s(cur, file_ids)

    def _has_event(self, cur, event_id: uuid.UUID) -> bool:
        cur.execute(HAS_EVENT, {"id": event_id})
        return cur.fetchone() is not None

    @retry_stale
    def has_event_id(self, event_id) -> bool:
        """Whether an event with this id is held."""
        with self.transaction() as cur:
            return self._has_event(cur, as_uuid(event_id))

    def _held_event_ids(self, cur, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        return _held(cur, HELD_EVENTS, event_ids)

    def _held_file_ids(self, cur, file_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        return _held(cur, HELD_FILES, file_ids)

    # -- writing ------------------------------------------------------------------------------
    @retry_stale
    def register_file(self, file_path: str | os.PathLike, mime_type: str, semantic_type: NSString | str,
                      file_time: _dt.datetime, file_metas: list[Meta] | None, camera_id: str,
                      file_name: str | None = None) -> FileRecord:
        """Copy a file the camera produced into the store and record it; returns its record.

        Size and MD5 are measured while copying, so the record describes exactly the bytes held.
        """
        file_id = uuid.uuid4()
        with self.transaction() as cur:
            status = self._status_at(cur, camera_id, file_time)
        size, md5 = self.file_store.store_file(file_id, file_path)
        try:
            record = FileRecord(file_id=file_id, camera_id=camera_id, status_id=status.status_id,
                                file_time=file_time, mime_type=mime_type, semantic_type=semantic_type,
                                file_name=file_name, file_size=size, md5=md5,
                                meta=list(file_metas or [])).validate()
            with self.transaction() as cur:
                self._insert_many(cur, [record], {status.status_id: status.location.long}, None)
        except BaseException:
            self.file_store.remove(file_id, md5)
            raise
        return record

    @retry_stale
    def register_event(self, camera_id: str, event_time: _dt.datetime, event_type: NSString | str,
                       file_records: list[FileRecord] | None = None, event_meta: list[Meta] | None = None) -> Event:
        """Record a detection that refers to already registered files, in the order given."""
        with self.transaction() as cur:
            status = self._status_at(cur, camera_id, event_time)
            event = Event(camera_id=camera_id, status_id=status.status_id, event_time=event_time,
                          event_type=event_type, files=list(file_records or []),
                          meta=list(event_meta or [])).validate()
            for i, f in enumerate(event.files):
                cur.execute(HAS_FILE, {"id": f.file_id})
                if cur.fetchone() is None:
                    raise Conflict(f"event.files[{i}]: file {f.file_id.hex} is not registered")
            longitudes = {status.status_id: status.location.long}
            others = {f.status_id for f in event.files} - {status.status_id}
            if others:
                longitudes.update({sid: row[4] for sid, row in self._status_rows(cur, others).items()})
            self._insert_many(cur, [event], longitudes, None)
        return event

    def _insert_many(self, cur, entities: list[Event | FileRecord], longitudes: dict,
                     user_id: str | None, checked: Iterable[uuid.UUID] = ()) -> set[uuid.UUID]:
        """Write entities (with their files, metadata and file order) set-wise, each unless held;
        the ids of those written. Conflict when an event or file row found held (written by
        another import meanwhile) says something else; ``checked`` are file ids the caller found
        held and compared before (rows are never changed, so they are not read again).

        The one way event and file rows are written: whatever the number of entities, events
        and file records take a statement each (in id order, so concurrent writers lock rows in
        the same order), and everything that hangs off them one more round trip."""
        events = [e for e in entities if isinstance(e, Event)]
        new_events = set(_returned(cur, BULK_EVENTS, [
            (e.event_id, e.camera_id, e.status_id, e.event_time,
             night_offset_seconds(e.event_time, longitudes[e.status_id]), str(e.event_type)) for e in events]))
        events = [e for e in events if e.event_id in new_events]
        by_id = {f.file_id: f for e in events for f in e.files}
        for record in entities:
            if isinstance(record, FileRecord):
                by_id.setdefault(record.file_id, record)  # a file also inside an event is written once
        files = sorted(by_id.values(), key=lambda f: f.file_id.bytes)
        new_files = set(_returned(cur, BULK_FILES, [
            tuple(_file_params(f, longitudes[f.status_id]).values()) for f in files]))
        checked = set(checked)  # file ids held already when the caller compared them: not read again
        self._check_found_held(cur, [e for e in entities if isinstance(e, Event) and e.event_id not in new_events],
                               [f for f in files if f.file_id not in new_files and f.file_id not in checked])
        files = [f for f in files if f.file_id in new_files]
        _insert_all(cur, [
            (BULK_FILE_META, [tuple(r.values()) for f in files for r in _meta_rows(f.file_id, f.meta)]),
            (BULK_EVENT_META, [tuple(r.values()) for e in events for r in _meta_rows(e.event_id, e.meta)]),
            (BULK_EVENT_FILES, [(e.event_id, i, f.file_id) for e in events for i, f in enumerate(e.files)]),
            # None: registered on this node, not imported
            (BULK_IMPORTS, [] if user_id is None else [(e.event_id, "event", user_id) for e in events]
             + [(f.file_id, "file", user_id) for f in files])])
        return new_events | new_files

    def _check_found_held(self, cur, events: list[Event], records: list[FileRecord]) -> None:
        """Conflict if an event or file row an insert found held (perhaps written by another
        import since the entity was checked) says something else than the entity that was to be
        written: another MD5 first (both named), then any other field."""
        if not events and not records:
            return
        held = self._held_records(cur, [e.event_id for e in events], [r.file_id for r in records])
        for record in records:
            problem = md5_contradiction(record, held[record.file_id].md5 if record.file_id in held else None)
            if problem:
                raise Conflict(problem)
        for entity in [*events, *records]:
            problem = content_contradiction(held[entity.entity_id], entity) if entity.entity_id in held else None
            if problem:
                raise Conflict(problem)


def _held(cur, query: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    cur.execute(query, {"ids": ids})
    return {row[0] for row in cur.fetchall()}


def _returned(cur, query: str, rows: list[tuple]) -> list:
    if not rows:
        return []
    return [row[0] for row in execute_values(cur, query, rows, page_size=PAGE, fetch=True)]


def _insert_all(cur, inserts: list[tuple[str, list[tuple]]]) -> None:
    """Run several ``INSERT ... VALUES %s`` (each with its rows, PAGE rows per statement) in one
    round trip: the values are bound by the driver (``mogrify``), as ``execute_values`` does."""
    statements = []
    for query, rows in inserts:
        if not rows:
            continue
        before, after = query.encode().split(b"%s")
        row_template = "(" + ",".join(["%s"] * len(rows[0])) + ")"
        for start in range(0, len(rows), PAGE):
            values = b",".join(cur.mogrify(row_template, row) for row in rows[start:start + PAGE])
            statements.append(before + values + after)
    if statements:
        cur.execute(b";".join(statements))
