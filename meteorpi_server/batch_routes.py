"""The fast path (protocol version 2): many entities per request, beside version 1.

Version 1 costs two requests per missing file plus one per status per entity, which a 40 ms
link turns into minutes per night (docs/protocol.md weak point 7). Version 2 does a batch in about
three requests, however many entities and files it holds:

    GET  {base}/v2          -> {"protocol": 2, "max_entities": N, "max_upload_bytes": B}
    POST {base}/v2/check    {"statuses": [id], "events": [id], "files": [id],
                             "file_data": [{"file_id": id, "md5": hex}]}
                            -> the same keys, listing only what the server lacks, plus
                               "refused_file_data": [{"file_id", "message"}] (held with another MD5,
                               or too many refused uploads by this account), and
                               "offsets": {file_id: n} for files of "file_data" whose first n
                               bytes this account's cut uploads left held (absent: send from 0)
    POST {base}/v2/data     Content-Type: application/vnd.meteorpi.files
                            body: one JSON line {"files": [{"file_id", "md5", "size"[, "offset"]}]}
                            then the files' bytes back to back, in that order (no multipart
                            framing to scan); a file with "offset": n sends only bytes n.. of
                            its "size", continuing what the check's "offsets" said is held
                            -> {"stored": [id], "failed": [{"file_id", "message"}]}
    POST {base}/v2/import   {"statuses": [status], "events": [event], "files": [file record]}
                            -> {"results": [{"id", "state": "complete"} | {"id", "state": "failed", "message"}]},
                               one entry per id sent: every status, event and file record

Negotiation: an exporter asks ``GET {base}/v2`` first; a version-1 server answers 404 (or
anything but this JSON) and the exporter speaks version 1. A version-1 exporter never calls
these routes. Only receivers that implement the batch methods offer version 2: an embedding
application's own receiver keeps serving version 1 alone.

The guarantees are version 1's: bytes are held only once verified and fsynced (here fsynced
together, concurrently, before any of the batch is published); an entity is imported in one
transaction, one per batch, so one refusal does not undo the rest: each entity is checked first
(statuses, MD5s, bytes) and only those that pass are written, set-wise under one savepoint; if
the database refuses that write, it is rolled back to the savepoint and the entities are written
again one by one, each under a savepoint of its own, so only the refused ones are left out. An id
sent twice in one request is imported once and answered once. An id already held is a no-op
answered complete, unless a file id it names is held with another MD5: then it is answered
failed, naming the file id and both MD5s, and bytes sent for that id under another MD5 are
refused and not kept.
"""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable

from flask import request

from meteorpi_db import TruncatedUpload
from meteorpi_model import CameraStatus, Event, FileRecord, ValidationError, wire
from meteorpi_model.fields import MD5, Int, UUIDCodec
from meteorpi_model.wire import FILES_MEDIA_TYPE, MAX_ENTITIES, MAX_FILES_PER_UPLOAD, MAX_MANIFEST_LINE

from .errors import BadRequest, BodyCutShort, BrokenBody, ResourceNotFound, json_errors
from .bodies import parse_json_object, read_body, upload_stream
from .jsonp import jsonify

if TYPE_CHECKING:
    from .app import MeteorApp
    from .importer_api import BaseImportReceiver


def supports_batch(receiver: "BaseImportReceiver") -> bool:
    """Whether ``receiver`` implements the fast path (the database receiver does)."""
    return all(callable(getattr(receiver, name, None))
               for name in ("batch_check", "batch_store_files", "batch_import"))


def add_batch_routes(meteor_app: "MeteorApp", receiver: Callable[[], "BaseImportReceiver"],
                     url_path: str, protect: Callable) -> None:
    """Register the version-2 routes under ``{url_path}/v2`` (called by ``add_routes``)."""
    server = meteor_app.config.server

    def batch_receiver():
        found = receiver()
        if not supports_batch(found):
            raise ResourceNotFound("this server speaks protocol version 1 only")
        return found

    def capabilities():
        batch_receiver()
        return jsonify({"protocol": wire.PROTOCOL_V2, "max_entities": MAX_ENTITIES,
                        "max_upload_bytes": server.max_upload_bytes, "max_body_bytes": server.max_body_bytes})

    def check():
        found = batch_receiver()
        body = _known_keys(parse_json_object(read_body(server.max_body_bytes)), CHECK_KEYS, "body")
        statuses, events, files = (_id_list(body, key) for key in ("statuses", "events", "files"))
        file_data = _file_data_list(body)
        return jsonify(found.batch_check(statuses, events, files, file_data))

    def data():
        found = batch_receiver()
        if request.mimetype != FILES_MEDIA_TYPE:
            raise BadRequest(f"body: expected Content-Type {FILES_MEDIA_TYPE}, got {request.mimetype or 'none'}")
        stream = upload_stream()
        try:
            manifest, offsets = _read_manifest(stream)
            if offsets:  # only then: receivers written before offsets existed keep working
                results = found.batch_store_files(manifest, stream, offsets=offsets)
            else:
                results = found.batch_store_files(manifest, stream)
        except TruncatedUpload as e:  # with a cut (UploadCut): the files before it and its prefix are kept
            raise (BodyCutShort if stream.left != 0 else BadRequest)(f"body: {e}") from None
        except BrokenBody as e:  # broken before any file's bytes (in the manifest's line)
            raise BodyCutShort(f"body: {e}") from None
        except OSError as e:  # a stalled or broken connection (server.timeout_seconds)
            raise BodyCutShort(f"body: the connection stalled or broke during the upload ({e})") from None
        stored = [fid.hex for fid, problem in results.items() if problem is None]
        failed = [{"file_id": fid.hex, "message": problem} for fid, problem in results.items() if problem]
        return jsonify({"stored": stored, "failed": failed})

    def batch_import():
        found = batch_receiver()
        body = _known_keys(parse_json_object(read_body(server.max_body_bytes)), IMPORT_KEYS, "body")
        statuses = _entities(body, "statuses", CameraStatus)
        entities = _entities(body, "events", Event) + _entities(body, "files", FileRecord)
        del body  # decoded: the parsed JSON (as large as the entities again) is not held while importing
        if len(entities) + len(statuses) > MAX_ENTITIES:
            raise BadRequest(f"body: more than {MAX_ENTITIES} entities in one request")
        results = found.batch_import(statuses, entities)
        out = []
        for entity_id, problem in results.items():
            if problem is None:
                out.append({"id": entity_id.hex, "state": wire.COMPLETE})
            else:
                out.append({"id": entity_id.hex, "state": wire.FAILED, "message": problem})
        return jsonify({"results": out})

    name = "meteorpi_import_v2" + url_path.replace("/", ".")
    for route, view, methods in ((wire.V2_CAPABILITIES, capabilities, ["GET"]), (wire.V2_CHECK, check, ["POST"]),
                                 (wire.V2_DATA, data, ["POST"]), (wire.V2_IMPORT, batch_import, ["POST"])):
        meteor_app.app.add_url_rule(wire.flask_rule(url_path, route), endpoint=f"{name}.{view.__name__}",
                                    methods=methods,
                                    view_func=json_errors(protect(view)))


# The keys each body may hold. A misspelt one ({"event": [...]}) used to be ignored, and the
# request answered as if nothing had been asked: a client's typo silently imported nothing.
# (Declared once, in meteorpi_model.wire, with the client that writes them.)
CHECK_KEYS = frozenset(wire.CHECK_KEYS)
IMPORT_KEYS = frozenset(wire.IMPORT_KEYS)
MANIFEST_KEYS = frozenset(wire.MANIFEST_KEYS)
MANIFEST_FILE_KEYS = frozenset(wire.MANIFEST_FILE_KEYS)
FILE_DATA_KEYS = frozenset(wire.FILE_DATA_KEYS)


def _known_keys(body: dict, known: frozenset[str], path: str) -> dict:
    """``body`` itself; BadRequest naming the first key it should not hold, and the known ones."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"{path}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    return body


def _id_list(body: dict, key: str) -> list[uuid.UUID]:
    """The ids of ``key``, each once, in the order first sent (a check answers each id once)."""
    values = body.get(key, [])
    if not isinstance(values, list):
        raise BadRequest(f"{key}: expected a list of ids")
    if len(values) > MAX_ENTITIES:
        raise BadRequest(f"{key}: more than {MAX_ENTITIES} ids")
    return list(dict.fromkeys(UUIDCodec().decode(v, f"{key}[{i}]") for i, v in enumerate(values)))


def _file_data_list(body: dict) -> list[tuple[uuid.UUID, str]]:
    values = body.get("file_data", [])
    if not isinstance(values, list) or len(values) > MAX_FILES_PER_UPLOAD:
        raise BadRequest(f"file_data: expected a list of at most {MAX_FILES_PER_UPLOAD} objects")
    out = []
    for i, item in enumerate(values):
        if not isinstance(item, dict):
            raise BadRequest(f"file_data[{i}]: expected an object")
        _known_keys(item, FILE_DATA_KEYS, f"file_data[{i}]")
        out.append((UUIDCodec().decode(item.get("file_id"), f"file_data[{i}].file_id"),
                    MD5().decode(item.get("md5"), f"file_data[{i}].md5")))
    return list(dict.fromkeys(out))  # each (file, MD5) asked about once


def _entities(body: dict, key: str, cls: type) -> list[Any]:
    values = body.get(key, [])
    if not isinstance(values, list):
        raise BadRequest(f"{key}: expected a list")
    try:
        return [cls.from_dict(v, f"{key}[{i}]") for i, v in enumerate(values)]
    except ValidationError as e:
        raise BadRequest(str(e)) from None


def _read_manifest(stream) -> tuple[list[tuple[uuid.UUID, str, int]], dict[uuid.UUID, int]]:
    """The JSON line before the bytes: which files follow, in order, and how long each is;
    and for files continued from a cut upload, the offset their bytes start at ({} if none).

    Sizes over ``server.max_upload_bytes`` are the receiver's to refuse (413): it counts each
    refused file against the importing account."""
    line = stream.readline(MAX_MANIFEST_LINE + 1)
    if len(line) > MAX_MANIFEST_LINE or not line.endswith(b"\n"):
        raise BadRequest("manifest: the first line must be a JSON object ending in a newline")
    manifest = _known_keys(parse_json_object(line), MANIFEST_KEYS, "manifest")
    files = manifest.get("files")
    if not isinstance(files, list) or len(files) > MAX_FILES_PER_UPLOAD:
        raise BadRequest(f"manifest.files: expected a list of at most {MAX_FILES_PER_UPLOAD} files")
    out, seen, offsets = [], set(), {}
    for i, item in enumerate(files):
        path = f"manifest.files[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{path}: expected an object")
        _known_keys(item, MANIFEST_FILE_KEYS, path)
        file_id = UUIDCodec().decode(item.get("file_id"), f"{path}.file_id")
        if file_id in seen:
            raise BadRequest(f"{path}.file_id: appears twice in one upload")
        seen.add(file_id)
        size = Int(0, 2 ** 53).decode(item.get("size"), f"{path}.size")
        if item.get("offset") is not None:
            offset = Int(0, size).decode(item.get("offset"), f"{path}.offset")
            if offset:
                offsets[file_id] = offset
        out.append((file_id, MD5().decode(item.get("md5"), f"{path}.md5"), size))
    return out, offsets


