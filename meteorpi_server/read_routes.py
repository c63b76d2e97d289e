"""The read API: what was imported, as the wire form, for users with role ``user`` or ``import``.

``server.public_read: true`` opens it to anyone. Searches take their query parameters through
``meteorpi_model.query.search_from_query``, so ``/events?camera_ids=a&limit=10`` means the same
as the EventSearch an export configuration holds. With public reads every GET answer may be JSONP
(see jsonp.py), except the file bytes, which stream from the store as an attachment.
"""
from __future__ import annotations

import functools
import re
import uuid
from typing import Callable

from flask import Blueprint, Response, current_app, request, send_file

from meteorpi_db import MeteorDatabase
from meteorpi_model import EventSearch, FileRecordSearch, ValidationError
from meteorpi_model.entities import CAMERA_ID, MIME_TYPE
from meteorpi_model.fields import Instant, UUIDCodec
from meteorpi_model.query import query_parameter

from .errors import CallbackRefused, ResourceNotFound, json_errors
from .jsonp import JSONP_PARAMETERS, jsonify, padded, request_callback_problem
from .params import refuse_unknown

READ_ROLES = ["user", "import"]
read_api = Blueprint("meteorpi_read", __name__)


def _meteor_app():
    return current_app.extensions["meteorpi"]


def _db() -> MeteorDatabase:
    return _meteor_app().db


def readable(view: Callable) -> Callable:
    """Run ``view`` for a reader (or anyone, with ``server.public_read``); errors as JSON (JSONP
    when reads are public and a safe callback is asked for)."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        meteor_app = _meteor_app()
        if meteor_app.config.server.public_read:
            return view(*args, **kwargs)
        return meteor_app.requires_auth(roles=READ_ROLES)(view)(*args, **kwargs)
    return padded(json_errors(wrapper))


@read_api.before_request
def _refuse_unsafe_callback() -> None:
    # Also here, not only in create_app: the blueprint may be registered on another app.
    problem = request_callback_problem()
    if problem:
        raise CallbackRefused(problem)


def _search_args() -> dict[str, list[str]]:
    args = request.args.to_dict(flat=False)
    for name in JSONP_PARAMETERS:
        args.pop(name, None)
    return args


def _only(*known: str) -> None:
    """A 400 naming a query parameter the route does not take, as /events refuses one."""
    refuse_unknown(request.args, known, "query.", tolerated=JSONP_PARAMETERS)


def _uuid(value: str, name: str) -> uuid.UUID:
    return UUIDCodec().decode(value, name)


@read_api.route("/cameras")
@readable
def cameras() -> Response:
    _only()
    return jsonify({"cameras": _db().get_cameras()})


@read_api.route("/cameras/<camera_id>/status")
@readable
def camera_status(camera_id: str) -> Response:
    CAMERA_ID.decode(camera_id, "camera_id")
    _only("time")
    time = None
    if "time" in request.args:
        time = query_parameter(Instant(), request.args.getlist("time"), "time")
    status = _db().get_camera_status(time=time, camera_id=camera_id)
    if status is None:
        raise ResourceNotFound(f"camera {camera_id!r} has no status at that time")
    return jsonify({"status": status.as_dict()})


@read_api.route("/events")
@readable
def events() -> Response:
    from meteorpi_model.query import search_from_query
    found = _db().search_events(search_from_query(EventSearch, _search_args()))
    return jsonify({"count": found["count"], "events": [e.as_dict() for e in found["events"]]})


@read_api.route("/files")
@readable
def files() -> Response:
    from meteorpi_model.query import search_from_query
    found = _db().search_files(search_from_query(FileRecordSearch, _search_args()))
    return jsonify({"count": found["count"], "files": [f.as_dict() for f in found["files"]]})


@read_api.route("/events/<event_id>")
@readable
def event(event_id: str) -> Response:
    _only()
    found = _db().get_event(_uuid(event_id, "event_id"))
    if found is None:
        raise ResourceNotFound(f"no event {event_id}")
    return jsonify({"event": found.as_dict()})


@read_api.route("/files/<file_id>")
@readable
def file_record(file_id: str) -> Response:
    _only()
    found = _db().get_file(_uuid(file_id, "file_id"))
    if found is None:
        raise ResourceNotFound(f"no file {file_id}")
    return jsonify({"file": found.as_dict()})


@read_api.route("/files/<file_id>/data")
@readable
def file_data(file_id: str) -> Response:
    """The bytes, streamed, as an attachment: a stored HTML file must never run on our origin.

    An attachment is not enough: a page could still pull a stored file in as a script, a style
    sheet or a worker (``<script src=/files/x/data>``), where the Content-Disposition is ignored
    and our own Content-Security-Policy counts it as 'self'. So a type a browser would execute
    or render as a document is served as application/octet-stream (nosniff keeps it that), and
    the answer carries a sandboxing CSP of its own."""
    _only()
    db = _db()
    file_uuid = _uuid(file_id, "file_id")
    record = db.get_file(file_uuid)
    path = db.file_path_for_id(file_uuid) if record is not None else None
    if path is None:
        raise ResourceNotFound(f"no file data for {file_id}")
    asked = request.headers.get("Range")
    if asked is not None and asked.partition("=")[0].strip().lower() != "bytes":
        # A unit we do not serve in is ignored (RFC 9110 14.2): the whole file, not a 416.
        request.environ.pop("HTTP_RANGE", None)
    response = send_file(path, mimetype=served_type(_stored_mime_type(record.mime_type)), as_attachment=True,
                         download_name=_stored_file_name(record.file_name, file_uuid.hex), conditional=True,
                         etag=record.md5)
    response.headers["Content-Security-Policy"] = FILE_DATA_CSP
    return response


# What camera data needs shown inline by the pages (images, videos) or downloaded (FITS, logs,
# JSON) stays as stored; a subtype a browser runs or renders as a document (scripts of any name,
# HTML, XML and SVG, CSS, WebAssembly, PDF, Flash) never reaches it as such.
_PASSIVE_MAIN_TYPES = frozenset({"image", "video", "audio", "application"})
_PASSIVE_TEXT = frozenset({"text/plain", "text/csv", "text/tab-separated-values"})
_ACTIVE_SUBTYPE = re.compile(r"script|html|xml|svg|css|wasm|pdf|flash|xsl", re.IGNORECASE)
FILE_DATA_CSP = "default-src 'none'; sandbox"


def served_type(mime_type: str) -> str:
    """The Content-Type a stored file is served with: its own when passive, else octet-stream."""
    main, _, sub = mime_type.lower().partition("/")
    if (main in _PASSIVE_MAIN_TYPES and not _ACTIVE_SUBTYPE.search(sub)) or f"{main}/{sub}" in _PASSIVE_TEXT:
        return mime_type
    return "application/octet-stream"


# Records stored before the rules were tightened (issue 12 §2) may hold what a header cannot: a
# MIME type or a name ending in a newline once made every download of that file a 500.
def _stored_mime_type(mime_type: str) -> str:
    try:
        return MIME_TYPE.decode(mime_type, "mime_type")
    except ValidationError:
        return "application/octet-stream"


def _stored_file_name(file_name: str | None, fallback: str) -> str:
    # Names accepted before are kept (werkzeug encodes non-ASCII ones as filename*), control
    # characters aside.
    if not file_name or not file_name.isprintable():
        return fallback
    return file_name
