"""Exceptions of meteorpi_server, and how every failure becomes a JSON answer.

    MeteorpiError                    (meteorpi_model) root of everything meteorpi raises
    ├── ValidationError              (meteorpi_model) bad input -> 400, message "path: problem"
    ├── ConfigError                  (meteorpi_db) the configuration is wrong -> 500 (logged)
    ├── DatabaseError                (meteorpi_db)
    │   ├── StorageUnavailable       -> 503 with Retry-After: PostgreSQL is away, try again later
    │   ├── FileTooLarge             -> 413: an upload over the store's limit
    │   ├── StoreWriteFailed         -> 507 with Retry-After: the file store's disk refused a write
    │   └── anything else            -> 500 "internal error" (logged with its traceback)
    ├── ServeError                   ``meteorpi serve`` cannot start (its address cannot be had)
    └── ApiError                     an answer this package chooses: ``.status`` and ``.message``
        ├── BadRequest               400: malformed JSON or multipart, a field the model cannot check
        │   └── CallbackRefused      400: a JSONP callback that is not a plain JavaScript name
        ├── ResourceNotFound         404: the camera, event, file or bytes asked for are not held
        └── PayloadTooLarge          413: a body or an upload over the configured limit

    OSError                          (builtin)
    └── BrokenBody                   the body's stream ended, stalled, broke or is badly framed
                                     (raised by the serving worker's ``wsgi.input``) -> 400, closed

Every error body is ``{"state": "failed", "message": ...}``: the exporter reads ``state`` on any
answer, a person reads ``message``. A traceback never leaves the server; it goes to the log.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, TypeVar

from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from meteorpi_db import FileTooLarge, StorageUnavailable, StoreFull, StoreWriteFailed
from meteorpi_model import MeteorpiError, ValidationError
from meteorpi_model.logtext import EscapedFaults

from .jsonp import jsonify

log = logging.getLogger("meteorpi.server")
# An unexpected fault's message may quote the request (a value a receiver choked on): its
# traceback reaches the log with that text escaped, never as lines or escapes of the client's.
log.addFilter(EscapedFaults())
# Seconds a client should wait before retrying when PostgreSQL is unreachable.
RETRY_AFTER_SECONDS = 5
# A full disk frees up when its operator acts, not in seconds: nodes need not ask every few.
FULL_RETRY_AFTER_SECONDS = 300
F = TypeVar("F", bound=Callable)


class ServeError(MeteorpiError):
    """The server cannot start as configured; the message names the setting and the cause."""


class ApiError(MeteorpiError):
    """An answer the server chooses to give: HTTP ``status`` with ``message`` in a JSON body."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """The request cannot be understood; the message names the field and the problem."""

    status = 400


class BodyCutShort(BadRequest):
    """The connection broke, stalled or ended before the body it declared had arrived. A flaky
    link or a killed exporter does this as often as a faulty client, so it is never counted
    against the file being uploaded (a body that arrives whole but malformed is)."""


class BrokenBody(OSError):
    """The request body cannot be read to its end: the connection ended, stalled or broke, or
    its framing (chunked transfer coding) is malformed. The client's broken stream, never the
    server's fault, and the connection cannot serve another request after it.

    Raised by the serving worker's ``wsgi.input`` (worker.DeadlineBody) in place of whatever
    the HTTP layer raised (gunicorn's NoMoreData, InvalidChunkSize, ChunkMissingTerminator,
    a socket error, the body deadline), with a message in plain words for the client. An
    OSError, so every reader of bodies takes it as the stream's trouble like any socket
    error: ``bodies.read_stream`` answers it 400, and the file store keeps an upload's whole
    files and the cut file's prefix exactly as for a body cut short of its Content-Length.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CallbackRefused(BadRequest):
    """A JSONP ``callback`` that could smuggle script into the padded answer."""


class ResourceNotFound(ApiError):
    """The thing named in the URL is not held here."""

    status = 404


class PayloadTooLarge(ApiError):
    """The body or upload is larger than the server accepts."""

    status = 413


def failed(message: str, status: int) -> Response:
    """The JSON answer for a failure: ``{"state": "failed", "message": message}``."""
    response = jsonify({"state": "failed", "message": message})
    response.status_code = status
    return response


def _close_after_answer() -> None:
    """Close the connection after this answer instead of reading the rest of the body first: a
    server that would keep the connection alive must drain what the client still sends (an
    endless body, or gigabytes past the limit). The serving worker's body (worker.py) carries the
    request object that decides; other servers are left to their own rules."""
    from flask import has_request_context, request
    if has_request_context():
        req = getattr(request.environ.get("wsgi.input"), "req", None)
        if req is not None:
            req.must_close = True


def _from_http_layer(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the WSGI server's HTTP parsing (gunicorn.http.errors: a
    malformed chunk, a body that ended early) or is a body's broken stream. Such an exception
    can only come from reading the request body: it is the client's, never a 500."""
    return isinstance(exc, BrokenBody) or type(exc).__module__.startswith("gunicorn.http")


def error_response(exc: BaseException) -> Response:
    """The JSON answer for any exception; unexpected ones are logged and answered 500."""
    if isinstance(exc, (PayloadTooLarge, BodyCutShort)) or isinstance(exc, FileTooLarge):
        _close_after_answer()
    if _from_http_layer(exc):
        # The serving worker translates its HTTP layer's errors into BrokenBody with plain
        # words; under another server, or read past that translation, the library's own text
        # stays out of the answer (it names internals such as "No more data after: None").
        _close_after_answer()
        message = exc.message if isinstance(exc, BrokenBody) else "the request body is badly framed or was cut short"
        return failed(f"body: {message}", 400)
    if isinstance(exc, ApiError):
        return failed(exc.message, exc.status)
    if isinstance(exc, ValidationError):
        return failed(str(exc), 400)
    if isinstance(exc, FileTooLarge):
        return failed(str(exc), 413)
    if isinstance(exc, StorageUnavailable):
        log.warning("answering 503: %s", exc)
        response = failed("database unavailable, retry later", 503)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, StoreFull):  # the archive's own words, no path: safe to say
        log.error("answering 507: %s", exc)
        response = failed(f"the archive cannot take file bytes right now: {exc}; retry later", 507)
        response.headers["Retry-After"] = str(FULL_RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, StoreWriteFailed):
        log.error("answering 507: %s", exc)  # the path and errno stay in the log
        response = failed("the archive cannot store file bytes right now (its disk refused a write); "
                          "retry later", 507)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, WebsocketMismatch):  # werkzeug's words blame "the browser (or proxy)"
        return failed("this server has no WebSocket routes: send plain HTTP requests (live changes come as "
                      "Server-Sent Events from /feed/stream)", 400)
    if isinstance(exc, HTTPException):
        response = failed(exc.description or exc.name, exc.code or 500)
        for name, value in exc.get_headers():
            # 405 says which methods would do; 416 how long the file is (bytes */N)
            if name.lower() in ("allow", "content-range"):
                response.headers[name] = value
        return response
    log.error("unexpected fault answering a request", exc_info=exc)
    return failed("internal error", 500)


def json_errors(view: F) -> F:
    """Answer any exception a view raises as JSON, so routes embedded in another application
    keep the protocol's error form whatever error handlers that application has."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except Exception as exc:  # every fault gets an answer; error_response logs surprises
            return error_response(exc)
    return wrapper  # type: ignore[return-value]
