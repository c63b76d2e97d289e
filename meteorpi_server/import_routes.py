"""The import API's routes: ``POST {url_path}`` and ``POST {url_path}/data/<file_id>/<md5>``.

Bodies are read from the socket up to a limit and parsed as strict JSON (no YAML, no duplicate
keys, no NaN/Infinity, nesting too deep is a 400). Uploads are never held in memory or spooled
to a second temp file: the multipart body is parsed here, chunk by chunk, with werkzeug's
streaming ``MultipartDecoder``, and the bytes of the part named ``file`` flow straight to the
receiver (the database one writes them to the file store's temp file, hashing as they pass).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Iterator

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from meteorpi_model import wire
from meteorpi_model.fields import MD5, UUIDCodec

from .batch_routes import add_batch_routes
from .entity_cache import EntityCache
from .bodies import parse_json_object, read_body, read_stream, refuse_upload_over_limit
from .errors import BadRequest, BodyCutShort, PayloadTooLarge, json_errors
from .file_data import FileData
from .importer_api import BaseImportReceiver, ImportRequest, MeteorDatabaseImportReceiver, answer, dispatch

if TYPE_CHECKING:
    from .app import MeteorApp

IMPORT_ROLES = ["import"]
FILE_PART = "file"
# Bytes read from the socket at once (gunicorn's body reader costs per call, so large reads),
# and fed to the multipart decoder at once (its buffer work grows with the piece: small pieces).
READ_SIZE = 1024 * 1024
FEED_SIZE = 64 * 1024
# Multipart headers and the boundary's partial matches stay in the decoder's buffer; nothing
# legitimate comes near this, a client that sends endless headers gets a 400 instead of our RAM.
MAX_MULTIPART_BUFFER = 1024 * 1024
# Parts in one upload body: exporters send one. Each part costs the decoder ~0.1 ms of Python,
# so a body of tiny parts kept a worker busy for 35 s per 16 MiB before this bound.
MAX_PARTS = 16


def add_routes(meteor_app: "MeteorApp", handler: BaseImportReceiver | None = None,
               url_path: str = "/import") -> None:
    """Register the import API on ``meteor_app.app`` under ``url_path``.

    ``handler`` decides every request; by default a ``MeteorDatabaseImportReceiver`` on
    ``meteor_app.db`` (made at the first request, so the database is opened in the worker
    process that uses it). Each call has its own entity cache, sized by
    ``server.entity_cache_size``.
    """
    app = meteor_app.app
    server = meteor_app.config.server
    cache = EntityCache(server.entity_cache_size)
    meteor_app.entity_caches[url_path] = cache
    receivers: list[BaseImportReceiver] = [handler] if handler is not None else []

    def receiver() -> BaseImportReceiver:
        if not receivers:  # two threads racing here each make an equivalent receiver: harmless
            receivers.append(MeteorDatabaseImportReceiver(meteor_app.db))
        return receivers[0]

    def import_entities():
        body = parse_json_object(read_body(server.max_body_bytes))
        import_request = ImportRequest.process_request(body, cache)
        return dispatch(receiver(), import_request)

    def import_file_data(file_id: str, md5: str):
        file_uuid = UUIDCodec().decode(file_id, "file_id")
        md5_hex = MD5().decode(md5, "md5")
        chunks = upload_chunks(server.max_upload_bytes)
        try:
            result = receiver().receive_file_data(file_uuid, FileData(chunks), md5_hex)
            for _ in chunks:  # whatever the receiver left unread: the body's limits hold all the same
                pass
        finally:
            chunks.close()
        return result if result is not None else answer("continue")

    protect = meteor_app.requires_auth(roles=IMPORT_ROLES)
    name = "meteorpi_import" + url_path.replace("/", ".")
    app.add_url_rule(wire.flask_rule(url_path, wire.V1_IMPORT), endpoint=name, methods=["POST"],
                     view_func=json_errors(protect(import_entities)))
    app.add_url_rule(wire.flask_rule(url_path, wire.V1_DATA), endpoint=name + ".data", methods=["POST"],
                     view_func=json_errors(protect(import_file_data)))
    add_batch_routes(meteor_app, receiver, url_path, protect)


# -- multipart uploads -----------------------------------------------------------------------
def upload_chunks(max_bytes: int) -> Iterator[bytes]:
    """This request's file bytes, as ``file_part_chunks`` yields them.

    Every refusal of the body (over ``max_bytes`` by its Content-Length or as it streams, not
    multipart, malformed, cut short) is raised from the iteration itself, so the receiver that
    consumes the bytes sees each one (the database receiver counts it as a refused upload).
    """
    refuse_upload_over_limit(max_bytes)
    yield from file_part_chunks(request.stream, multipart_boundary(), max_bytes)


def multipart_boundary() -> bytes:
    """The boundary of this request's ``multipart/form-data`` body, or a 400."""
    if request.mimetype != "multipart/form-data":
        raise BadRequest(f"body: expected multipart/form-data with a part named {FILE_PART!r}, "
                         f"got {request.mimetype or 'no Content-Type'}")
    boundary = request.mimetype_params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise BadRequest("body: multipart/form-data without a usable boundary")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest("body: multipart boundary is not ASCII") from None


def file_part_chunks(stream: BinaryIO, boundary: bytes, max_bytes: int) -> Iterator[bytes]:
    """Yield the bytes of the part named ``file`` as they arrive from ``stream``.

    Memory stays bounded whatever the size: the decoder holds at most a read's worth of bytes.
    Raises BadRequest for a malformed body or a missing ``file`` part and PayloadTooLarge past
    ``max_bytes``, from inside the iteration, so a consumer writing a temp file discards it.
    """
    decoder = MultipartDecoder(boundary, max_form_memory_size=MAX_MULTIPART_BUFFER)
    part: str | None = None
    seen_file, size, parts, received = False, 0, 0, 0
    while True:
        data = read_stream(stream, READ_SIZE)
        received += len(data)
        declared = request.content_length
        if not data and declared is not None and received < declared:  # the connection ended, not the body
            raise BodyCutShort(f"body: the connection ended {declared - received} bytes before the body it declared")
        for event in _decode(decoder, data):
            if isinstance(event, Epilogue):
                if not seen_file:
                    raise BadRequest(f"{FILE_PART}: the body has no multipart part named {FILE_PART!r}")
                return
            if isinstance(event, (Field, File)):
                parts += 1
                if parts > MAX_PARTS:
                    raise BadRequest(f"body: more than {MAX_PARTS} multipart parts; send the part named "
                                     f"{FILE_PART!r} alone")
                part = event.name
                if part == FILE_PART:
                    if seen_file:
                        raise BadRequest(f"{FILE_PART}: more than one part named {FILE_PART!r}")
                    seen_file = True
            elif isinstance(event, Data):
                if part == FILE_PART and event.data:
                    size += len(event.data)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"{FILE_PART}: more than the limit of {max_bytes} bytes")
                    yield event.data
                if not event.more_data:
                    part = None
        if not data:  # the decoder raises before this when the body ended mid-part
            raise BadRequest("body: multipart body ended without its closing boundary")


def _decode(decoder: MultipartDecoder, data: bytes) -> Iterator:
    """Feed ``data`` (b"" at the end of the body) to the decoder; yield the events it makes."""
    view = memoryview(data)
    for start in range(0, len(data), FEED_SIZE) if data else [None]:
        try:
            decoder.receive_data(view[start:start + FEED_SIZE] if start is not None else None)
        except RequestEntityTooLarge:
            raise BadRequest("body: multipart headers are too long") from None
        while not isinstance(event := _next_event(decoder), NeedData):
            yield event
            if isinstance(event, Epilogue):
                return


def _next_event(decoder: MultipartDecoder):
    try:
        return decoder.next_event()
    except (ValueError, AttributeError, IndexError, TypeError) as e:
        # werkzeug's decoder signals malformed input with ValueError (and, on some truncated
        # bodies, an AttributeError from a failed match): either way the client's fault.
        raise BadRequest(f"body: malformed multipart/form-data ({str(e)[:80]})") from None
