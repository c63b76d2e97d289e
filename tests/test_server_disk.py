"""The archive's disk refusing writes (full, read-only, failing) while bytes arrive.

What an operator must see: a 507 JSON answer saying the archive cannot store bytes (never a
400 blaming the client's connection, never a bare 500), no temp file left, no file counted as
held, and uploads working again as soon as the disk takes writes. The refusal is real: the
server thread writes under RLIMIT_FSIZE, so the kernel answers EFBIG past the limit.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import resource
import signal
import uuid

import pytest
import requests

from .export_fixtures import add_export, exporter, night
from .server_fixtures import IMPORTER, TIMEOUT, Api

LIMIT = 256 * 1024
FILES = "application/vnd.meteorpi.files"


@contextlib.contextmanager
def disk_refusing_writes_past(limit: int):
    """Writes of this process past ``limit`` bytes of a file fail with EFBIG meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def v2_upload(base: str, data: bytes, file_id: uuid.UUID) -> requests.Response:
    manifest = {"files": [{"file_id": file_id.hex, "md5": hashlib.md5(data).hexdigest(), "size": len(data)}]}
    return requests.post(f"{base}/import/v2/data", data=json.dumps(manifest).encode() + b"\n" + data,
                         auth=IMPORTER, timeout=TIMEOUT, headers={"Content-Type": FILES})


def assert_disk_refusal(response: requests.Response, store_root) -> None:
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["state"] == "failed" and "cannot store file bytes" in body["message"]
    assert str(store_root) not in body["message"]  # the server's paths stay in its log
    assert response.headers["Retry-After"]


def test_full_disk_answers_507_keeps_nothing_and_recovers(central, caplog):
    data = os.urandom(2 * LIMIT)
    store = central.db.file_store
    v1_id, v2_id = uuid.uuid4(), uuid.uuid4()
    api = Api(central.url)
    md5 = hashlib.md5(data).hexdigest()
    with disk_refusing_writes_past(LIMIT):
        v1 = api.http.post(f"{central.url}/import/data/{v1_id.hex}/{md5}", auth=IMPORTER, timeout=TIMEOUT,
                           files={"file": ("blob", data, "application/octet-stream")})
        v2 = v2_upload(central.url, data, v2_id)
    assert_disk_refusal(v1, store.root)
    assert_disk_refusal(v2, store.root)
    assert "File too large" in caplog.text  # the cause, for the operator, in the server's log
    assert not any(store.tmp.iterdir())
    assert not store.has(v1_id, md5) and not store.has(v2_id, md5)
    # the server's own fault: not counted against the node as a refused upload
    assert central.db.upload_failures(v1_id, md5, IMPORTER[0]) == central.db.upload_failures(v2_id, md5, IMPORTER[0]) == 0
    assert v2_upload(central.url, data, v2_id).json()["stored"] == [v2_id.hex]  # the disk is back
    assert store.verify(v2_id, md5)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "protocol-1"])
def test_exporter_waits_as_long_as_the_refusing_archive_asks(node, central, tmp_path, fast_path):
    """The archive answers 507 with Retry-After: the node's exporter fails the task and leaves
    the target alone for that long, even when its own failure delay is shorter (zero here). A
    "retry later" answer does not count towards disabling the export (here after 1 failure):
    a few hours of an archive's full disk or database outage must not disable every node."""
    night(node, tmp_path, events=1, files_per_event=1, standalone=0, file_size=2 * LIMIT)
    config = add_export(node, central.import_url, "event")
    with exporter(node, defer_on_failure_seconds=0, fast_path=fast_path, max_failures_before_disable=1) as e:
        e.mark_all()
        with disk_refusing_writes_past(LIMIT):
            totals = e.export_due()
        assert totals.failed == 1 and "HTTP 507" in totals.failures[0], totals.failures
        assert node.get_due_tasks(config, 10) == []  # deferred by the server's Retry-After
        [progress] = node.get_export_progress()
        assert progress.pending == 1  # still to do, not lost
        assert progress.config.enabled and progress.consecutive_failures == 0, progress
        assert "HTTP 507" in progress.last_error  # what happened, for `meteorpi export list`


def _free_bytes(store) -> int:
    found = os.statvfs(store.root)
    return found.f_bavail * found.f_frsize


def test_an_upload_that_would_eat_the_disks_reserve_is_refused_before_its_bytes_are_read(central, monkeypatch):
    """``server.min_free_bytes``: an upload that would leave less free on the store's disk is
    answered 507 (with Retry-After, saying why in the archive's words, no path) before a byte
    of it is read; nothing is written or counted against the node; one that fits is stored."""
    store, api = central.db.file_store, Api(central.url)
    data = os.urandom(64 * 1024)
    md5 = hashlib.md5(data).hexdigest()
    # v2 declares its sizes first: a manifest of 512 MiB over a reserve that leaves 256 MiB is
    # refused without its bytes (none are sent here: the answer comes first)
    monkeypatch.setattr(central.db.config.server, "min_free_bytes", _free_bytes(store) - 256 * 2 ** 20)
    big = {"files": [{"file_id": uuid.uuid4().hex, "md5": md5, "size": 512 * 2 ** 20}]}
    refused = requests.post(f"{central.url}/import/v2/data", data=json.dumps(big).encode() + b"\n",
                            auth=IMPORTER, timeout=TIMEOUT, headers={"Content-Type": FILES})
    assert refused.status_code == 507, refused.text
    message = refused.json()["message"]
    assert "server.min_free_bytes" in message and "512.0 MiB" in message and str(store.root) not in message
    assert int(refused.headers["Retry-After"]) >= 60
    fits = uuid.uuid4()
    assert v2_upload(central.url, data, fits).json()["stored"] == [fits.hex]
    # nothing fits any more: v1 too, before reading the body
    monkeypatch.setattr(central.db.config.server, "min_free_bytes", _free_bytes(store) + 2 ** 30)
    v1_id, v2_id = uuid.uuid4(), uuid.uuid4()
    v1 = api.http.post(f"{central.url}/import/data/{v1_id.hex}/{md5}", auth=IMPORTER, timeout=TIMEOUT,
                       files={"file": ("blob", data, "application/octet-stream")})
    v2 = v2_upload(central.url, data, v2_id)
    for answer in (v1, v2):
        assert answer.status_code == 507 and "server.min_free_bytes" in answer.json()["message"], answer.text
    assert not store.has(v1_id, md5) and not store.has(v2_id, md5) and not any(store.tmp.iterdir())
    assert central.db.upload_failures(v1_id, md5, IMPORTER[0]) == central.db.upload_failures(v2_id, md5, IMPORTER[0]) == 0


def declared_upload(base: str, path: str, length: int, content_type: str, first: bytes = b"") -> tuple[int, dict, dict]:
    """POST a head declaring ``length`` bytes of body and send only ``first`` of them: (status,
    answer, headers). The answer must come before the body is read: it never will be."""
    host, port = base.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", "Basic " + base64.b64encode(":".join(IMPORTER).encode()).decode())
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(length))
        conn.endheaders(first)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        conn.close()


@pytest.mark.parametrize("size", [80 * 2 ** 30, 20 * 2 ** 30, 16 * 2 ** 30 + 2 ** 20])
def test_an_upload_over_the_size_limit_is_413_even_when_the_disk_could_not_take_it(central, monkeypatch, size):
    """The size limit is judged before the free space, on both versions: a file over
    ``server.max_upload_bytes`` can never be accepted, so it is told so (413 naming the limit,
    counted as a refused upload like any over the limit) and never "507, retry later", which
    had an exporter come back every few minutes for ever. Only a size the archive accepts
    meets the free-space check (507)."""
    store = central.db.file_store
    limit = central.db.config.server.max_upload_bytes
    assert limit == 16 * 2 ** 30  # the default: the sizes above straddle it
    monkeypatch.setattr(central.db.config.server, "min_free_bytes", _free_bytes(store) + 2 ** 30)  # nothing fits
    md5 = hashlib.md5(b"never sent").hexdigest()
    multipart = "multipart/form-data; boundary=xyz"
    v1_id, v2_id, fits_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    status, answer, headers = declared_upload(central.url, f"/import/data/{v1_id.hex}/{md5}", size, multipart)
    assert status == 413 and f"limit of {limit} bytes" in answer["message"], answer
    assert "Retry-After" not in headers
    manifest = json.dumps({"files": [{"file_id": v2_id.hex, "md5": md5, "size": size}]}).encode() + b"\n"
    status, answer, headers = declared_upload(central.url, "/import/v2/data", len(manifest) + size, FILES, manifest)
    assert status == 413 and f"limit of {limit} bytes" in answer["message"], answer
    assert "Retry-After" not in headers
    assert central.db.upload_failures(v1_id, md5, IMPORTER[0]) == central.db.upload_failures(v2_id, md5, IMPORTER[0]) == 1
    # a size under the limit meets the free-space check, before its bytes are read
    status, answer, headers = declared_upload(central.url, f"/import/data/{fits_id.hex}/{md5}", 2 ** 30, multipart)
    assert status == 507 and "server.min_free_bytes" in answer["message"] and int(headers["Retry-After"]) >= 60, answer
    assert central.db.upload_failures(fits_id, md5, IMPORTER[0]) == 0
    assert not any(store.tmp.iterdir())
