"""Refused uploads of a file count towards ``server.max_failed_uploads``, whatever refused them,
and per importing account.

Bytes that do not match their MD5, bytes over ``server.max_upload_bytes`` and a body cut short
all count: a node whose upload always fails one of these ways is told its entity failed instead
of being asked for the bytes for ever. Counts are kept per account, so one import account's bad
uploads never get another node's file refused. Over real HTTP, protocol versions 1 and 2.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import requests

from .server_fixtures import Api, IMPORTER, MAX_FAILED_UPLOADS, MAX_UPLOAD_BYTES, OTHER_IMPORTER, TIMEOUT, manifest_of
from .test_server_serving import Served, serve_db  # noqa: F401  (fixture)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cached(entity_id: str) -> dict:
    return {"type": "cached_entity", "cached_entity_id": entity_id}


def _cut_short(api, file_id: str, data: bytes, auth) -> int:
    """A multipart upload whose body ends before its closing boundary."""
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"
            + data[:len(data) // 2])
    r = requests.post(f"{api.url}/import/data/{file_id}/{md5(data)}", data=body, auth=auth, timeout=TIMEOUT,
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    return r.status_code


def _refused_v1_upload(api, kind: str, file_id: str, data: bytes, auth) -> int:
    if kind == "md5 mismatch":
        code, answer = api.upload(file_id, md5(data), b"corrupt" + data, auth=auth)
        assert answer["state"] == "failed"
        return code
    if kind == "over the size limit":
        return api.upload(file_id, md5(data), data, auth=auth)[0]
    return _cut_short(api, file_id, data, auth)


V1_KINDS = {"md5 mismatch": 200, "over the size limit": 413, "cut short": 400}


@pytest.mark.parametrize("kind", list(V1_KINDS))
def test_v1_every_kind_of_refused_upload_counts(server, api, records, kind):
    """Version 1: after max_failed_uploads refused uploads of one kind, the record answers
    failed (naming the file) instead of need_file_data; nothing of the bytes is kept."""
    status = records.status()
    body, data = records.file(status, size=MAX_UPLOAD_BYTES + 1 if kind == "over the size limit" else 3000)
    file_id = body["file"]["file_id"]
    api.post(status)
    assert api.post(body)[1] == {"state": "need_file_data", "file_id": file_id}
    for attempt in range(MAX_FAILED_UPLOADS):
        assert _refused_v1_upload(api, kind, file_id, data, IMPORTER) == V1_KINDS[kind]
        expected = "failed" if attempt == MAX_FAILED_UPLOADS - 1 else "need_file_data"
        assert api.post(cached(file_id))[1]["state"] == expected, (kind, attempt)
    code, answer = api.post(body)
    assert answer["state"] == "failed" and file_id in answer["message"]
    assert f"{MAX_FAILED_UPLOADS} " in answer["message"]
    assert not server.db.has_file_data(file_id) and not server.db.has_file_id(file_id)


def test_v1_one_accounts_refused_uploads_do_not_refuse_anothers(server, api, records):
    """Account A's three bad uploads get A's import refused, not account B's: B is asked for
    the bytes, uploads them and the record is held."""
    status = records.status()
    body, data = records.file(status)
    file_id = body["file"]["file_id"]
    api.post(status)
    for _ in range(MAX_FAILED_UPLOADS):
        assert api.upload(file_id, md5(data), b"corrupt" + data)[1]["state"] == "failed"
    assert api.post(body)[1]["state"] == "failed"
    assert api.post(body, auth=OTHER_IMPORTER)[1] == {"state": "need_file_data", "file_id": file_id}
    assert api.upload(file_id, md5(data), data, auth=OTHER_IMPORTER)[1] == {"state": "continue"}
    assert api.post(body, auth=OTHER_IMPORTER)[1] == {"state": "complete"}
    assert server.db.get_file(file_id).md5 == body["file"]["md5"]


def _refused_v2_upload(api, kind: str, file_id: str, data: bytes, auth) -> int:
    [item], payload = manifest_of({file_id: data})
    if kind == "md5 mismatch":
        payload = bytes([payload[0] ^ 1]) + payload[1:]
    elif kind == "over the size limit":
        item["size"], payload = MAX_UPLOAD_BYTES + 1, b""
    else:
        item["size"] = len(data) + 100
    code, answer = api.batch_upload([item], payload, auth=auth)
    assert answer["state"] == "failed" if code != 200 else answer["failed"][0]["file_id"] == file_id
    return code


@pytest.mark.parametrize("kind, status_code", [("md5 mismatch", 200), ("over the size limit", 413),
                                               ("cut short", 400)])
def test_v2_every_kind_of_refused_upload_counts_per_account(server, api, records, kind, status_code):
    """Version 2: after max_failed_uploads refused uploads the check lists the file under
    refused_file_data for that account, never for another one, who is still asked for it."""
    status = records.status()
    body, data = records.file(status)
    file_id = body["file"]["file_id"]
    check = {"files": [file_id], "file_data": [{"file_id": file_id, "md5": md5(data)}]}
    for attempt in range(MAX_FAILED_UPLOADS):
        assert api.batch("check", check)[1]["file_data"] == [file_id], (kind, attempt)
        assert _refused_v2_upload(api, kind, file_id, data, IMPORTER) == status_code
    code, answer = api.batch("check", check)
    assert answer["file_data"] == [] and [r["file_id"] for r in answer["refused_file_data"]] == [file_id]
    assert file_id in answer["refused_file_data"][0]["message"]
    code, other = api.batch("check", check, auth=OTHER_IMPORTER)
    assert other["file_data"] == [file_id] and other["refused_file_data"] == []
    assert not server.db.has_file_data(file_id)



def _dropped(url: str, path: str, declared: int, sent: bytes, headers: dict, auth=IMPORTER) -> bytes:
    """Send ``sent`` of a body declared ``declared`` bytes long, then end the connection's
    sending side, as a killed exporter or a reset link does; the server's answer, if any."""
    import base64
    import socket
    host, port = url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(":".join(auth).encode()).decode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {credentials}\r\n"
                     f"Content-Length: {declared}\r\n{head}\r\n".encode() + sent)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("version", [1, 2])
def test_uploads_cut_by_the_connection_never_get_a_file_refused(serve_db, records, version):
    """``meteorpi serve`` as deployed: a link that drops every upload part-way (or an exporter
    killed mid-upload) is the link's fault, not the file's. After more cuts than
    max_failed_uploads the server still asks for the bytes, and a whole upload completes."""
    served = Served(serve_db, workers=1, METEORPI_SERVER_MAX_FAILED_UPLOADS=str(MAX_FAILED_UPLOADS))
    try:
        api = Api(served.url)
        status = records.status()
        body, data = records.file(status, size=20000)
        file_id = body["file"]["file_id"]
        api.post(status)
        check = {"files": [file_id], "file_data": [{"file_id": file_id, "md5": md5(data)}]}
        for _ in range(MAX_FAILED_UPLOADS + 2):
            if version == 1:
                part = b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n" + data
                answer = _dropped(served.url, f"/import/data/{file_id}/{md5(data)}", len(part) + 100, part[:5000],
                                  {"Content-Type": "multipart/form-data; boundary=b0"})
            else:
                [item], payload = manifest_of({file_id: data})
                whole = json.dumps({"files": [item]}).encode() + b"\n" + payload
                answer = _dropped(served.url, "/import/v2/data", len(whole), whole[:len(whole) // 2],
                                  {"Content-Type": "application/vnd.meteorpi.files"})
            assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        if version == 1:
            assert api.post(body)[1] == {"state": "need_file_data", "file_id": file_id}
            assert api.upload(file_id, md5(data), data)[1] == {"state": "continue"}
            assert api.post(body)[1] == {"state": "complete"}
        else:
            answer = api.batch("check", check)[1]
            assert answer["file_data"] == [file_id] and answer["refused_file_data"] == []
    finally:
        served.stop()
