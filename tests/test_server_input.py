"""Bad input of every kind answers 4xx with a JSON message naming the field, and writes nothing
(docs/protocol.md weak points 5 and 6); routing errors and limits answer JSON too."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
import requests

from .server_fixtures import IMPORTER, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, TIMEOUT


def event_body(records, vectors) -> dict:
    """A fresh, valid event body whose status is also fresh (neither held)."""
    body, _ = records.event(records.status())
    return body


def edit(path: str, value):
    """A mutation setting ``path`` (dotted, with [i]) of the event body to ``value``."""
    def apply(body: dict) -> dict:
        target, keys = body, path.replace("[", ".").replace("]", "").split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
        return body
    return apply


DELETE = object()
DEEP = "[" * 100_000 + "]" * 100_000

# (case id, mutation of a valid event body or raw bytes, expected start of the message)
BAD_BODIES = [
    ("malformed JSON", b'{"type": "event", ', "body: not valid JSON"),
    ("JSON array", b"[1, 2, 3]", "body: expected a JSON object"),
    ("JSON string", b'"event"', "body: expected a JSON object"),
    ("empty body", b"", "body: not valid JSON"),
    ("not UTF-8", b'{"type": "\xff\xfe"}', "body: not UTF-8"),
    ("deep nesting", DEEP.encode(), "body: JSON nested too deeply"),
    ("deep nesting in a field", ('{"type": "event", "event": ' + DEEP + "}").encode(),
     "body: JSON nested too deeply"),
    ("NaN", b'{"type": "event", "event": {"event_time": NaN}}', "body: NaN is not a JSON number"),
    ("Infinity", b'{"type": "event", "event": {"event_time": -Infinity}}', "body: -Infinity is not"),
    ("huge float", b'{"type": "event", "event": {"event_time": 1e999}}', "body: number 1e999 is too large"),
    ("huge integer", b'{"type": "event", "event": {"event_time": ' + b"9" * 5000 + b"}}", "body: not valid JSON"),
    ("duplicate key", b'{"type": "event", "type": "status"}', "type: appears twice"),
    ("duplicate nested key", b'{"type": "event", "event": {"event_id": "a", "event_id": "b"}}',
     "event_id: appears twice"),
    ("missing type", edit("type", DELETE), "type: required"),
    ("unknown type", edit("type", "meteor"), "type: expected one of status, file, event, cached_entity"),
    ("type not a string", edit("type", 3), "type: expected one of"),
    ("missing entity", edit("event", DELETE), "event: required"),
    ("entity not an object", edit("event", [1]), "event: expected an object"),
    ("missing field", edit("event.event_time", DELETE), "event.event_time: required"),
    ("null required field", edit("event.camera_id", None), "event.camera_id: must not be null"),
    ("mistyped time", edit("event.event_time", "yesterday"), "event.event_time: expected an integer"),
    ("fractional time", edit("event.event_time", 1.5), "event.event_time: expected an integer"),
    ("time in seconds", edit("event.event_time", -5), "event.event_time: -5 is outside"),
    ("bad UUID", edit("event.event_id", "not-a-uuid"), "event.event_id: expected 32 hex digits"),
    ("UUID with dashes", edit("event.status_id", "0b1f2c3d-4e5f-4071-8293-a4b5c6d7e8f9"),
     "event.status_id: expected 32 hex digits"),
    ("bad MD5 of a file", edit("event.files[1].md5", "xyz"), "event.files[1].md5: expected 32 hex digits"),
    ("negative file size", edit("event.files[0].file_size", -1), "event.files[0].file_size"),
    ("files not a list", edit("event.files", {"a": 1}), "event.files: expected a list"),
    ("oversized string", edit("event.event_type", "x" * 300), "event.event_type: longer than 255"),
    ("oversized camera id", edit("event.camera_id", "c" * 65), "event.camera_id: longer than 64"),
    ("empty namespace", edit("event.event_type", ":meteor"), "event.event_type: namespace before ':' is empty"),
    ("file name with a path", edit("event.files[0].file_name", "../../etc/passwd"), "event.files[0].file_name"),
    ("file name not ASCII", edit("event.files[0].file_name", "m\u00e9t\u00e9o.png"), "event.files[0].file_name"),
    ("meta type mismatch", edit("event.meta[0].value", "fast"), "event.meta[0].value"),
    ("unknown meta type", edit("event.meta[1].type", "blob"), "event.meta[1].type"),
    ("mistyped MIME", edit("event.files[0].mime_type", "not a mime"), "event.files[0].mime_type"),
    ("bad cached id", lambda body: {"type": "cached_entity", "cached_entity_id": "zz"},
     "cached_entity_id: expected 32 hex digits"),
    ("missing cached id", lambda body: {"type": "cached_entity"}, "cached_entity_id: required"),
    ("status valid_to before valid_from",
     lambda body: {"type": "status", "status": {**STATUS, "valid_to": STATUS["valid_from"] - 1}},
     "status.valid_to: is before valid_from"),
    ("status latitude out of range",
     lambda body: {"type": "status", "status": {**STATUS, "location": {**STATUS["location"], "lat": 91}}},
     "status.location.lat: 91 is outside"),
]
STATUS: dict = {}


@pytest.fixture(autouse=True)
def _status_template(vectors):
    STATUS.clear()
    STATUS.update(copy.deepcopy(vectors["status"]["status"]))


@pytest.mark.parametrize("mutation, expected", [pytest.param(m, e, id=i) for i, m, e in BAD_BODIES])
def test_bad_import_body_is_400_naming_the_field_and_writes_nothing(server, api, records, vectors,
                                                                    mutation, expected):
    """Each class of bad input gets 400 {"state": "failed", "message": "<field>: <problem>"}."""
    valid = event_body(records, vectors)
    cameras_before = server.db.get_cameras()
    if isinstance(mutation, bytes):
        code, answer = api.post(None, raw=mutation, headers={"Content-Type": "application/json"})
    else:
        code, answer = api.post(mutation(copy.deepcopy(valid)))
    assert code == 400, answer
    assert answer["state"] == "failed"
    assert answer["message"].startswith(expected), answer["message"]
    assert "Traceback" not in answer["message"]
    assert server.db.get_cameras() == cameras_before
    assert not server.db.has_event_id(valid["event"]["event_id"])


def test_body_over_the_limit_is_413(server, api):
    """A JSON body larger than server.max_body_bytes: 413 JSON, whether or not its length is
    announced up front (chunked bodies are cut off as they pass the limit)."""
    big = json.dumps({"type": "status", "pad": "x" * MAX_BODY_BYTES}).encode()
    code, answer = api.post(None, raw=big, headers={"Content-Type": "application/json"})
    assert code == 413 and answer["state"] == "failed" and "limit" in answer["message"]

    chunked = requests.post(api.url + "/import", auth=IMPORTER, data=iter([big[:1000], big[1000:]]),
                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert chunked.status_code == 413 and chunked.json()["state"] == "failed"


# -- the data route ------------------------------------------------------------------------
GOOD_MD5 = hashlib.md5(b"payload").hexdigest()


@pytest.mark.parametrize("file_id, md5, expected", [
    ("not-a-uuid", GOOD_MD5, "file_id: expected 32 hex digits"),
    ("0" * 31, GOOD_MD5, "file_id: expected 32 hex digits"),
    ("a" * 32, "abc", "md5: expected 32 hex digits"),
    ("a" * 32, "g" * 32, "md5: expected 32 hex digits"),
])
def test_bad_id_or_md5_in_the_data_url_is_400(server, api, file_id, md5, expected):
    code, answer = api.upload(file_id, md5, b"payload")
    assert code == 400 and answer == {"state": "failed", "message": answer["message"]}
    assert answer["message"].startswith(expected)


def multipart(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


PART = b'Content-Disposition: form-data; name="%s"; filename="x.bin"\r\n\r\npayload'


@pytest.mark.parametrize("content_type, body, expected", [
    ("application/octet-stream", b"payload", "body: expected multipart/form-data"),
    ("multipart/form-data", multipart("b0undary", PART % b"file"), "body: multipart/form-data without"),
    ("multipart/form-data; boundary=b0undary", multipart("b0undary", PART % b"other"),
     "file: the body has no multipart part named 'file'"),
    ("multipart/form-data; boundary=b0undary", multipart("b0undary", PART % b"file", PART % b"file"),
     "file: more than one part named 'file'"),
    ("multipart/form-data; boundary=b0undary", multipart("b0undary", PART % b"file", close=False)[:-8],
     "body: malformed multipart"),
    ("multipart/form-data; boundary=b0undary", b"--b0undary\r\n" + b"X" * (2 * 1024 * 1024),
     "body: multipart headers are too long"),
])
def test_malformed_upload_is_400_and_keeps_nothing(server, api, content_type, body, expected):
    file_id = "b" * 32
    r = requests.post(f"{api.url}/import/data/{file_id}/{GOOD_MD5}", data=body, auth=IMPORTER,
                      headers={"Content-Type": content_type}, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(expected), r.json()
    assert not server.db.has_file_data(file_id)


def test_upload_over_the_limit_is_413_and_keeps_nothing(server, api):
    """An upload larger than server.max_upload_bytes: 413 JSON, and no bytes kept — both when
    Content-Length announces it and when it is only discovered while streaming."""
    data = b"x" * (MAX_UPLOAD_BYTES + 1)
    file_id = "c" * 32
    code, answer = api.upload(file_id, hashlib.md5(data).hexdigest(), data + b"x" * 100_000)
    assert code == 413 and answer["state"] == "failed"
    body = multipart("b0undary", b'Content-Disposition: form-data; name="file"; filename="x"\r\n\r\n' + data)
    r = requests.post(f"{api.url}/import/data/{file_id}/{hashlib.md5(data).hexdigest()}", auth=IMPORTER,
                      data=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"}, timeout=TIMEOUT)
    assert r.status_code == 413 and r.json()["state"] == "failed"
    assert not server.db.has_file_data(file_id)
    assert not [p for p in server.db.file_store.tmp.iterdir() if p.name.startswith(file_id)]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/no/such/thing", 404),
    ("GET", "/import", 405),
    ("DELETE", "/events", 405),
    ("PUT", "/import/data/" + "a" * 32 + "/" + GOOD_MD5, 405),
])
def test_routing_errors_answer_json(server, api, method, path, status):
    r = requests.request(method, api.url + path, auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["state"] == "failed" and r.json()["message"]
    if status == 405:
        assert "Allow" in r.headers


def test_a_websocket_upgrade_is_told_the_server_has_none(server, api):
    """An upgrade to WebSocket on a plain route: a 400 that says what is wrong, not werkzeug's
    "the browser (or proxy) sent a request that this server could not understand"."""
    r = requests.get(api.url + "/cameras", auth=IMPORTER, timeout=TIMEOUT,
                     headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status_code == 400 and r.json()["state"] == "failed"
    assert "WebSocket" in r.json()["message"] and "/feed/stream" in r.json()["message"], r.json()


def test_post_answers_are_never_padded(server, api, records):
    """JSONP is for GET only: a callback on a POST changes nothing."""
    r = requests.post(api.url + "/import?callback=cb", json=records.status(), auth=IMPORTER, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"state": "continue"}
    assert r.headers["Content-Type"].startswith("application/json")
