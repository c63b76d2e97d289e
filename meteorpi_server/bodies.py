"""Request bodies of the import API: read from the socket up to a limit, parsed as strict JSON.

Strict: UTF-8, no duplicate keys, no NaN/Infinity, an object at the top, nesting too deep is a
400 (never a RecursionError), and never a general YAML loader (docs/protocol.md weak point 6).

Bounded: parsing builds a Python object per JSON value, and a value can cost 30 times its bytes
(``{},`` is 3 bytes, an empty dict and its list slot 72): a 16 MiB body of ``{}`` items once
grew a worker by 420 MB before any list was counted. So the parse's memory is estimated from
the raw bytes first — the decoded text, the strings, one ``BYTES_PER_VALUE`` per ``{ [ , :`` —
and a body that would need more than ``PARSE_BUDGET_BYTES`` is refused (413) before anything is
built. An exporter's batches (about 120 values per event) are far below it.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, BinaryIO, Callable

from flask import request

from .errors import BadRequest, BodyCutShort, BrokenBody, PayloadTooLarge

READ_SIZE = 256 * 1024
MiB = 1024 * 1024
# What parsing one body may cost a worker (its decoded text included; the raw bytes are freed
# once decoded), so peak growth stays within about 64 MiB whatever a body of max_body_bytes
# (16 MiB) holds. It must admit the largest entity the model takes, which no client can split:
# a status of 100 polygons of 1,000 points or an event of 256 files of 256 meta is estimated at
# 51-57 MiB (measured once parsed: 25-26 MiB; the estimate is an upper bound, tight only for
# hostile shapes). At 40 MiB both were refused 413 while a few MiB of JSON.
PARSE_BUDGET_BYTES = 64 * MiB
# The most one JSON value costs once parsed, per ``{``, ``[``, ``,`` or ``:`` in the text
# (measured: 78 for lists of one-element lists, 38 for one-key objects, 23 for ``{}`` items).
BYTES_PER_VALUE = 96
_WIDE_CHARACTER = re.compile(rb"[\xc4-\xff]")   # UTF-8 of U+0100 and beyond: 2 bytes a character in a str
_ASTRAL_CHARACTER = re.compile(rb"[\xf0-\xff]")  # beyond U+FFFF: 4 bytes a character
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]")  # "\ud83d..." makes its whole string 4 bytes a character


# Room for the multipart framing around a file's bytes when judging an upload by its Content-Length.
MULTIPART_OVERHEAD = 64 * 1024


def refuse_upload_over_limit(max_bytes: int) -> None:
    """PayloadTooLarge (413, naming the limit) when this request's Content-Length is too long
    for a multipart body around a file of at most ``max_bytes``; nothing when it fits or is not
    declared (a chunked body is held to the limit as it streams).

    Why apart: it is judged from the head, before a byte of the body is read, and before
    anything else an upload is judged by, the store's free space above all. A file over the
    limit can never be accepted, so it is told so (413) and not "507, retry later", which had an
    exporter send the same hopeless upload every few minutes for ever."""
    if request.content_length is not None and request.content_length > max_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"body: {request.content_length} bytes is more than the limit of {max_bytes} bytes")


# -- ---------------------------------------------------------------------------
def read_body(limit: int) -> bytearray:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (held once: no
    copy into ``bytes``, which would double the peak)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body: {request.content_length} bytes is more than the limit of {limit} bytes")
    data = bytearray()
    stream = request.stream
    while True:
        chunk = read_stream(stream, min(READ_SIZE, limit + 1 - len(data)))
        if not chunk:
            # ``meteorpi serve`` says so itself (worker.DeadlineBody); a server that hands over
            # a short body as if whole, when the app is mounted elsewhere, is caught here.
            declared = request.content_length
            if declared is not None and len(data) < declared:
                raise BodyCutShort(f"body: the connection ended before the body did "
                                   f"(after {len(data)} of its {declared} bytes)")
            return data
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"body: more than the limit of {limit} bytes")


def read_stream(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes of the body; a broken or stalled connection is the client's 400."""
    try:
        return stream.read(size)
    except BrokenBody as e:  # the serving worker says what broke, in the client's terms
        raise BodyCutShort(f"body: {e}") from None
    except OSError as e:  # includes socket.timeout after server.timeout_seconds
        raise BodyCutShort(f"body: the connection stalled or broke while the body was read ({e})") from None


class DeclaredBody:
    """The request body read from ``wsgi.input`` itself, never past its Content-Length.

    Why not ``request.stream``: werkzeug's stream is an ``io.RawIOBase``, whose every
    ``read(n)`` allocates and zeroes an n-byte buffer, copies the server's bytes into it and
    copies them out again. On the upload path that is two extra passes over every byte the
    server receives, on the CPU that also hashes them. WSGI servers hand ``wsgi.input`` over
    unbounded, hence the bound kept here.

    A chunked body (``length`` None) is read the same way, ended by the server's own framing:
    one path for both, so a cut is met, and what arrived kept, the same way whatever the
    framing. ``left`` is the bytes still due: for a chunked body None until its end is read,
    then 0, so "the whole body came, yet was shorter than its manifest" reads the same too.
    """

    def __init__(self, stream: BinaryIO, length: int | None):
        self.stream, self.left = stream, length
        # Offered only when the server's stream offers it (the file store then reads into one
        # buffer of its own instead of taking a new bytes object per piece).
        if callable(getattr(stream, "readinto", None)):
            self.readinto = self._readinto

    def read(self, size: int) -> bytes:
        return self._bounded(self.stream.read, size)

    def _readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.left is not None:
            view = view[:max(self.left, 0)]
        if not view:
            return 0
        n = self.stream.readinto(view)
        self._received(n, len(view))
        return n

    def readline(self, size: int) -> bytes:
        return self._bounded(self.stream.readline, size)

    def _bounded(self, read: Callable[[int], bytes], size: int) -> bytes:
        if self.left is not None:
            size = min(size, self.left)
        if size <= 0:
            return b""
        data = read(size)
        self._received(len(data), size)
        return data

    def _received(self, n: int, asked: int) -> None:
        if self.left is not None:
            self.left -= n
        elif not n and asked:  # a chunked body's end: its last chunk came
            self.left = 0


def upload_stream() -> DeclaredBody:
    """The body for a streamed upload, straight from the server: bounded by its declared length
    (what exporters send), or by the server's chunked framing. werkzeug's stream only where the
    server does not end a chunked body itself (it is then empty, as werkzeug makes it)."""
    environ = request.environ
    if request.content_length is None and not environ.get("wsgi.input_terminated"):
        return DeclaredBody(request.stream, None)
    return DeclaredBody(environ["wsgi.input"], request.content_length)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"{key}: appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str):
    raise BadRequest(f"body: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"body: number {text[:32]} is too large")
    return value


def parse_cost(data: bytes | bytearray) -> tuple[int, int]:
    """(bytes the parse of ``data`` may need at most, JSON values it may build at most).

    Counted on the raw bytes at C speed, nothing built: structural characters inside strings
    are counted too, which only overestimates (an exporter's strings hold few of them).
    """
    text_width = 1
    if not data.isascii() and _WIDE_CHARACTER.search(data):
        text_width = 4 if _ASTRAL_CHARACTER.search(data) else 2
    string_width = text_width
    if b"\\u" in data:
        string_width = max(text_width, 4 if _SURROGATE_ESCAPE.search(data) else 2)
    values = 1 + data.count(b"{") + data.count(b"[") + data.count(b",") + data.count(b":")
    return len(data) * (text_width + string_width) + values * BYTES_PER_VALUE, values


def parse_json_object(data: bytes | bytearray) -> dict:
    """Strict JSON (UTF-8, no duplicate keys, no NaN/Infinity) that must be an object, parsed
    only when ``parse_cost`` fits ``PARSE_BUDGET_BYTES`` (else PayloadTooLarge). A bytearray
    ``data`` (read_body's) is taken over: emptied once decoded."""
    cost, values = parse_cost(data)
    if cost > PARSE_BUDGET_BYTES:
        raise PayloadTooLarge(
            f"body: too much to parse at once ({len(data):,} bytes holding up to {values:,} JSON values would need "
            f"about {cost // MiB} MiB; the limit is {PARSE_BUDGET_BYTES // MiB} MiB): send fewer or smaller "
            f"entities per request")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"body: not UTF-8 (byte {e.start})") from None
    if isinstance(data, bytearray):
        data.clear()  # read_body's buffer, handed over: freed now, though the caller still names it
    del data  # the text alone is held while parsing
    try:
        value = json.loads(text, object_pairs_hook=_object_without_duplicates,
                           parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest("body: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"body: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise BadRequest(f"body: not valid JSON ({str(e)[:80]})") from None
    if not isinstance(value, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(value).__name__}")
    return value
