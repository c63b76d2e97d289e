"""Who may use which route: the full matrix of credentials against every route."""
from __future__ import annotations

import copy
import hashlib

import pytest
import requests

from meteorpi_model import ValidationError
from meteorpi_server import create_app

from .server_fixtures import IMPORTER, READER, TIMEOUT, VIEWER, Api, Records, deliver, serve_in_thread

NO_AUTH = None
WRONG_PASSWORD = ("importer", "not-the-password")
UNKNOWN_USER = ("nobody", "importer-pw")


@pytest.fixture(scope="module")
def held(live_server, vectors):
    """Ids of one imported event (with its status and files), for routes that need them."""
    records = Records(vectors)
    status = records.status()
    event, files = records.event(status, sizes=[32])
    deliver(Api(live_server.url), event, {status["status"]["status_id"]: status}, files)
    e = event["event"]
    return {"camera": records.camera_id, "event": e["event_id"], "file": e["files"][0]["file_id"],
            "time": e["event_time"], "status": status}


def read_routes(held) -> list[str]:
    return ["/cameras", f"/cameras/{held['camera']}/status?time={held['time']}", "/events", "/files",
            f"/events/{held['event']}", f"/files/{held['file']}", f"/files/{held['file']}/data"]


READ_PATHS = ["cameras", "camera status", "events", "files", "event", "file", "file data"]


def call(url: str, route: str, held: dict, auth) -> requests.Response:
    if route == "import":
        return requests.post(url + "/import", json=held["status"], auth=auth, timeout=TIMEOUT)
    if route == "import data":
        data = b"some bytes"
        return requests.post(f"{url}/import/data/{'d' * 32}/{hashlib.md5(data).hexdigest()}", auth=auth,
                             files={"file": ("f", data)}, timeout=TIMEOUT)
    return requests.get(url + read_routes(held)[READ_PATHS.index(route)], auth=auth, timeout=TIMEOUT)


DENIED = [("no credentials", NO_AUTH, 401), ("wrong password", WRONG_PASSWORD, 401),
          ("unknown user", UNKNOWN_USER, 401), ("user without the role", VIEWER, 403)]
MATRIX = (
    [(route, who, auth, code) for route in ["import", "import data"] + READ_PATHS for who, auth, code in DENIED]
    + [(route, "reader (role user)", READER, 403) for route in ("import", "import data")]
    + [(route, "importer (role import)", IMPORTER, 200) for route in ["import", "import data"] + READ_PATHS]
    + [(route, "reader (role user)", READER, 200) for route in READ_PATHS]
)


@pytest.mark.parametrize("route, who, auth, expected", [pytest.param(*m, id=f"{m[0]}-{m[1]}") for m in MATRIX])
def test_auth_matrix(live_server, held, route, who, auth, expected):
    """401 (with WWW-Authenticate) for missing or wrong credentials, 403 (without) for a real user
    without the role, the route's answer for the right role; refusals are JSON."""
    r = call(live_server.url, route, held, auth)
    assert r.status_code == expected, r.text
    if expected == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    if expected == 403:  # the credentials were right: no challenge asking a browser for others
        assert "WWW-Authenticate" not in r.headers
    if expected in (401, 403):
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["message"]
        assert "importer-pw" not in r.text


def test_index_is_open_and_names_the_service(live_server):
    r = requests.get(live_server.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == "meteorpi" and body["version"]


def test_public_read_opens_the_read_api_but_not_the_import_api(live_server, held):
    """server.public_read: anyone may read; importing still needs the import role."""
    config = copy.deepcopy(live_server.db.config)
    config.server.public_read = True
    url, http_server = serve_in_thread(create_app(config=config, db=live_server.db))
    try:
        for route in READ_PATHS:
            assert call(url, route, held, NO_AUTH).status_code == 200, route
        assert call(url, "import", held, NO_AUTH).status_code == 401
    finally:
        http_server.shutdown()


@pytest.mark.parametrize("name", ["imp\x00orter", "x" * 5000, "ünïcode", " importer", ""])
def test_impossible_user_names_are_401_not_a_fault(live_server, name):
    """User names no account can have (NUL, too long, odd characters) are simply refused."""
    r = requests.get(live_server.url + "/cameras", auth=(name.encode(), b"importer-pw"), timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["state"] == "failed"


def test_verified_login_cache_never_accepts_a_different_password(db):
    """A remembered login is keyed by the password too: a wrong one is still refused, and a
    cached right one is accepted without another hash (measured as far below one hash's time)."""
    import base64
    import time

    from meteorpi_server import create_app

    db.create_or_update_user("cached", "right", ["user"])
    client = create_app(db=db).test_client()

    def get(password):
        token = base64.b64encode(f"cached:{password}".encode()).decode()
        started = time.perf_counter()
        status = client.get("/cameras", headers={"Authorization": f"Basic {token}"}).status_code
        return status, time.perf_counter() - started

    first_status, first_time = get("right")
    assert first_status == 200
    assert get("wrong")[0] == 401
    again_status, again_time = get("right")
    assert again_status == 200 and again_time < first_time


def _count_hashes(monkeypatch) -> list[int]:
    """Counts the password hashes the server computes (each costs ~0.1 s of CPU)."""
    from meteorpi_db import users

    counted, real = [0], users.check_password_hash

    def counting(stored, password):
        counted[0] += 1
        return real(stored, password)
    monkeypatch.setattr(users, "check_password_hash", counting)
    return counted


def _at_once(client, password: str, count: int) -> list[int]:
    """``count`` requests with the same credentials, started together; their status codes."""
    import base64
    import threading

    token = base64.b64encode(f"together:{password}".encode()).decode()
    start, statuses = threading.Barrier(count), []

    def one():
        start.wait()
        statuses.append(client.get("/cameras", headers={"Authorization": f"Basic {token}"}).status_code)
    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return statuses


def test_requests_that_arrive_together_with_one_login_hash_its_password_once(db, monkeypatch):
    """An exporter opens several uploads at once on a server that has not seen it yet: the
    first checks the password, the others wait for it and use what it found, instead of each
    spending a hash's CPU on the same password at the start of the night."""
    db.create_or_update_user("together", "right", ["user"])
    client = create_app(db=db).test_client()
    hashes = _count_hashes(monkeypatch)
    assert _at_once(client, "right", 4) == [200] * 4
    assert hashes[0] == 1


def test_a_wrong_password_sent_by_requests_together_is_hashed_for_each(db, monkeypatch):
    """Waiting for another request's check never lets a wrong password off its own hash (or
    in): nothing is remembered of a wrong one, so each request still pays for and fails it."""
    db.create_or_update_user("together", "right", ["user"])
    client = create_app(db=db).test_client()
    hashes = _count_hashes(monkeypatch)
    assert _at_once(client, "wrong", 3) == [401] * 3
    assert hashes[0] == 3


def test_a_password_with_a_nul_is_refused_even_when_the_rest_is_right(server, api, records):
    """scrypt keys HMAC with the password, zero-padded to its block: "pw" and "pw\0" hash
    alike, so the right password with NULs appended used to be accepted."""
    user, password = IMPORTER
    assert api.post(records.status(), auth=(user, password))[0] == 200
    for wrong in (password + "\0", password + "\0\0\0"):
        assert api.post(records.status(), auth=(user, wrong))[0] == 401
    with pytest.raises(ValidationError, match="NUL"):
        server.db.create_or_update_user("nul-user", "pw\0", ["import"])
