"""Property-based fuzzing of the import API: thousands of hostile requests, no 5xx, no traceback,
and every rejected request leaves the database and the file store exactly as they were.

Most examples run in process (Flask's test client: the real app, the real PostgreSQL, the real
file store, no socket) for speed; a smaller number go to ``meteorpi serve`` over a real socket.
CI runs a derandomized (seeded) profile; ``--long`` runs 25 times as many, randomised.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meteorpi_model import CameraStatus
from tests.server_fixtures import IMPORTER, READER, add_users

from . import hostile
from .checks import fingerprint

AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(IMPORTER).encode()).decode()}
READ_AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(READER).encode()).decode()}
IMPORT_ANSWERS = {"complete", "need_status", "need_file_data", "continue", "continue-nocache", "failed"}
MAX_BODY_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 256 * 1024
# Examples per kind of input: (CI, --long); the field-by-field sweep adds about 1,900 in each.
IN_PROCESS = {"mutated": (500, 20_000), "raw": (300, 10_000), "data": (300, 7_500), "multipart": (300, 7_500),
              "search": (300, 5_000)}
OVER_SOCKET = (250, 2_500)
# gunicorn refuses a request line over 4094 bytes (414), headers too large (431) or bad HTTP
# (400) before the app runs; the worker answers those as JSON too (MeteorWorker.handle_error).
GUNICORN_LIMITS = (400, 414, 431)


def _settings(examples: int, long_run: bool) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=not long_run, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def templates(vectors: dict) -> dict[str, dict]:
    return {"status": vectors["status"], "file": vectors["file"], "event": vectors["event"],
            "cached_entity": {"type": "cached_entity", "cached_entity_id": vectors["event"]["event"]["event_id"]}}


def prepare(db, vectors: dict) -> None:
    """Users, the vectors' status and the bytes of their files held: mutated bodies get past the
    "need_status" answer into the checks against held statuses and bytes."""
    db.config.server.max_body_bytes = MAX_BODY_BYTES
    db.config.server.max_upload_bytes = MAX_UPLOAD_BYTES
    add_users(db)
    db.import_camera_status(CameraStatus.from_dict(vectors["status"]["status"]))
    records = [vectors["file"]["file"], *vectors["event"]["event"]["files"]]
    for data in vectors["bytes"].values():
        md5 = hashlib.md5(data).hexdigest()
        for record in records:
            if record["md5"] == md5:
                db.file_store.store_stream(uuid.UUID(record["file_id"]), md5, [data])


class Judge:
    """Checks each answer and counts it; keeps the storage fingerprint between requests."""

    def __init__(self, db, tally):
        self.db, self.tally = db, tally
        self.state = fingerprint(db)

    def __call__(self, what: str, code: int, body: bytes, answers: set[str] | None = IMPORT_ANSWERS) -> None:
        what = what if len(what) < 300 else what[:300] + "..."
        self.tally.add("inputs")
        if code >= 500:
            self.tally.add("server_errors")
        assert code < 500, f"{what}: HTTP {code} {body[:300]!r}"
        assert b"Traceback" not in body and b'File "' not in body, f"{what}: {body[:300]!r}"
        after = fingerprint(self.db)
        if code == 308:  # werkzeug merges "//" in a path by redirecting (an HTML body, not ours)
            self.tally.add("redirects_308")
            assert after == self.state, f"{what}: redirected yet storage changed"
            return
        try:
            answer = json.loads(body)
        except ValueError:
            raise AssertionError(f"{what}: HTTP {code} answered with something not JSON: {body[:300]!r}") from None
        if code >= 400:
            assert code in (400, 404, 405, 413) + GUNICORN_LIMITS, f"{what}: HTTP {code} {answer}"
            if code in (414, 431):
                self.tally.add(f"gunicorn_{code}")
            assert answer["state"] == "failed" and isinstance(answer["message"], str) and answer["message"], answer
            assert after == self.state, f"{what}: refused with {answer} yet storage changed"
        else:
            assert code == 200, (what, code, answer)
            if answers is not None:
                assert answer["state"] in answers, (what, answer)
        self.state = after


@pytest.fixture(scope="module")
def fuzz_app(make_database, vectors):
    """The real app on a database of its own, prepared; (test client, db)."""
    from meteorpi_server import create_app
    db = make_database("rel_fuzz")
    prepare(db, vectors)
    return create_app(db=db).test_client(), db


def test_every_field_set_to_every_hostile_value_in_process(fuzz_app, vectors, tally):
    """Each field of each body kind (as a new entity) removed or set to one value of every
    hostile class — null, wrong type, out of range, empty, NUL, lone surrogate, huge, SQL,
    traversal: never 5xx, refusals change nothing."""
    client, db = fuzz_app
    judge = Judge(db, tally)
    for what, data in hostile.field_by_field(templates(vectors)):
        response = client.post("/import", data=data, headers={**AUTH, "Content-Type": "application/json"})
        judge(what, response.status_code, response.data)


def test_mutated_and_raw_import_bodies_in_process(fuzz_app, vectors, tally, scale, long_run):
    """Valid bodies mutated field by field and raw byte bodies to POST /import: no 5xx, no
    traceback, a JSON answer, and storage unchanged by every refusal."""
    client, db = fuzz_app
    judge, bodies = Judge(db, tally), templates(vectors)
    kinds = {"mutated": hostile.mutated_body(bodies), "raw": hostile.raw_body(bodies)}
    for name, strategy in kinds.items():
        @_settings(scale(*IN_PROCESS[name]), long_run)
        @given(example=strategy, content_type=st.sampled_from(["application/json", "text/plain", ""]))
        def run(example, content_type):
            what, data = example
            response = client.post("/import", data=data, headers={**AUTH, "Content-Type": content_type})
            judge(f"{name} ({what})", response.status_code, response.data)
        run()


def test_data_route_paths_and_multipart_bodies_in_process(fuzz_app, tally, scale, long_run):
    """POST /import/data/<file_id>/<md5> with traversal, SQL and junk in both segments, and
    mutated multipart bodies: 4xx or a protocol answer, never 5xx, refusals change nothing, and
    bytes land only under the store's own name for a valid id and MD5."""
    client, db = fuzz_app
    judge = Judge(db, tally)

    @_settings(scale(*IN_PROCESS["data"]), long_run)
    @given(request=hostile.data_request())
    def paths(request):
        path, content_type, body, md5 = request
        response = client.post(path, data=body, headers={**AUTH, "Content-Type": content_type})
        judge(f"data path {path!r}", response.status_code, response.data, {"continue", "failed"})
    paths()

    file_id = uuid.uuid4()

    @_settings(scale(*IN_PROCESS["multipart"]), long_run)
    @given(request=hostile.multipart_request())
    def bodies(request):
        content_type, body = request
        response = client.post(f"/import/data/{file_id.hex}/{'0' * 32}", data=body,
                               headers={**AUTH, "Content-Type": content_type})
        judge(f"multipart {content_type!r} {body[:60]!r}", response.status_code, response.data,
              {"continue", "failed"})
    bodies()
    assert not db.has_file_data(file_id)  # nothing with MD5 0000... can ever verify


def test_search_parameters_in_process(fuzz_app, tally, scale, long_run):
    """GET /events and /files with hostile parameter names and values (SQL metacharacters
    among them): 200 or 400, never 5xx, and nothing written."""
    client, db = fuzz_app
    judge = Judge(db, tally)

    @_settings(scale(*IN_PROCESS["search"]), long_run)
    @given(request=hostile.search_query())
    def run(request):
        route, params = request
        query = urllib.parse.urlencode(params)
        response = client.get(f"{route}?{query}", headers=READ_AUTH)
        judge(f"GET {route}?{query}", response.status_code, unpadded(response, params), answers=None)
    run()


def unpadded(response, params: list[tuple[str, str]]) -> bytes:
    """The JSON inside a JSONP answer (a generated ``callback`` may be a plain name, which the
    read API honours), after checking it is wrapped in exactly the name sent; else the body."""
    if response.mimetype != "application/javascript":
        return response.data
    callback = next(v for k, v in params if k == "callback")  # werkzeug takes the first
    padded = re.fullmatch(re.escape(callback).encode() + rb"\((.*)\);?\s*", response.data, re.DOTALL)
    assert padded, f"JSONP not wrapped in the callback {callback!r}: {response.data[:200]!r}"
    return padded.group(1)


def test_hostile_requests_over_a_real_socket(make_database, vectors, served, tally, scale, long_run):
    """The same kinds of input sent to `meteorpi serve` (gunicorn) over TCP: no 5xx, no
    traceback in any answer or in the server's log, refusals change nothing."""
    db = make_database("rel_fuzz_socket")
    prepare(db, vectors)
    server = served(db, workers=1, METEORPI_SERVER_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
                    METEORPI_SERVER_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES))
    judge, bodies = Judge(db, tally), templates(vectors)
    host, port = server.url.rsplit("/", 1)[1].split(":")
    conn = [http.client.HTTPConnection(host, int(port), timeout=30)]

    def send(method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        for attempt in (1, 2):  # the server may close a connection after refusing a body
            try:
                conn[0].request(method, path, body=body, headers=headers)
                response = conn[0].getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                conn[0].close()
                conn[0] = http.client.HTTPConnection(host, int(port), timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    examples = st.one_of(
        hostile.mutated_body(bodies).map(lambda e: ("POST", "/import", e[1], "application/json", e[0])),
        hostile.raw_body(bodies).map(lambda e: ("POST", "/import", e[1], "application/json", e[0])),
        hostile.data_request().map(lambda e: ("POST", e[0], e[2], e[1], "data path")),
        hostile.multipart_request().map(lambda e: ("POST", f"/import/data/{'e' * 32}/{'0' * 32}", e[1], e[0],
                                                   "multipart")),
        hostile.search_query().map(lambda e: ("GET", f"{e[0]}?{urllib.parse.urlencode(e[1])}", None, "",
                                              "search")))

    @_settings(scale(*OVER_SOCKET), long_run)
    @given(example=examples)
    def run(example):
        method, path, body, content_type, what = example
        headers = {**(AUTH if method == "POST" else READ_AUTH), "Content-Type": content_type}
        code, data = send(method, path, body, headers)
        judge(f"socket {what} {method} {path!r}", code, data,
              None if method == "GET" else IMPORT_ANSWERS if path == "/import" else {"continue", "failed"})
    try:
        run()
    finally:
        conn[0].close()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback"):][:2000]
    assert " 500 " not in log
