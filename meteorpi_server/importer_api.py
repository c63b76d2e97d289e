"""What the import API decides: parsed requests, pluggable receivers, and the database receiver.

``ImportRequest.process_request`` turns a parsed body into the entity it carries (looking
``cached_entity`` ids up in the entity cache); ``dispatch`` hands it to a receiver and turns
"the receiver returned nothing" into the protocol's default answer. A receiver decides;
``MeteorDatabaseImportReceiver`` decides as docs/protocol.md says, against a MeteorDatabase.
An application embedding the routes may pass any ``BaseImportReceiver``.

Receivers written for the original meteorpi importer run unchanged: the answers that need no
request (``response_failed``, ``response_continue_after_file``, ``response_need_file_data``)
and ``get_importing_user_id`` are static, so they work on the class as before and on an instance
as today; ``process_request()`` with no body is the request Flask is serving; and ``file_data``
has ``save(path)`` besides yielding chunks (file_data.py).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Iterable, Mapping

from flask import Response, abort, current_app, g, make_response, request

from meteorpi_db import (Conflict, FileTooLarge, Md5Mismatch, MeteorDatabase, NeedsBytes, NeedsStatus, Refused,
                         ResendFromStart, TruncatedUpload, UploadCut)
from meteorpi_db.config import ServerConfig
from meteorpi_db.upload_failures import refused_too_often
from meteorpi_model import WIRE_ENTITIES, CameraStatus, Event, FileRecord, ValidationError
from meteorpi_model.fields import Choice, UUIDCodec
from meteorpi_model.wire import BODY_TYPES

from .auth import current_user
from .bodies import parse_json_object, read_body, refuse_upload_over_limit
from .entity_cache import EntityCache
from .errors import ApiError, BodyCutShort, PayloadTooLarge, error_response
from .file_data import FileData
from .jsonp import jsonify

import_log = logging.getLogger("meteorpi.server.import")
_ENTITY_TYPES = {Event: "event", FileRecord: "file", CameraStatus: "status"}
# Where the request being served keeps its ImportRequest (flask.g), for process_request().
_CURRENT = "meteorpi_import_request"
# Where an app keeps the entity cache of process_request() called in its own views.
_APP_CACHE = "meteorpi.process_request_cache"
# Where an answer keeps its protocol state (an attribute of the Response).
_STATE = "meteorpi_state"


def answer(state: str, **fields: Any) -> Response:
    """A protocol answer: ``{"state": state, ...fields}`` as JSON (UUIDs as 32 hex digits).

    The response keeps its state beside the body (``state_of``), so whoever handles it next
    knows it without parsing the body back."""
    body = {"state": state}
    body.update({k: v.hex if isinstance(v, uuid.UUID) else v for k, v in fields.items()})
    response = jsonify(body)
    setattr(response, _STATE, state)
    return response


def state_of(response: Response) -> str | None:
    """The protocol state a response answers: as ``answer`` made it, or, for a response a
    receiver built itself, the ``state`` of its JSON body."""
    state = getattr(response, _STATE, None)
    if state is not None or not response.is_json:
        return state
    body = response.get_json(silent=True)
    return body.get("state") if isinstance(body, dict) else None


class ImportRequest:
    """One import request: the entity it carries (None when a cached id was not found).

    ``entity_type`` is ``event``, ``file``, ``status``, or ``none`` when the entity is unknown;
    for a ``cached_entity`` request it is the type of the cached entity, so receivers never see
    the difference between a full body and a cache hit.
    """

    def __init__(self, entity: Event | FileRecord | CameraStatus | None, entity_id: uuid.UUID):
        self.entity = entity
        self.entity_id = entity_id
        self.entity_type = "none" if entity is None else _ENTITY_TYPES[type(entity)]

    def __repr__(self) -> str:
        return f"ImportRequest({self.entity_type}, {self.entity_id.hex})"

    # -- answers (the static ones need no request: callable on the class or an instance) ----
    def response_complete(self) -> Response:
        return answer("complete")

    @staticmethod
    def response_failed(message: str = "import failed") -> Response:
        return answer("failed", message=message)

    def response_continue(self) -> Response:
        """``continue``; ``continue-nocache`` when the entity is unknown, so the exporter resends it."""
        return answer("continue" if self.entity is not None else "continue-nocache")

    @staticmethod
    def response_continue_after_file() -> Response:
        return answer("continue")

    @staticmethod
    def response_need_file_data(file_id: uuid.UUID) -> Response:
        return answer("need_file_data", file_id=file_id)

    def response_need_status(self, status_id: uuid.UUID | None = None) -> Response:
        """Ask for ``status_id`` (by default the status the entity itself refers to)."""
        return answer("need_status", status_id=status_id or self.entity.status_id)

    # -- parsing ---------------------------------------------------------------------------
    @staticmethod
    def process_request(body: Mapping[str, Any] | None = None, cache: EntityCache | None = None
                        ) -> "ImportRequest":
        """The request a parsed JSON body makes; raises ValidationError naming the bad field.

        A full event or file is remembered in ``cache`` for the ``cached_entity`` requests that
        follow it; a cached id that is not found gives an ImportRequest with no entity.

        With no ``body`` (the original importer's form) it is the request Flask is serving:
        inside a receiver, the one being handled; in an application's own view, its body read
        and parsed now (with the app's own cache unless ``cache`` is given), a bad one aborting
        the request with the 400 JSON answer.
        """
        if body is None:
            return _current_request(cache)
        if "type" not in body:
            raise ValidationError("type", "required")
        kind = Choice(*BODY_TYPES).decode(body["type"], "type")
        if kind == "cached_entity":
            entity_id = _required_uuid(body, "cached_entity_id")
            entity = cache.get(entity_id) if cache is not None else None
            return ImportRequest(entity, entity_id)
        if kind not in body:
            raise ValidationError(kind, "required")
        entity = WIRE_ENTITIES[kind].from_dict(body[kind], kind)
        entity_id = entity.entity_id
        if cache is not None and kind != "status":
            cache.put(entity_id, entity)
        return ImportRequest(entity, entity_id)


def _current_request(cache: EntityCache | None) -> ImportRequest:
    held = g.get(_CURRENT)
    if held is not None:
        return held
    meteor_app = current_app.extensions.get("meteorpi")
    settings = meteor_app.config.server if meteor_app is not None else ServerConfig()
    if cache is None:
        cache = current_app.extensions.get(_APP_CACHE)
        if cache is None:  # two threads racing here: one cache wins, the other's entry is a miss
            cache = current_app.extensions.setdefault(_APP_CACHE, EntityCache(settings.entity_cache_size))
    try:
        held = ImportRequest.process_request(parse_json_object(read_body(settings.max_body_bytes)), cache)
    except (ApiError, ValidationError) as e:
        abort(error_response(e))  # whatever error handlers the host app has: the protocol's answer
    setattr(g, _CURRENT, held)
    return held


def _required_uuid(body: Mapping[str, Any], key: str) -> uuid.UUID:
    if key not in body:
        raise ValidationError(key, "required")
    return UUIDCodec().decode(body[key], key)


class BaseImportReceiver:
    """Decides what each import request gets. Returning None means the protocol's default:
    ``complete`` for events and files, ``continue`` for a status and for file data."""

    def receive_event(self, import_request: ImportRequest) -> Response | None:
        return None

    def receive_file_record(self, import_request: ImportRequest) -> Response | None:
        return None

    def receive_status(self, import_request: ImportRequest) -> Response | None:
        return None

    def receive_file_data(self, file_id: uuid.UUID, file_data: FileData, md5_hex: str) -> Response | None:
        """``file_data`` yields the uploaded bytes in chunks as they arrive, or ``save(path)``
        writes them to a file; consume it to store them."""
        for _ in file_data:
            pass
        return None

    @staticmethod
    def get_importing_user_id() -> str | None:
        """Who sent this request (the authenticated user), to record beside what they imported.

        Static, as in the original importer: ``BaseImportReceiver.get_importing_user_id()``."""
        user = current_user()
        return user.user_id if user is not None else None


def dispatch(receiver: BaseImportReceiver, import_request: ImportRequest) -> Response:
    """Hand the request to ``receiver``, fill in the default answer, log completed imports."""
    kind = import_request.entity_type
    setattr(g, _CURRENT, import_request)  # what process_request() answers inside the receiver
    if kind == "none":
        return import_request.response_continue()
    handle = {"event": receiver.receive_event, "file": receiver.receive_file_record,
              "status": receiver.receive_status}[kind]
    result = handle(import_request)
    if result is None:
        result = import_request.response_continue() if kind == "status" else import_request.response_complete()
    response = make_response(result)
    state = state_of(response)
    if state == "complete" or (kind == "status" and state == "continue"):
        import_log.info("import complete: %s %s from user %s", kind, import_request.entity_id.hex,
                        receiver.get_importing_user_id())
    return response


class MeteorDatabaseImportReceiver(BaseImportReceiver):
    """The receiver docs/protocol.md describes, holding what it receives in a MeteorDatabase.

    A file id held with another MD5 is never answered ``complete``: whatever names it (an
    event, a file record, an upload of bytes) is refused, naming the id and both MD5s. Every
    refused upload of a file (bytes not matching their MD5, over ``server.max_upload_bytes``,
    a body cut short or malformed) counts against the importing account; at
    ``server.max_failed_uploads`` the file's entity is refused instead of its bytes asked for
    again. A fault of the server's own disk (507) counts against nobody.
    """

    def __init__(self, db: MeteorDatabase):
        self.db = db

    @property
    def max_failed_uploads(self) -> int:
        return self.db.config.server.max_failed_uploads

    def receive_status(self, import_request: ImportRequest) -> Response | None:
        try:  # idempotent: a held status is a no-op, when it says the same
            self.db.import_camera_status(import_request.entity)
        except Conflict as e:
            return import_request.response_failed(str(e))
        return import_request.response_continue()

    def receive_file_record(self, import_request: ImportRequest) -> Response | None:
        return self._answer(import_request)

    def receive_event(self, import_request: ImportRequest) -> Response | None:
        return self._answer(import_request)

    def _answer(self, import_request: ImportRequest) -> Response:
        """What the database decided for this event or file record, as the protocol answers it."""
        outcome = self.db.import_entity(import_request.entity, self.get_importing_user_id())
        if isinstance(outcome, NeedsStatus):
            return import_request.response_need_status(outcome.status_id)
        if isinstance(outcome, NeedsBytes):
            return import_request.response_need_file_data(outcome.file_id)
        if isinstance(outcome, Refused):
            return import_request.response_failed(outcome.reason)
        return import_request.response_complete()  # Stored or AlreadyHeld

    def receive_file_data(self, file_id: uuid.UUID, file_data: Iterable[bytes], md5_hex: str) -> Response | None:
        user_id = self.get_importing_user_id()
        problem = _upload_contradiction(file_id, md5_hex, self.db.held_file_md5s([file_id]).get(file_id))
        limit = self.db.config.server.max_upload_bytes
        try:
            if problem:
                for _ in file_data:  # read to its end (the body's own refusals still apply), keep nothing
                    pass
            else:
                # Before a byte is read, the size limit first (413, counted below like any body over
                # it): a file that can never be accepted must not be told to retry later; then the free
                # space, for a size that can be accepted (the body's length: multipart around the file).
                refuse_upload_over_limit(limit)
                self.db.make_room_for_upload(request.content_length or 0)  # StoreFull, 507: counts against nobody
                self.db.store_file_data(file_id, md5_hex, file_data,
                                        max_bytes=limit)
        except Md5Mismatch as e:
            problem = str(e)
        except BodyCutShort:  # the link's doing as often as the client's: not held against the file
            raise
        except UPLOAD_REFUSALS:
            self.db.record_upload_failure(file_id, md5_hex, user_id)
            raise
        if problem:
            count = self.db.record_upload_failure(file_id, md5_hex, user_id)
            return answer("failed", message=f"{problem} (refused uploads of this file so far: {count})")
        self.db.clear_upload_failures(file_id)
        return None

    # -- protocol version 2 (batch_routes.py) ------------------------------------------------
    def batch_check(self, statuses: list[uuid.UUID], events: list[uuid.UUID], files: list[uuid.UUID],
                    file_data: list[tuple[uuid.UUID, str]]) -> dict:
        """Which of these the server lacks; bytes refused (a file id held with another MD5, or
        too many refused uploads by this account), each with the reason."""
        missing_statuses, missing_events, missing_files = self.db.missing_ids(statuses, events, files)
        held_md5 = self.db.held_file_md5s({fid for fid, _ in file_data})
        refused: dict[uuid.UUID, str] = {}
        for fid, md5 in file_data:
            problem = _upload_contradiction(fid, md5, held_md5.get(fid), "the record sent says {md5}")
            if problem:
                refused[fid] = problem
        missing_data = self.db.missing_file_data([(fid, md5) for fid, md5 in file_data if fid not in refused],
                                                 settle=True)
        user_id = self.get_importing_user_id()
        failures = self.db.upload_failure_counts(missing_data, user_id)
        resumable = self.db.resumable_uploads(missing_data, str(user_id))
        offsets = {}
        for fid, md5 in missing_data:
            if failures.get(fid, 0) >= self.max_failed_uploads:
                refused[fid] = refused_too_often(fid, md5, failures[fid])
            elif fid in resumable:
                offsets[fid.hex] = resumable[fid]
        answer = {"statuses": [i.hex for i in missing_statuses], "events": [i.hex for i in missing_events],
                "files": [i.hex for i in missing_files],
                "file_data": [fid.hex for fid, _ in missing_data if fid not in refused],
                "refused_file_data": [{"file_id": fid.hex, "message": message} for fid, message in refused.items()]}
        if offsets:  # only when some are held: answers stay as they were for every other check
            answer["offsets"] = offsets
        return answer

    def batch_store_files(self, manifest: list[tuple[uuid.UUID, str, int]], stream,
                          offsets: dict[uuid.UUID, int] | None = None) -> dict[uuid.UUID, str | None]:
        """Receive the manifest's files from one stream: {file_id: None (held) or why refused}.

        A file in ``offsets`` continues this account's cut upload of it from that byte. Files
        received whole before a cut are kept, and so is the cut file's prefix (UploadCut). Enforces ``server.max_upload_bytes`` (413 for the whole upload, before any byte is read)
        and counts every refused file against the importing account: over the limit, not
        matching its MD5, held with another MD5, or the file the body was cut short in (400,
        nothing of the upload published). A verified file forgets every count of it.
        """
        user_id = self.get_importing_user_id()
        limit = self.db.config.server.max_upload_bytes
        too_large = [(i, fid, md5, size) for i, (fid, md5, size) in enumerate(manifest) if size > limit]
        if too_large:
            for _, fid, md5, _ in too_large:
                self.db.record_upload_failure(fid, md5, user_id)
            i, _, _, size = too_large[0]
            raise PayloadTooLarge(f"manifest.files[{i}].size: {size} bytes is more than the limit of {limit} bytes")
        held_md5 = self.db.held_file_md5s([fid for fid, _, _ in manifest])
        refused = {fid: problem for fid, md5, _ in manifest
                   if (problem := _upload_contradiction(fid, md5, held_md5.get(fid)))}
        incoming = sum(size - (offsets or {}).get(fid, 0) for fid, _, size in manifest if fid not in refused)
        self.db.make_room_for_upload(incoming)  # before a byte is read
        counted = _CountedStream(stream)
        try:
            results = self.db.store_uploaded_files(manifest, counted, refused, offsets=offsets, owner=str(user_id))
        except UploadCut as cut:  # what came whole before the cut is published: forget its counts
            kept = [fid for fid, problem in cut.results.items() if problem is None]
            self.db.clear_upload_failures(*kept)
            if getattr(stream, "left", None) == 0:  # the whole declared body came, yet was short
                self.db.record_upload_failure(cut.file_id, dict((f, m) for f, m, _ in manifest)[cut.file_id], user_id)
            import_log.info("upload cut in file %s; %d file(s) before it kept", cut.file_id.hex, len(kept))
            raise
        except (TruncatedUpload, OSError):  # the body ended or stalled before a file was whole
            # Counted only when the whole declared body arrived (the manifest promised bytes the
            # body never held): a connection cut by the link or a killed exporter is no fault of
            # the file, and a night on a poor line must not get its files refused.
            cut = _file_at(manifest, counted.position)
            if cut is not None and getattr(stream, "left", None) == 0:
                self.db.record_upload_failure(cut[0], cut[1], user_id)
            raise
        md5_of = {fid: md5 for fid, md5, _ in manifest}
        for file_id, problem in results.items():
            if problem is not None and not isinstance(problem, ResendFromStart):
                count = self.db.record_upload_failure(file_id, md5_of[file_id], user_id)
                results[file_id] = f"{problem} (refused uploads of this file so far: {count})"
        self.db.clear_upload_failures(*[fid for fid, problem in results.items() if problem is None])
        return results

    def batch_import(self, statuses: list[CameraStatus], entities: list[Event | FileRecord]) -> dict[uuid.UUID, str | None]:
        """Import a batch in one transaction; {id: None (complete) or why it was refused}, for
        every status, event and file record sent (each id once)."""
        user_id = self.get_importing_user_id()
        results = self.db.import_batch(statuses, entities, user_id)
        kinds = {s.status_id: "status" for s in statuses}
        kinds.update({e.entity_id: _ENTITY_TYPES[type(e)] for e in entities})
        for entity_id, problem in results.items():
            if problem is None:
                import_log.info("imported %s %s from %s (protocol 2)", kinds.get(entity_id, "entity"),
                                entity_id.hex, user_id)
        return results


# What refuses an upload as it is read, the client's doing: a body over the limit, malformed or
# cut short (ApiError from the multipart stream), a stream that broke. Each counts as a refused
# upload; a fault of the server's own disk (StoreWriteFailed) does not.
UPLOAD_REFUSALS = (ApiError, FileTooLarge, TruncatedUpload, OSError)


def _upload_contradiction(file_id: uuid.UUID, md5: str, held_md5: str | None,
                          sent: str = "these bytes were sent as MD5 {md5}: refused, not kept") -> str | None:
    """Why bytes for ``file_id`` under ``md5`` are refused: the archive holds it with another MD5."""
    if held_md5 is None or held_md5.lower() == md5.lower():
        return None
    return f"file {file_id.hex} is held with MD5 {held_md5.lower()}, " + sent.format(md5=md5.lower())


class _CountedStream:
    """A body stream that counts the bytes read from it, to tell which file a cut fell in."""

    def __init__(self, stream):
        self.stream, self.position = stream, 0
        if callable(getattr(stream, "readinto", None)):
            self.readinto = self._readinto

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.position += len(data)
        return data

    def _readinto(self, buffer) -> int:
        n = self.stream.readinto(buffer)
        self.position += n
        return n


def _file_at(manifest: list[tuple[uuid.UUID, str, int]], position: int) -> tuple[uuid.UUID, str] | None:
    """(file_id, md5) of the manifest's file whose bytes include offset ``position``."""
    start = 0
    for file_id, md5, size in manifest:
        if position < start + size:
            return file_id, md5
        start += size
    return None
