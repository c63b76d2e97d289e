"""Hostile bodies against `meteorpi serve` (gunicorn, a real socket): each answered 4xx quickly,
the worker's memory stays bounded, and the server keeps serving. The message of each class is
checked by tests/test_server_input.py; this adds time, memory and the production server."""
from __future__ import annotations

import base64
import json
import socket
import time

import psutil
import pytest
import requests

from tests.server_fixtures import IMPORTER, TIMEOUT

from .conftest import start_served

MAX_BODY = 1024 * 1024
MiB = 1024 * 1024
STATUS_PREFIX = '{"type": "status", "status": {"status_id": "' + "a" * 32 + '", "camera_id": "c", "lens": '


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


CASES = [
    ("nesting 500,000 deep", deep(500_000), 400),
    ("nested objects", b'{"a":' * 150_000 + b"1" + b"}" * 150_000, 400),
    ("huge string in a field", (STATUS_PREFIX + '"' + "x" * 900_000 + '"}}').encode(), 400),
    ("60,000 keys in one object", ("{" + ",".join(f'"k{i}":{i}' for i in range(60_000)) + "}").encode(), 400),
    ("invalid UTF-8", b'{"type": "\xff\xfe\xfd"}', 400),
    ("overlong UTF-8 slash", b'{"type": "\xc0\xaf"}', 400),
    ("UTF-8 encoded surrogate", b'{"type": "status", "status": {"lens": "\xed\xa0\x80"}}', 400),
    ("raw NUL byte", b'{"type": "status\x00"}', 400),
    ("escaped NUL in a field", (STATUS_PREFIX + '"a\\u0000b"}}').encode(), 400),
    ("escaped lone surrogate in a field", (STATUS_PREFIX + '"\\ud800"}}').encode(), 400),
    ("number 1e400", b'{"type": "event", "event": {"event_time": 1e400}}', 400),
    ("integer of 100,000 digits", b'{"type": "event", "event": {"event_time": ' + b"9" * 100_000 + b"}}", 400),
    ("2**64 file size", b'{"type": "file", "file": {"file_size": 18446744073709551616}}', 400),
    ("duplicate keys", b'{"type": "status", "type": "event"}', 400),
    ("body over the limit (announced)", b"{" + b" " * (MAX_BODY + 10) + b"}", 413),
]


@pytest.fixture(scope="module")
def hostile_server(make_database, tmp_path_factory, request):
    server = start_served(make_database("rel_hostile"), tmp_path_factory.mktemp("hostile") / "serve.log",
                          METEORPI_SERVER_MAX_BODY_BYTES=str(MAX_BODY))
    request.addfinalizer(server.stop)
    return server


def worker_rss(server) -> int:
    return sum(p.memory_info().rss for p in psutil.Process(server.proc.pid).children(recursive=True))


def still_serving(server) -> None:
    assert requests.get(server.url + "/cameras", auth=IMPORTER, timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("name, body, expected", [pytest.param(*c, id=c[0]) for c in CASES])
def test_hostile_body_is_refused_quickly_with_bounded_memory(hostile_server, tally, name, body, expected):
    """4xx JSON within 2 s, worker memory grown by less than 64 MiB, the next request served."""
    rss_before = worker_rss(hostile_server)
    started = time.monotonic()
    r = requests.post(hostile_server.url + "/import", data=body, auth=IMPORTER, timeout=TIMEOUT,
                      headers={"Content-Type": "application/json"})
    seconds = time.monotonic() - started
    grown = worker_rss(hostile_server) - rss_before
    tally.add("inputs")
    tally.add("server_errors", r.status_code >= 500)
    tally.measure(f"{name}", f"HTTP {r.status_code} in {seconds * 1000:.0f} ms, RSS +{grown / MiB:.1f} MiB")
    assert r.status_code == expected, r.text[:300]
    assert r.json()["state"] == "failed" and "Traceback" not in r.text
    assert seconds < 2.0
    assert grown < 64 * MiB
    still_serving(hostile_server)


def test_endless_body_is_cut_off_at_the_limit(hostile_server, tally):
    """A chunked body that would never end, and a Content-Length of 10 GB: 413 as soon as the
    limit is passed, without reading the rest, memory bounded, the server still serving."""
    rss_before = worker_rss(hostile_server)
    sent = {"bytes": 0}

    def endless():
        block = b" " * 65536
        while sent["bytes"] < 200 * MiB:
            sent["bytes"] += len(block)
            yield block
    started = time.monotonic()
    try:
        r = requests.post(hostile_server.url + "/import", data=endless(), auth=IMPORTER, timeout=TIMEOUT,
                          headers={"Content-Type": "application/json"})
        code = r.status_code
    except requests.ConnectionError:  # the server answered and closed while we were still sending
        code = 413
    chunked_seconds = time.monotonic() - started
    assert code == 413
    assert sent["bytes"] < 50 * MiB, sent  # it stopped reading long before the end

    host, port = hostile_server.url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(":".join(IMPORTER).encode()).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /import HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Basic "
                     + credentials.encode() + b"\r\nContent-Length: 10737418240\r\n\r\n{")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    grown = worker_rss(hostile_server) - rss_before
    tally.add("inputs", 2)
    tally.measure("endless chunked body", f"413 after {sent['bytes'] / MiB:.0f} MiB sent, {chunked_seconds:.2f} s, "
                                          f"RSS +{grown / MiB:.1f} MiB")
    assert grown < 64 * MiB
    still_serving(hostile_server)
    log = hostile_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback"):][:2000]


def test_a_json_body_of_many_valid_entities_is_parsed_within_bounds(hostile_server, vectors, tally):
    """Just under the limit, a wide but valid body (a status with 100 regions of many points)
    is accepted and answered promptly: the limit, not the parser, bounds the work."""
    status = json.loads(json.dumps(vectors["status"]))
    status["status"]["status_id"] = "b" * 32
    status["status"]["regions"] = [[{"x": i, "y": j} for j in range(100)] for i in range(100)]
    body = json.dumps(status).encode()
    assert len(body) < MAX_BODY
    started = time.monotonic()
    r = requests.post(hostile_server.url + "/import", data=body, auth=IMPORTER, timeout=TIMEOUT,
                      headers={"Content-Type": "application/json"})
    seconds = time.monotonic() - started
    tally.add("inputs")
    tally.measure("10,000-point status accepted in (s)", round(seconds, 2))
    assert r.status_code == 200 and r.json() == {"state": "continue"}
    assert seconds < 5
