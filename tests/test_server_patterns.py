"""Every pattern-checked field refuses a trailing newline, CRLF, NUL and fullwidth digits with a
400 naming the field, on every route that reads it, over real HTTP (security review, issue 12 §2).

Python's ``$`` also matches before a final ``\\n`` and ``uuid.UUID``/``int`` take fullwidth
digits: an id ``"<32 hex>\\n"`` used to pass the pattern and then make ``uuid.UUID`` raise a bare
ValueError (a 500), and a MIME type ``"text/html\\n"`` used to be stored, after which every
download of that file answered 500.
"""
from __future__ import annotations

import hashlib
import json
import urllib.parse
import uuid
from typing import Any, Callable

import pytest
import requests
from werkzeug.http import parse_options_header

from meteorpi_model import FileRecord, as_uuid, ms_to_instant

from meteorpi_model.wire import FILES_MEDIA_TYPE

from .server_fixtures import IMPORTER, READER, TIMEOUT


def fullwidth(value: str) -> str:
    """The first ASCII digit as its fullwidth twin (``int`` and ``uuid.UUID`` read it as a
    digit), or one appended when there is none."""
    for i, c in enumerate(value):
        if "0" <= c <= "9":
            return value[:i] + chr(ord(c) + 0xFEE0) + value[i + 1:]
    return value + "\uff11"


SPOILERS: dict[str, Callable[[str], str]] = {
    "newline": lambda v: v + "\n",
    "crlf": lambda v: v + "\r\n",
    "nul": lambda v: v[:1] + "\x00" + v[1:],
    "fullwidth digit": fullwidth,
}


def _keys(path: str) -> list:
    return [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]


def spoil(body: Any, path: str, spoiler: Callable[[str], str]) -> Any:
    """``body`` with the string at ``path`` (dotted, with [i]) spoiled."""
    *parents, last = _keys(path)
    target = body
    for key in parents:
        target = target[key]
    target[last] = spoiler(target[last])
    return body


class Client:
    """Builds fresh valid requests and sends them; each case spoils one field of one."""

    def __init__(self, url: str, records):
        self.url, self.records = url, records

    def bodies(self) -> dict[str, dict]:
        status = self.records.status()
        event, _ = self.records.event(status)
        file, _ = self.records.file(status)
        return {"status": status, "event": event, "file": file}

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, auth=IMPORTER, timeout=TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, auth=READER, timeout=TIMEOUT, **kwargs)


def v1_import(kind: str, path: str):
    def send(client: Client, spoiler):
        return client.post("/import", json=spoil(client.bodies()[kind], path, spoiler))
    return send


def v1_cached(client: Client, spoiler):
    return client.post("/import", json={"type": "cached_entity", "cached_entity_id": spoiler(uuid.uuid4().hex)})


def v1_data(which: str):
    def send(client: Client, spoiler):
        data = b"payload"
        parts = {"file_id": uuid.uuid4().hex, "md5": hashlib.md5(data).hexdigest()}
        parts[which] = spoiler(parts[which])
        quoted = {k: urllib.parse.quote(v, safe="") for k, v in parts.items()}
        return client.post(f"/import/data/{quoted['file_id']}/{quoted['md5']}",
                           files={"file": ("blob", data, "application/octet-stream")})
    return send


def v2_check(path: str):
    def send(client: Client, spoiler):
        body = {"statuses": [uuid.uuid4().hex], "events": [uuid.uuid4().hex], "files": [uuid.uuid4().hex],
                "file_data": [{"file_id": uuid.uuid4().hex, "md5": hashlib.md5(b"x").hexdigest()}]}
        return client.post("/import/v2/check", json=spoil(body, path, spoiler))
    return send


def v2_data(path: str):
    def send(client: Client, spoiler):
        data = b"payload"
        manifest = {"files": [{"file_id": uuid.uuid4().hex, "md5": hashlib.md5(data).hexdigest(), "size": len(data)}]}
        line = json.dumps(spoil({"manifest": manifest}, path, spoiler)["manifest"]).encode() + b"\n"
        return client.post("/import/v2/data", data=line + data, headers={"Content-Type": FILES_MEDIA_TYPE})
    return send


def v2_import(path: str):
    def send(client: Client, spoiler):
        bodies = client.bodies()
        body = {"statuses": [bodies["status"]["status"]], "events": [bodies["event"]["event"]],
                "files": [bodies["file"]["file"]]}
        return client.post("/import/v2/import", json=spoil(body, path, spoiler))
    return send


def read_path(template: str, value: str):
    def send(client: Client, spoiler):
        return client.get(template.format(urllib.parse.quote(spoiler(value), safe="")))
    return send


def read_query(route: str, name: str, value: str, wrap: Callable[[str], str] = lambda v: v):
    # (``callback`` is refused whatever it holds while reads are private: test_server_read.py
    # spoils it on a server with public reads.)
    def send(client: Client, spoiler):
        return client.get(route, params={name: wrap(spoiler(value))})
    return send


ID = "0b1f2c3d4e5f40718293a4b5c6d7e8f9"
# (field named in the message, how to send a request with that field spoiled)
FIELDS: list[tuple[str, Callable]] = [
    *[(f"status.{name}", v1_import("status", f"status.{name}")) for name in ("status_id", "camera_id")],
    *[(f"event.{name}", v1_import("event", f"event.{name}"))
      for name in ("event_id", "status_id", "camera_id", "event_type", "meta[0].key")],
    *[(f"event.files[0].{name}", v1_import("event", f"event.files[0].{name}"))
      for name in ("file_id", "status_id", "camera_id", "md5", "mime_type", "file_name", "semantic_type",
                   "meta[0].key")],
    *[(f"file.{name}", v1_import("file", f"file.{name}"))
      for name in ("file_id", "status_id", "camera_id", "md5", "mime_type", "file_name", "semantic_type")],
    ("cached_entity_id", v1_cached),
    ("file_id", v1_data("file_id")),
    ("md5", v1_data("md5")),
    *[(path, v2_check(path)) for path in ("statuses[0]", "events[0]", "files[0]", "file_data[0].file_id",
                                          "file_data[0].md5")],
    *[(f"manifest.files[0].{name}", v2_data(f"manifest.files[0].{name}")) for name in ("file_id", "md5")],
    *[(path, v2_import(path)) for path in ("statuses[0].status_id", "statuses[0].camera_id", "events[0].event_id",
                                           "events[0].files[0].md5", "events[0].files[0].mime_type",
                                           "events[0].meta[0].key", "files[0].file_id", "files[0].file_name",
                                           "files[0].semantic_type")],
    ("event_id", read_path("/events/{}", ID)),
    ("file_id", read_path("/files/{}", ID)),
    ("file_id", read_path("/files/{}/data", ID)),
    ("camera_id", read_path("/cameras/{}/status", "cam-cambridge-01")),
    ("time", read_query("/cameras/cam-cambridge-01/status", "time", "1435630000000")),
    ("query.camera_ids", read_query("/events", "camera_ids", "cam-cambridge-01")),
    ("query.event_type", read_query("/events", "event_type", "meteorpi:meteor")),
    ("query.limit", read_query("/events", "limit", "10")),
    ("query.after", read_query("/events", "after", "1435630000000")),
    ("query.lat_min", read_query("/files", "lat_min", "52.5")),
    ("query.semantic_type", read_query("/files", "semantic_type", "meteorpi:raw_video")),
    ("query.meta_constraints", read_query(
        "/events", "meta_constraints", "meteorpi:duration_s",
        lambda key: json.dumps([{"constraint_type": "less", "key": key, "value": 3}]))),
]


@pytest.mark.parametrize("spoiler", list(SPOILERS.values()), ids=list(SPOILERS))
@pytest.mark.parametrize("field, send", [pytest.param(f, s, id=f"{i}:{f}") for i, (f, s) in enumerate(FIELDS)])
def test_spoiled_pattern_field_is_400_naming_it(server, records, field, send, spoiler):
    """400 ``{"state": "failed", "message": "<field>: ..."}``, never a 500 and never accepted."""
    r = send(Client(server.url, records), spoiler)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    answer = r.json()
    assert answer["state"] == "failed"
    assert answer["message"].startswith(field), answer["message"]


@pytest.mark.parametrize("mime_type", ["text/html\n", "text/html\r\n", "text/html\n\n"])
def test_mime_type_with_a_newline_is_never_stored(server, api, records, mime_type):
    """Refused on both import paths, with the bytes already uploaded and the status held, so
    nothing else stands in the way: the record is not held and its download stays 404."""
    status = records.status()
    assert api.post(status) == (200, {"state": "continue"})
    for route in ("/import", "/import/v2/import"):
        file, data = records.file(status)
        record = file["file"]
        assert api.upload(record["file_id"], record["md5"], data) == (200, {"state": "continue"})
        record["mime_type"] = mime_type
        body = file if route == "/import" else {"files": [record]}
        r = requests.post(server.url + route, json=body, auth=IMPORTER, timeout=TIMEOUT)
        assert r.status_code == 400, r.text
        assert "mime_type" in r.json()["message"]
        assert not server.db.has_file_id(record["file_id"])
        assert api.get(f"/files/{record['file_id']}/data").status_code == 404


@pytest.mark.parametrize("mime_type, file_name, sent_type, sent_name", [
    ("text/html\n", "x.html\n", "application/octet-stream", None),
    ("image/png", "m\u00e9t\u00e9o.png", "image/png", "m\u00e9t\u00e9o.png"),
])
def test_a_record_stored_before_the_rules_still_downloads(server, api, records, mime_type, file_name,
                                                           sent_type, sent_name):
    """A record already held (stored by an older release) with a MIME type or a file name that
    today's rules refuse downloads, never a 500: as application/octet-stream under its id when a
    header could not carry them, with its name when only today's ASCII rule refuses it."""
    status = records.status()
    file, data = records.file(status)
    record = file["file"]
    assert api.post(status)[0] == 200
    assert api.upload(record["file_id"], record["md5"], data)[0] == 200
    legacy = FileRecord(camera_id=record["camera_id"], status_id=as_uuid(record["status_id"]),
                        file_time=ms_to_instant(record["file_time"]), mime_type=mime_type,
                        semantic_type=record["semantic_type"], file_size=len(data), md5=record["md5"],
                        file_id=as_uuid(record["file_id"]), file_name=file_name)
    server.db.import_file_record(legacy, "importer")
    r = api.get(f"/files/{record['file_id']}/data")
    assert r.status_code == 200, r.text[:300]
    assert r.content == data
    assert r.headers["Content-Type"].startswith(sent_type)
    disposition, params = parse_options_header(r.headers["Content-Disposition"])
    assert params.get("filename") == (sent_name or record["file_id"])
