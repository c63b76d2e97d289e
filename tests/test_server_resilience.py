"""PostgreSQL going away: 503 JSON with Retry-After, and recovery without a restart.

The database is reached through a TCP relay this test can cut and restore: a real network
fault between the server and a real PostgreSQL, no mock of either.
"""
from __future__ import annotations

import socket
import threading
import urllib.parse

import pytest
import requests

from meteorpi_db import Config, MeteorDatabase
from meteorpi_server import create_app

from .conftest import database_url
from .server_fixtures import IMPORTER, READER, TIMEOUT, USERS, close_socket, serve_in_thread


class Relay:
    """Forwards 127.0.0.1:<port> to PostgreSQL; ``cut()`` drops every connection and refuses
    new ones, ``restore()`` listens again on the same port."""

    def __init__(self, target: str | tuple[str, int]):
        self.target = target
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            close_socket(conn)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            if isinstance(self.target, str):
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            else:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.connect(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        close_socket(src)
        close_socket(dst)



@pytest.fixture
def relayed(pg_server):
    """(relay, URL of database meteorpi_relay through the relay, data dir); users created."""
    admin_url, data_dir = pg_server
    direct = database_url(admin_url, "meteorpi_relay")
    config = Config(data_dir=str(data_dir / "relay"))
    setup = MeteorDatabase(url=direct, file_store_path=data_dir / "relay" / "files", config=config)
    setup.clear_database()
    for name, (password, roles) in USERS.items():
        setup.create_or_update_user(name, password, roles)
    setup.close()
    parts = urllib.parse.urlsplit(direct)
    query = urllib.parse.parse_qs(parts.query)
    target = (f"{query['host'][0]}/.s.PGSQL.{parts.port or 5432}" if "host" in query
              else (parts.hostname, parts.port or 5432))
    relay = Relay(target)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    url = urllib.parse.urlunsplit(("postgresql", f"{user}127.0.0.1:{relay.port}", parts.path, "", ""))
    yield relay, url, data_dir / "relay"
    if relay._listener is not None:
        relay.cut()


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["state"] == "failed" and "retry" in response.json()["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_database_lost_and_back_answers_503_then_recovers(relayed, vectors):
    """A running server whose database goes away answers 503 with Retry-After (also for an
    importer whose login is remembered, once the import itself needs the database); once the
    database is reachable again the very next request succeeds, without a restart."""
    relay, url, data_dir = relayed
    config = Config(data_dir=str(data_dir))
    config.database.url = url
    db = MeteorDatabase(config=config)
    base, http_server = serve_in_thread(create_app(db=db))
    try:
        assert requests.get(base + "/cameras", auth=READER, timeout=TIMEOUT).status_code == 200
        assert requests.get(base + "/cameras", auth=IMPORTER, timeout=TIMEOUT).status_code == 200
        relay.cut()
        assert_unavailable(requests.get(base + "/cameras", auth=READER, timeout=TIMEOUT))
        assert_unavailable(requests.post(base + "/import", json=vectors["status"], auth=IMPORTER, timeout=TIMEOUT))
        relay.restore()
        assert requests.get(base + "/cameras", auth=READER, timeout=TIMEOUT).status_code == 200
    finally:
        http_server.shutdown()
        db.close()


def test_server_started_while_the_database_is_down_comes_up_with_it(relayed):
    """create_app opens its database at first use: down at start-up means 503s, not a dead
    server; when the database appears the server serves."""
    relay, url, data_dir = relayed
    relay.cut()
    config = Config(data_dir=str(data_dir))
    config.database.url = url
    app = create_app(config=config)
    base, http_server = serve_in_thread(app)
    try:
        assert_unavailable(requests.get(base + "/cameras", auth=READER, timeout=TIMEOUT))
        relay.restore()
        assert requests.get(base + "/cameras", auth=READER, timeout=TIMEOUT).status_code == 200
    finally:
        http_server.shutdown()
        app.extensions["meteorpi"].db.close()
