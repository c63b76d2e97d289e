"""A fast-path upload cut by its connection keeps what arrived (issue 18), over real HTTP.

A poor link resets connections every few MB: every file received whole and verified before the
cut is published, and the cut file's received prefix is held for the same account, so the next
check asks only for the rest (``offsets``) and an upload continues from there.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time

from .server_fixtures import IMPORTER, OTHER_IMPORTER, TIMEOUT, Api, manifest_of
from .test_upload_failures import _dropped

MEDIA = {"Content-Type": "application/vnd.meteorpi.files"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _night(api: Api, records, sizes: list[int]) -> dict[str, bytes]:
    status = records.status()
    api.post(status)
    files = {}
    for size in sizes:
        body, data = records.file(status, size=size)
        files[body["file"]["file_id"]] = data
    return files


def _check(api: Api, files: dict[str, bytes], auth=None) -> dict:
    body = {"file_data": [{"file_id": fid, "md5": md5(data)} for fid, data in files.items()]}
    return api.batch("check", body, **({"auth": auth} if auth else {}))[1]


def _body(files: dict[str, bytes], offsets: dict[str, int] | None = None) -> bytes:
    manifest, _ = manifest_of(files)
    offsets = offsets or {}
    for item in manifest:
        if item["file_id"] in offsets:
            item["offset"] = offsets[item["file_id"]]
    payload = b"".join(data[offsets.get(fid, 0):] for fid, data in files.items())
    return json.dumps({"files": manifest}).encode() + b"\n" + payload


def test_an_upload_cut_in_its_third_file_keeps_the_first_two(server, api, records):
    files = _night(api, records, [300_000, 200_000, 400_000])
    whole = _body(files)
    answer = _dropped(server.url, "/import/v2/data", len(whole), whole[:len(whole) - 200_000], MEDIA)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    first, second, third = files
    assert server.db.has_file_data(first) and server.db.has_file_data(second)
    assert not server.db.has_file_data(third)
    check = _check(api, files)
    assert check["file_data"] == [third]
    assert check["offsets"] == {third: 200_000}


def test_a_file_cut_four_times_completes_from_where_each_cut_left_it(server, api, records):
    [(fid, data)] = _night(api, records, [1_000_000]).items()
    rest, sent = {fid: data}, 0
    for cut_at in (150_000, 420_000, 610_000, 930_000):
        offset = _check(api, rest).get("offsets", {}).get(fid, 0)
        body = _body(rest, {fid: offset})
        piece = body[:len(body) - (len(data) - cut_at)]
        sent += len(piece)
        _dropped(server.url, "/import/v2/data", len(body), piece, MEDIA)
        assert _check(api, rest)["offsets"] == {fid: cut_at}
        assert not server.db.has_file_data(fid)
    # Another account holds nothing of it: its check says send from 0.
    assert "offsets" not in _check(api, rest, auth=OTHER_IMPORTER)
    body = _body(rest, {fid: 930_000})
    sent += len(body)
    status, answer = api.batch_upload(json.loads(body.split(b"\n", 1)[0])["files"], data[930_000:])
    assert (status, answer) == (200, {"stored": [fid], "failed": []})
    assert server.db.has_file_data(fid) and server.db.file_store.verify(uuid_of(fid), md5(data))
    assert sent <= 1.3 * len(data)
    assert _check(api, rest) == {"statuses": [], "events": [], "files": [], "file_data": [], "refused_file_data": []}
    assert not list(server.db.file_store.partial.glob(f"{fid}_*"))  # the prefix went with the publish


def test_an_offset_not_held_is_refused_uncounted_and_a_bad_prefix_never_published(server, api, records):
    [(fid, data)] = _night(api, records, [300_000]).items()
    body = _body({fid: data}, {fid: 1000})
    status, answer = api.batch_upload(json.loads(body.split(b"\n", 1)[0])["files"], data[1000:])
    assert status == 200 and answer["stored"] == [] and "not held here: send it from 0" in answer["failed"][0]["message"]
    # A prefix whose rest does not match: the whole MD5 is checked, nothing published, prefix dropped.
    whole = _body({fid: data})
    _dropped(server.url, "/import/v2/data", len(whole), whole[:len(whole) - 100_000], MEDIA)
    assert _check(api, {fid: data})["offsets"] == {fid: 200_000}
    wrong = data[:200_000] + os.urandom(100_000)
    body = _body({fid: data}, {fid: 200_000})
    status, answer = api.batch_upload(json.loads(body.split(b"\n", 1)[0])["files"], wrong[200_000:])
    assert status == 200 and answer["stored"] == [] and "received bytes have MD5" in answer["failed"][0]["message"]
    assert not server.db.has_file_data(fid) and "offsets" not in _check(api, {fid: data})


def test_a_check_for_other_bytes_of_a_file_drops_the_prefix_of_the_old_ones(server, api, records):
    """A cut upload's prefix is kept only for the bytes it began: a check naming the file with
    another MD5 (the node holds other bytes for it now) is answered from 0, the old prefix gone."""
    [(fid, data)] = _night(api, records, [300_000]).items()
    kept = {fid: os.urandom(300_000)}  # the other bytes, cut after 200 kB
    whole = _body(kept)
    _dropped(server.url, "/import/v2/data", len(whole), whole[:len(whole) - 100_000], MEDIA)
    assert _check(api, kept)["offsets"] == {fid: 200_000}
    assert "offsets" not in _check(api, {fid: data})
    assert not list(server.db.file_store.partial.glob(f"{fid}_*"))
    assert "offsets" not in _check(api, kept)


def test_a_check_while_an_upload_of_its_file_is_still_arriving_answers_what_that_upload_kept(server, api, records):
    """A reset reaches the client at once while the server still takes and flushes what came:
    a check sent right after the cut must wait for that upload's end and answer from what it
    kept (here the file's first 200 kB), not ask for the whole file again. Before, it answered
    at once without the prefix, and a poor link sent much of each night twice."""
    [(fid, data)] = _night(api, records, [500_000]).items()
    whole = _body({fid: data})
    sent = whole[:len(whole) - 300_000]
    host, port = server.url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(":".join(IMPORTER).encode()).decode()
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock.sendall(f"POST /import/v2/data HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {credentials}\r\n"
                 f"Content-Length: {len(whole)}\r\nContent-Type: {MEDIA['Content-Type']}\r\n\r\n".encode() + sent)
    store, deadline = server.db.file_store, time.monotonic() + TIMEOUT
    while not list(store.tmp.glob(f"{fid}.*")):  # the server is receiving it
        assert time.monotonic() < deadline, "the upload never arrived"
        time.sleep(0.01)

    def cut_later() -> None:
        time.sleep(0.5)
        sock.shutdown(socket.SHUT_WR)  # the body ends 300 kB short: the server keeps the prefix
        while sock.recv(65536):
            pass
        sock.close()

    cutter = threading.Thread(target=cut_later)
    cutter.start()
    try:
        check = _check(api, {fid: data})
    finally:
        cutter.join()
    assert check["file_data"] == [fid]
    assert check.get("offsets") == {fid: 200_000}


def uuid_of(hex_id: str):
    import uuid
    return uuid.UUID(hex_id)
