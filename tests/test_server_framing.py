"""``meteorpi serve`` over raw sockets: a badly framed or cut request is the client's, and its
answer is JSON like every other.

gunicorn parses request heads and chunked bodies; its own errors once escaped as a 500 (a bad
chunk size met while the app read the body), as HTML (a URL or headers too long, a bad
Content-Length) or leaked its internals ("No more data after: None"). A chunked upload cut
short must keep what arrived exactly as a Content-Length one does (tests/test_cut_uploads.py),
a body deadline names the bytes that did arrive, and no secret of a URL reaches the access log.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
import uuid

import pytest

from .server_fixtures import IMPORTER, READER, Api, Records, add_users
from .test_server_serving import Served

MEDIA = "application/vnd.meteorpi.files"
BODY_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def served(make_database):
    """One ``meteorpi serve`` (one worker, a short body deadline) for the module's tests."""
    db = make_database("meteorpi_framing")
    add_users(db)
    server = Served(db, workers=1, METEORPI_SERVER_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS))
    server.db = db
    yield server
    code = server.stop()
    assert code == 0, "".join(server.lines)
    assert "Traceback" not in "".join(server.lines), "".join(server.lines)


def _address(served) -> tuple[str, int]:
    host, port = served.url.rsplit("/", 1)[1].split(":")
    return host, int(port)


def _credentials(user: tuple[str, str] = IMPORTER) -> bytes:
    return base64.b64encode(":".join(user).encode())


def exchange(served, raw: bytes, end_sending: bool = True) -> bytes:
    """Send ``raw`` (optionally ending the sending side after it); everything answered until
    the server closes the connection."""
    with socket.create_connection(_address(served), timeout=30) as sock:
        sock.sendall(raw)
        if end_sending:
            sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def answer_of(raw: bytes) -> tuple[int, dict[str, str], dict]:
    """(status, headers with lower-case names, JSON body) of the one answer in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    assert headers.get("content-type", "").startswith("application/json"), raw[:600]
    return int(lines[0].split()[1]), headers, json.loads(body)


def chunked_post(path: str, content_type: str, chunked_body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n".encode()
            + b"Authorization: Basic " + _credentials() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked_body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def assert_plain(message: str) -> None:
    """A message of the server's own words: none of gunicorn's exception texts or names."""
    for internal in ("No more data", "None", "Invalid chunk", "terminator is not", "gunicorn", "Error", "b'"):
        assert internal not in message, message


def _check(served, files: dict[str, bytes]) -> dict:
    body = {"file_data": [{"file_id": fid, "md5": hashlib.md5(data).hexdigest()} for fid, data in files.items()]}
    r = Api(served.url).http.post(served.url + "/import/v2/check", json=body, auth=IMPORTER, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _night(served, vectors, sizes: list[int]) -> dict[str, bytes]:
    records, api = Records(vectors), Api(served.url)
    status = records.status()
    api.post(status)
    files = {}
    for size in sizes:
        body, data = records.file(status, size=size)
        files[body["file"]["file_id"]] = data
    return files


def _manifest_line(files: dict[str, bytes]) -> bytes:
    manifest = [{"file_id": fid, "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
                for fid, data in files.items()]
    return json.dumps({"files": manifest}).encode() + b"\n"


# -- errors met while the app reads the body ---------------------------------------------------
def test_a_malformed_chunk_size_on_v1_import_is_a_json_400_and_closes(served):
    raw = exchange(served, chunked_post("/import", "application/json", b"ZZ\r\n{}\r\n0\r\n\r\n"), end_sending=False)
    status, headers, body = answer_of(raw)
    assert status == 400, raw[:600]
    assert "chunk size" in body["message"] and body["state"] == "failed", body
    assert_plain(body["message"])
    assert headers.get("connection", "").lower() == "close", raw[:600]


def test_a_malformed_chunk_size_on_v2_data_is_a_json_400_and_closes(served, vectors):
    files = _night(served, vectors, [3000])
    raw = exchange(served, chunked_post("/import/v2/data", MEDIA, chunk(_manifest_line(files)) + b"XYZ\r\nabc\r\n"),
                   end_sending=False)
    status, headers, body = answer_of(raw)
    assert status == 400, raw[:600]
    assert "chunk size" in body["message"], body
    assert_plain(body["message"])
    assert headers.get("connection", "").lower() == "close", raw[:600]


def test_a_chunked_upload_cut_keeps_whole_files_and_the_cut_prefix_like_content_length(served, vectors):
    first, second = _night(served, vectors, [300_000, 200_000]).items()
    files = dict([first, second])
    body = chunk(_manifest_line(files)) + chunk(first[1]) + chunk(second[1][:50_000])
    raw = exchange(served, chunked_post("/import/v2/data", MEDIA, body))  # then the link drops
    status, headers, answer = answer_of(raw)
    assert status == 400, raw[:600]
    assert_plain(answer["message"])
    assert "50000 bytes are kept" in answer["message"], answer
    assert served.db.has_file_data(uuid.UUID(first[0])) and not served.db.has_file_data(uuid.UUID(second[0]))
    check = _check(served, files)
    assert check["file_data"] == [second[0]], check  # the whole file is no longer asked for
    assert check["offsets"] == {second[0]: 50_000}, check


def test_a_chunked_upload_cut_inside_a_chunk_keeps_what_arrived(served, vectors):
    """Cut between a chunk's size line and its end (gunicorn: ChunkMissingTerminator or
    NoMoreData): the file before is kept, and the bytes of the cut chunk that arrived too."""
    first, second = _night(served, vectors, [100_000, 100_000]).items()
    files = dict([first, second])
    body = chunk(_manifest_line(files)) + chunk(first[1]) + b"%x\r\n" % len(second[1]) + second[1][:30_000]
    status, _, answer = answer_of(exchange(served, chunked_post("/import/v2/data", MEDIA, body)))
    assert status == 400 and "30000 bytes are kept" in answer["message"], answer
    assert_plain(answer["message"])
    check = _check(served, files)
    assert check["file_data"] == [second[0]] and check["offsets"] == {second[0]: 30_000}, check


def test_a_chunked_json_body_cut_short_is_a_plain_400(served):
    raw = exchange(served, chunked_post("/import", "application/json", chunk(b'{"type": ')))
    status, headers, body = answer_of(raw)
    assert status == 400 and "ended" in body["message"], body
    assert_plain(body["message"])


@pytest.mark.parametrize("path", ["/import", "/import/v2/check", "/import/v2/import", "/watches"])
def test_a_json_body_cut_short_of_its_content_length_is_refused_not_taken_whole(served, vectors, path):
    """A client that stops sending (an exporter killed, a link cut after a half-close) before the
    Content-Length it declared: what arrived is a prefix, never the request. A valid JSON prefix
    was once imported and answered as if whole (the status below was stored)."""
    status = dict(vectors["status"]["status"], status_id=uuid.uuid4().hex, camera_id="cut-" + uuid.uuid4().hex[:8])
    payload = {"/import": {"type": "status", "status": status}, "/import/v2/check": {"statuses": [status["status_id"]]},
               "/import/v2/import": {"statuses": [status]}, "/watches": {"name": "cut", "webhook": "https://example.org/"}}
    body = json.dumps(payload[path]).encode()
    head = ((f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body) + 100}\r\n").encode() + b"Authorization: Basic "
            + _credentials(READER if path == "/watches" else IMPORTER) + b"\r\n\r\n")
    raw = exchange(served, head + body)  # 100 declared bytes never come: the sending side ends
    code, headers, answer = answer_of(raw)
    assert code == 400, raw[:600]
    assert "ended before the body did" in answer["message"] and f"after {len(body)} bytes" in answer["message"], answer
    assert_plain(answer["message"])
    assert headers.get("connection", "").lower() == "close", raw[:600]
    assert served.db.get_camera_status_by_id(uuid.UUID(status["status_id"])) is None


def test_a_v2_upload_cut_inside_its_manifest_line_says_the_connection_ended(served, vectors):
    """The same class on the upload route: cut inside its first line, the answer blamed the
    line's form ("must be a JSON object ending in a newline") instead of the cut."""
    files = _night(served, vectors, [3000])
    line = _manifest_line(files)
    head = (f"POST /import/v2/data HTTP/1.1\r\nHost: test\r\nContent-Type: {MEDIA}\r\n"
            f"Content-Length: {len(line) + 3000}\r\n").encode() + b"Authorization: Basic " + _credentials() + b"\r\n\r\n"
    status, headers, body = answer_of(exchange(served, head + line[:20]))
    assert status == 400 and "ended before the body did" in body["message"], body
    assert headers.get("connection", "").lower() == "close"


def test_a_form_cut_short_of_its_content_length_is_refused(served):
    """The same for a page's form post: the fields that arrived are not the form."""
    body = b"name=cut&webhook=https%3A%2F%2Fexample.org%2F"
    head = (b"POST /watches HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\nAuthorization: Basic " % (len(body) + 50)) + _credentials(READER) + b"\r\n\r\n"
    raw = exchange(served, head + body)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:600]
    assert b"ended before the body did" in raw, raw[:800]


def test_a_slow_body_deadline_names_the_bytes_that_arrived(served):
    for sent in (8, 300, 1500):
        head = (b"POST /import HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Authorization: Basic " + _credentials() + b"\r\nContent-Length: 100000\r\n\r\n")
        with socket.create_connection(_address(served), timeout=30) as sock:
            sock.sendall(head + b" " * sent)
            raw = b"".join(iter(lambda: sock.recv(65536), b""))
        status, headers, body = answer_of(raw)
        assert status == 400 and "deadline" in body["message"], body
        assert f"; {sent} bytes received" in body["message"], body
        assert headers.get("connection", "").lower() == "close", raw[:600]


@pytest.mark.parametrize("path", ["//import/v2", "///import/v2", "/import//v2", "//openapi.json"])
def test_a_path_with_an_empty_segment_is_a_json_404(served, path):
    """``//import/v2`` was answered as ``/import/v2`` (gunicorn drops a leading empty segment):
    one resource under two paths, which a proxy's rule for ``/import`` would not match."""
    raw = exchange(served, f"GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Basic ".encode()
                   + _credentials() + b"\r\n\r\n")
    status, _, body = answer_of(raw)
    assert status == 404 and body["state"] == "failed", raw[:600]


def test_an_http_1_1_request_without_host_is_a_json_400(served):
    """RFC 9112 (3.2): a server must answer 400 to an HTTP/1.1 request without Host; it was
    served. HTTP/1.0 has no such rule and is still served."""
    status, _, body = answer_of(exchange(served, b"GET /openapi.json HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == 400 and "Host" in body["message"], body
    raw = exchange(served, b"GET /openapi.json HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200") or raw.startswith(b"HTTP/1.1 200"), raw[:200]


# -- errors gunicorn answers before the app runs ---------------------------------------------
def test_a_url_too_long_is_a_json_414(served):
    raw = exchange(served, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
    status, headers, body = answer_of(raw)
    assert status == 414 and "URL" in body["message"] and body["state"] == "failed", body
    assert headers.get("connection", "").lower() == "close"


def test_headers_too_large_are_a_json_431(served):
    headers = b"".join(b"X-Filler-%d: v\r\n" % i for i in range(200))
    raw = exchange(served, b"GET / HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
    status, _, body = answer_of(raw)
    assert status == 431 and "header" in body["message"], body


def test_a_field_too_large_is_a_json_431(served):
    raw = exchange(served, b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n")
    status, _, body = answer_of(raw)
    assert status == 431 and "header" in body["message"], body


@pytest.mark.parametrize("header, named", [
    (b"Content-Length: abc", "Content-Length"),
    (b"Content-Length: 5\r\nContent-Length: 6", "Content-Length"),
    (b"Transfer-Encoding: chunked, chunked", "Transfer-Encoding"),
    (b"Transfer-Encoding: gzip", "Transfer-Encoding"),  # RFC 9112 6.3: not ending in chunked is a 400
])
def test_bad_body_framing_headers_are_a_json_400(served, header, named):
    raw = exchange(served, b"POST /import HTTP/1.1\r\nHost: test\r\n" + header + b"\r\n\r\nhello")
    status, headers, body = answer_of(raw)
    assert status == 400 and named in body["message"], body
    assert headers.get("connection", "").lower() == "close"


def test_an_unknown_transfer_coding_is_a_json_501(served):
    raw = exchange(served, b"POST /import HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: foo, chunked\r\n\r\nhello")
    status, _, body = answer_of(raw)
    assert status == 501 and "Transfer-Encoding" in body["message"], body


def test_a_malformed_request_line_is_a_json_400(served):
    status, _, body = answer_of(exchange(served, b"GET\x01 / HTTP/1.1\r\nHost: test\r\n\r\n"))
    assert status == 400 and "request line" in body["message"], body


# -- the access log ----------------------------------------------------------------------------
def test_the_access_log_never_holds_a_secret_of_a_url(served):
    secret, token = "Zq" + uuid.uuid4().hex, "Tk" + uuid.uuid4().hex
    watch_id = uuid.uuid4().hex
    paths = [f"/watches/{watch_id}/confirm?secret={secret}",
             f"/?access_token={token}&keep=visible&Password={secret}"]
    for path in paths:
        raw = exchange(served, f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (any(f"/watches/{watch_id}/confirm" in line for line in served.lines)
                                               and any("keep=visible" in line for line in served.lines)):
        time.sleep(0.05)  # both lines: the log is written after each answer, perhaps after we read it
    log = "".join(served.lines)
    assert f"/watches/{watch_id}/confirm?secret=" in log, log[-2000:]  # the request is logged...
    assert secret not in log and token not in log, log[-2000:]  # ...never its secret
    assert "keep=visible" in log, log[-2000:]


@pytest.mark.parametrize("uri, logged", [
    ("/watches/ab/confirm?secret=s3", "/watches/ab/confirm?secret=REDACTED"),
    ("/x?a=1&access_token=t&API_KEY=k&b", "/x?a=1&access_token=REDACTED&API_KEY=REDACTED&b"),
    ("/x?sec%72et=s&new_password=p#frag", "/x?sec%72et=REDACTED&new_password=REDACTED#frag"),
    ("/x?limit=10", "/x?limit=10"),
    ("/plain", "/plain"),
])
def test_redaction_keeps_names_and_drops_secret_values(uri, logged):
    from meteorpi_server.redact import redact_uri
    assert redact_uri(uri) == logged


def test_a_refused_request_head_is_logged_without_its_secret(served):
    """A request gunicorn refuses before the app runs is still an access line (and a warning):
    neither holds the secret of its URL."""
    secret, watch_id = "Rf" + uuid.uuid4().hex, uuid.uuid4().hex
    raw = exchange(served, f"GET /watches/{watch_id}/confirm?secret={secret} HTTP/1.1\r\nHost: test\r\n"
                           f"Content-Length: x\r\n\r\n".encode())
    assert answer_of(raw)[0] == 400
    deadline = time.monotonic() + 10
    while not any(watch_id in line for line in served.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    log = "".join(served.lines)
    assert f"/watches/{watch_id}/confirm?secret=REDACTED" in log, log[-2000:]
    assert secret not in log, log[-2000:]
