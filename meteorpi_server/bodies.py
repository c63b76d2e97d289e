"""Request bodies of the import API: read from the socket up to a limit, parsed as strict JSON.

Strict: UTF-8, no duplicate keys, no NaN/Infinity, an object at the top, nesting too deep is a
400 (never a RecursionError), and never a general YAML loader (PROTOCOL.md weak point 6).
"""
from __future__ import annotations

import json
import math
from typing import Any, BinaryIO, Callable

from flask import request

from .errors import BadRequest, PayloadTooLarge

READ_SIZE = 256 * 1024


# -- ---------------------------------------------------------------------------
def read_body(limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body: {request.content_length} bytes is more than the limit of {limit} bytes")
    data = bytearray()
    stream = request.stream
    while True:
        chunk = read_stream(stream, min(READ_SIZE, limit + 1 - len(data)))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"body: more than the limit of {limit} bytes")


def read_stream(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes of the body; a broken or stalled connection is the client's 400."""
    try:
        return stream.read(size)
    except OSError as e:  # includes socket.timeout after server.timeout_seconds
        raise BadRequest(f"body: the connection stalled or broke while the body was read ({e})") from None


class DeclaredBody:
    """The request body read from ``wsgi.input`` itself, never past its Content-Length.

    Why not ``request.stream``: werkzeug's stream is an ``io.RawIOBase``, whose every
    ``read(n)`` allocates and zeroes an n-byte buffer, copies the server's bytes into it and
    copies them out again. On the upload path that is two extra passes over every byte the
    server receives, on the CPU that also hashes them. WSGI servers hand ``wsgi.input`` over
    unbounded, hence the bound kept here.
    """

    def __init__(self, stream: BinaryIO, length: int):
        self.stream, self.left = stream, length

    def read(self, size: int) -> bytes:
        return self._bounded(self.stream.read, size)

    def readline(self, size: int) -> bytes:
        return self._bounded(self.stream.readline, size)

    def _bounded(self, read: Callable[[int], bytes], size: int) -> bytes:
        size = min(size, self.left)
        if size <= 0:
            return b""
        data = read(size)
        self.left -= len(data)
        return data


def upload_stream() -> BinaryIO | DeclaredBody:
    """The body for a streamed upload: straight from the server when its length is declared
    (what exporters send), else werkzeug's stream (chunked transfer encoding)."""
    if request.content_length is None:
        return request.stream
    return DeclaredBody(request.environ["wsgi.input"], request.content_length)


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


def parse_json_object(data: bytes) -> dict:
    """Strict JSON (UTF-8, no duplicate keys, no NaN/Infinity) that must be an object."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"body: not UTF-8 (byte {e.start})") from None
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
