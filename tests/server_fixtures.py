"""Fixtures for the import service: a real server on a socket, users, fresh records, an exporter.

``live_server`` starts ``create_app`` once per session under werkzeug's threaded server on
127.0.0.1 with its own database; tests talk to it over HTTP with ``requests``. Most tests build
records with fresh ids and a camera of their own (``records``), so they need no clean database;
``clean_server`` empties it (for the fixed ids of the protocol vectors).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import pytest
import requests
from werkzeug.serving import make_server

from meteorpi_db import MeteorDatabase
from meteorpi_server import MeteorApp, create_app

# name -> (password, roles). "viewer" is a real user holding neither read nor import role.
# "other-importer" is a second import account (another node's), for what must stay per account.
USERS = {"importer": ("importer-pw", ["import"]), "reader": ("reader-pw", ["user"]),
         "viewer": ("viewer-pw", ["camera_admin"]), "other-importer": ("other-importer-pw", ["import"])}
IMPORTER = ("importer", USERS["importer"][0])
OTHER_IMPORTER = ("other-importer", USERS["other-importer"][0])
READER = ("reader", USERS["reader"][0])
VIEWER = ("viewer", USERS["viewer"][0])
TIMEOUT = 30
# Small limits so the tests can cross them cheaply.
MAX_BODY_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_FAILED_UPLOADS = 3


def serve_in_thread(app) -> tuple[str, Any]:
    """Serve ``app`` on a free port of 127.0.0.1 in a daemon thread; (base URL, server)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def close_socket(sock: socket.socket) -> None:
    """Shut a relayed socket down both ways and close it, whatever state it is in."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def add_users(db: MeteorDatabase) -> None:
    for name, (password, roles) in USERS.items():
        db.create_or_update_user(name, password, roles)


class Api:
    """The import and read API over HTTP, answering (status code, parsed JSON or None)."""

    def __init__(self, url: str, import_path: str = "/import"):
        self.url = url
        self.import_path = import_path
        self.http = requests.Session()

    def post(self, body: Any, auth=IMPORTER, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else None
        kwargs = {"data": data, "headers": headers} if raw is not None else {"json": body}
        r = self.http.post(self.url + self.import_path, auth=auth, timeout=TIMEOUT, **kwargs)
        return r.status_code, _json(r)

    def upload(self, file_id: str, md5: str, data: bytes, auth=IMPORTER, part: str = "file"):
        r = self.http.post(f"{self.url}{self.import_path}/data/{file_id}/{md5}", auth=auth,
                           files={part: ("blob", data, "application/octet-stream")}, timeout=TIMEOUT)
        return r.status_code, _json(r)

    def get(self, path: str, auth=READER, params=None, headers=None) -> requests.Response:
        return self.http.get(self.url + path, auth=auth, params=params, headers=headers, timeout=TIMEOUT)

    def batch(self, path: str, body: dict, auth=IMPORTER):
        """``POST {import}/v2/{path}`` (``check`` or ``import``) with a JSON body."""
        r = self.http.post(f"{self.url}{self.import_path}/v2/{path}", json=body, auth=auth, timeout=TIMEOUT)
        return r.status_code, _json(r)

    def batch_upload(self, manifest: list[dict], payload: bytes, auth=IMPORTER):
        """``POST {import}/v2/data``: the manifest line, then ``payload`` (the files' bytes)."""
        body = json.dumps({"files": manifest}).encode() + b"\n" + payload
        r = self.http.post(f"{self.url}{self.import_path}/v2/data", data=body, auth=auth, timeout=TIMEOUT,
                           headers={"Content-Type": "application/vnd.meteorpi.files"})
        return r.status_code, _json(r)


def manifest_of(files: dict[str, bytes]) -> tuple[list[dict], bytes]:
    """(manifest, payload) of a fast-path upload of ``files`` (file id -> bytes), in that order."""
    manifest = [{"file_id": fid, "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
                for fid, data in files.items()]
    return manifest, b"".join(files.values())


def _json(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


@dataclass
class Exchange:
    """What an exporter sent and what it was answered, step by step."""
    steps: list[tuple[str, str]] = field(default_factory=list)  # (what was sent, answer state)
    final: dict | None = None  # the last answer (complete or failed)

    @property
    def answers(self) -> list[str]:
        return [state for _, state in self.steps]


def deliver(api: Api, body: dict, statuses: dict[str, dict], files: dict[str, bytes],
            max_steps: int = 50) -> Exchange:
    """Behave as a version-1 exporter delivering ``body`` until complete or failed.

    ``statuses`` maps status ids to status bodies it can send, ``files`` file ids to bytes.
    """
    kind = body["type"]
    entity_id = body[kind][f"{kind}_id"]
    exchange = Exchange()
    request = body
    for _ in range(max_steps):
        code, answer = api.post(request)
        assert code == 200, (code, answer)
        exchange.steps.append((request["type"], answer["state"]))
        state = answer["state"]
        if state in ("complete", "failed"):
            exchange.final = answer
            return exchange
        if state == "need_status":
            code, reply = api.post(statuses[answer["status_id"]])
            assert code == 200, (code, reply)
            exchange.steps.append(("status", reply["state"]))
            request = {"type": "cached_entity", "cached_entity_id": entity_id}
        elif state == "need_file_data":
            data = files[answer["file_id"]]
            code, reply = api.upload(answer["file_id"], hashlib.md5(data).hexdigest(), data)
            assert code == 200, (code, reply)
            exchange.steps.append((f"data {answer['file_id']}", reply["state"]))
            request = {"type": "cached_entity", "cached_entity_id": entity_id}
        elif state == "continue":
            request = {"type": "cached_entity", "cached_entity_id": entity_id}
        elif state == "continue-nocache":
            request = body
    raise AssertionError(f"no end after {max_steps} steps: {exchange.steps}")


class Records:
    """Wire bodies with fresh ids, built from the protocol vectors, on a camera of their own."""

    def __init__(self, vectors: dict):
        self.vectors = vectors
        self.camera_id = f"cam-{uuid.uuid4().hex[:12]}"

    def status(self, valid_from: int | None = None, valid_to: int | None = None) -> dict:
        body = copy.deepcopy(self.vectors["status"])
        s = body["status"]
        s["status_id"], s["camera_id"] = uuid.uuid4().hex, self.camera_id
        if valid_from is not None:
            s["valid_from"] = valid_from
        if valid_to is not None:
            s["valid_to"] = valid_to
        return body

    def file(self, status: dict, size: int = 2048, time: int | None = None) -> tuple[dict, bytes]:
        body = copy.deepcopy(self.vectors["file"])
        data = os.urandom(size)
        _refit(body["file"], status, data, time)
        return body, data

    def event(self, status: dict, sizes: Iterable[int] = (1024, 3000), time: int | None = None
              ) -> tuple[dict, dict[str, bytes]]:
        body = copy.deepcopy(self.vectors["event"])
        e = body["event"]
        e["event_id"], e["camera_id"], e["status_id"] = uuid.uuid4().hex, self.camera_id, status["status"]["status_id"]
        if time is not None:
            e["event_time"] = time
        template, e["files"], files = e["files"][0], [], {}
        for size in sizes:
            record, data = copy.deepcopy(template), os.urandom(size)
            _refit(record, status, data, time)
            e["files"].append(record)
            files[record["file_id"]] = data
        return body, files


def _refit(record: dict, status: dict, data: bytes, time: int | None) -> None:
    record.update(file_id=uuid.uuid4().hex, camera_id=status["status"]["camera_id"],
                  status_id=status["status"]["status_id"], md5=hashlib.md5(data).hexdigest(),
                  file_size=len(data))
    if time is not None:
        record["file_time"] = time


@dataclass
class LiveServer:
    url: str
    app: Any
    meteor_app: MeteorApp
    db: MeteorDatabase

    def reset(self) -> None:
        """Empty the database and the entity caches; the test users stay."""
        self.db.clear_database()
        add_users(self.db)
        for cache in self.meteor_app.entity_caches.values():
            cache.clear()


@pytest.fixture(scope="session")
def live_server(make_database):
    """The import service (create_app) on a real socket, with its own database."""
    db = make_database("meteorpi_server")
    db.config.server.max_body_bytes = MAX_BODY_BYTES
    db.config.server.max_upload_bytes = MAX_UPLOAD_BYTES
    db.config.server.max_failed_uploads = MAX_FAILED_UPLOADS
    add_users(db)
    app = create_app(db=db)
    url, server = serve_in_thread(app)
    yield LiveServer(url, app, app.extensions["meteorpi"], db)
    server.shutdown()
    if app.extensions["meteorpi"]._feed_hub is not None:
        app.extensions["meteorpi"]._feed_hub.stop()


@pytest.fixture
def server(live_server) -> LiveServer:
    """The shared server, as it is (tests using fresh ids from ``records`` need no reset)."""
    return live_server


@pytest.fixture
def clean_server(live_server) -> LiveServer:
    """The shared server with an empty database and entity cache."""
    live_server.reset()
    return live_server


@pytest.fixture
def api(live_server) -> Api:
    return Api(live_server.url)


@pytest.fixture
def records(vectors) -> Records:
    return Records(vectors)
