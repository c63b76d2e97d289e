"""Hypothesis strategies for hostile input: valid bodies mutated field by field, raw bytes,
data-route paths, multipart bodies and search parameters.

Mutations start from the protocol vectors (``tests/vectors``), so most examples are one or two
fields away from a body the server would accept: they reach the model's validation of each
field, the receiver's checks against held statuses and the file store, not just the JSON parser.
"""
from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
from typing import Any

from hypothesis import strategies as st

from meteorpi_model import EventSearch, FileRecordSearch, fields

SQL_METACHARACTERS = ["' OR '1'='1", "'; DROP TABLE event; --", '" OR ""="', "%", "_", "\\", "\\'", "');--",
                      "1; SELECT pg_sleep(5)", "$$", "E'\\x00'", "/*", "*/", "::text", "ns:' OR 1=1 --"]
TRAVERSALS = ["..", "../..", "../../../../etc/passwd", "%2e%2e", "%2e%2e%2f%2e%2e", "..%2f..%2fetc%2fpasswd",
              "....//", "..\\..\\windows", "%252e%252e", "/etc/passwd", "~", ".", "%00", "a" * 32 + "/..",
              "a" * 32 + "%00", "A" * 32, "0" * 32, "g" * 32, "a" * 31, "a" * 33,
              "a" * 32 + "%0a", "a" * 32 + "%0d%0a", "\uff10" + "a" * 31]  # "$" passes a final newline
SPECIAL_STRINGS = ["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "💥", "é", ":", "ns:", ":value", "a:b:c",
                   "x" * 256, "x" * 5000, "1435630000000", "NaN", "null", "true", "{}", "[]",
                   *SQL_METACHARACTERS, *TRAVERSALS[:6]]
SPECIAL_NUMBERS = [0, -1, 1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, 2 ** 53 + 1, 2 ** 63, -(2 ** 63) - 1,
                   2 ** 64, 10 ** 30, 10 ** 400, -10 ** 400, 1e308, -1e308, 1e-320, 0.5, -0.0,
                   4102444800000, 4102444800001, 1435630000000.5]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=4),  # lone surrogates, controls
    st.sampled_from(SPECIAL_STRINGS), st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True))
hostile_strings = st.one_of(
    st.sampled_from(SPECIAL_STRINGS), st.text(max_size=40), st.text(st.characters(codec="utf-8"), max_size=300),
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "Cf"]), min_size=1, max_size=3).map(lambda t: "ok" + t),
    st.integers(250, 5000).map(lambda n: "x" * n))
hostile_numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.integers(), st.floats(allow_nan=False,
                                                                                        allow_infinity=False))
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=12)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) into ``node``, containers included."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, prefix + (i,))
    return out


def field_paths(node: Any) -> list[tuple]:
    """``paths`` with list positions past the second left out (64 region points are one field)."""
    return [p for p in paths(node) if all(not isinstance(k, int) or k <= 1 for k in p)]


# One value of each hostile class, for the exhaustive field-by-field sweep.
SWEEP_VALUES = [None, True, -1, 0.5, 2 ** 63, 10 ** 400, 1e308, "", " ", "\x00", "a\x00b", "\ud800", "ok\udfff",
                "x" * 5000, "' OR '1'='1", "../../etc/passwd", "A" * 32, "A" * 32 + "\n", "\uff11" * 32,
                "text/html\n", [], {}, [None], {"": None}]
DELETE = object()


def field_by_field(templates: dict[str, dict]):
    """(what, JSON bytes) for every field of every template set to every SWEEP_VALUE or
    removed, each as a new entity (fresh id) so an accepted body would really be written."""
    for kind in sorted(templates):
        base = copy.deepcopy(templates[kind])
        if kind in base:
            base[kind][f"{kind}_id"] = "f" * 32
        for path in field_paths(base):
            for value in [DELETE, *SWEEP_VALUES]:
                body = copy.deepcopy(base)
                parent = _parent(body, path)
                if value is DELETE:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = value
                what = f"{kind}: {'.'.join(map(str, path))} = {'(deleted)' if value is DELETE else repr(value)[:30]}"
                yield what, json.dumps(body).encode()


def _parent(body: Any, path: tuple):
    target = body
    for key in path[:-1]:
        target = target[key]
    return target


@st.composite
def mutated_body(draw, templates: dict[str, dict]) -> tuple[str, bytes]:
    """(what was done, JSON bytes): a valid body with one to three fields replaced, removed or
    added, or the wrong kind of body under a ``type``."""
    kind = draw(st.sampled_from(sorted(templates)))
    body = copy.deepcopy(templates[kind])
    done = []
    if kind in body and draw(st.booleans()):  # a new entity: past "already held" into the writes
        body[kind][f"{kind}_id"] = draw(st.uuids()).hex
        done.append(f"fresh {kind}_id")
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        candidates = field_paths(body)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent, last = _parent(body, path), path[-1]
        op = draw(st.sampled_from(["same-type", "same-type", "same-type", "set", "set", "delete", "add", "retype"]))
        if op == "same-type" and isinstance(parent[last], str):
            parent[last] = draw(hostile_strings)
        elif op == "same-type" and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
            parent[last] = draw(hostile_numbers)
        elif op in ("set", "same-type"):
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=12))] = draw(values)
        elif op == "add" and isinstance(parent[last], list):
            parent[last].append(copy.deepcopy(draw(st.sampled_from(parent[last]))) if parent[last] else None)
        elif op == "retype":
            value = parent[last]
            parent[last] = ([value] if not isinstance(value, list) else {"0": value}) if draw(st.booleans()) \
                else json.dumps(value)
        done.append(f"{op} {'.'.join(map(str, path))}")
    text = json.dumps(body, ensure_ascii=draw(st.sampled_from([True, True, True, False])))
    return "; ".join(done), text.encode("utf-8", "surrogatepass")


@st.composite
def raw_body(draw, templates: dict[str, dict]) -> tuple[str, bytes]:
    """Bytes: random ones, or a valid body's JSON with bytes flipped, cut, inserted or a key duplicated."""
    choice = draw(st.sampled_from(["binary", "text", "corrupt", "corrupt", "duplicate", "truncate"]))
    if choice == "binary":
        return choice, draw(st.binary(max_size=2048))
    if choice == "text":
        return choice, draw(st.text(max_size=500)).encode("utf-8", "surrogatepass")
    data = bytearray(json.dumps(templates[draw(st.sampled_from(sorted(templates)))]).encode())
    if choice == "truncate":
        return choice, bytes(data[:draw(st.integers(0, len(data)))])
    if choice == "duplicate":
        key = draw(st.sampled_from([b'"type"', b'"camera_id"', b'"md5"', b'"value"', b'"status_id"']))
        at = data.find(key)
        if at >= 0:
            end = data.find(b",", at)
            if end > at:
                data[end:end] = b"," + bytes(data[at:end])
        return choice, bytes(data)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        byte = draw(st.sampled_from([0, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0xff, 0xc0, 0x80, 0xed])
                    | st.integers(0, 255))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and data:
            data[pos] = byte
        elif action == "insert":
            data[pos:pos] = bytes([byte])
        elif data:
            del data[pos]
    return choice, bytes(data)


segment = st.one_of(st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True), st.sampled_from(TRAVERSALS),
                    st.text(max_size=40), st.sampled_from(SQL_METACHARACTERS))


@st.composite
def data_request(draw) -> tuple[str, str, bytes, str]:
    """(path, content type, body, md5 of the file bytes): an upload to a hostile data-route path."""
    data = draw(st.binary(max_size=512))
    md5 = hashlib.md5(data).hexdigest()
    file_id = draw(segment)
    md5_segment = draw(st.sampled_from([md5, md5.upper()]) | segment)
    quote = draw(st.sampled_from(["all", "keep-slashes", "none"]))

    def q(text: str) -> str:
        if quote == "all":
            return urllib.parse.quote(text, safe="")
        if quote == "keep-slashes":
            return urllib.parse.quote(text, safe="/.%")
        return "".join(c for c in text if 0x20 < ord(c) < 0x7f and c not in "?#")
    path = f"/import/data/{q(file_id)}/{q(md5_segment)}" + draw(st.sampled_from(["", "/", "/extra", "/.."]))
    body = multipart_body("fuzzb0undary", data)
    return path, "multipart/form-data; boundary=fuzzb0undary", body, md5


def multipart_body(boundary: str, data: bytes, name: str = "file") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


@st.composite
def multipart_request(draw) -> tuple[str, bytes]:
    """(content type, body): a valid upload's multipart body and headers, mutated."""
    data = draw(st.binary(max_size=256))
    boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a b", "é", "--", ""]) | st.text(max_size=30))
    safe_boundary = boundary if boundary.isascii() and boundary.isprintable() and boundary else "b0undary"
    body = bytearray(multipart_body(safe_boundary, data, draw(st.sampled_from(["file", "other", "", "fi\x00le"]))))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, max(0, len(body) - 1)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and body:
            body[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            body[pos:pos] = draw(st.sampled_from([b"\r\n", b"--", b"\r\n\r\n", b"--" + safe_boundary.encode(),
                                                   b'Content-Disposition: form-data; name="file"\r\n']))
        elif action == "delete" and body:
            del body[pos]
        else:
            del body[pos:]
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                         f'multipart/form-data; boundary="{boundary}"', "multipart/form-data",
                                         "multipart/mixed; boundary=b0undary", "application/json", ""]))
    printable = "".join(c for c in content_type if c.isascii() and c.isprintable())
    return printable, bytes(body)


def _search_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


@st.composite
def search_query(draw) -> tuple[str, list[tuple[str, str]]]:
    """(route, query parameters): a search with hostile values, names mostly from the model."""
    route, cls = draw(st.sampled_from([("/events", EventSearch), ("/files", FileRecordSearch)]))
    names = st.sampled_from(_search_names(cls)) | st.text(max_size=10)
    value = st.one_of(st.sampled_from(SQL_METACHARACTERS), st.text(max_size=30),
                      st.integers().map(str), st.floats().map(str),
                      st.sampled_from(["true", "false", "1", "0", "[]", "{}", "null",
                                       '[{"constraint_type":"less","key":"x","value":"\' OR 1=1"}]',
                                       '[{"constraint_type":"contains","key":"meteorpi:x","value":"%\'--"}]',
                                       "[" * 2000 + "]" * 2000]))
    params = draw(st.lists(st.tuples(names, value), max_size=5))
    return route, params
