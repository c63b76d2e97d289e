"""Helpers for the watch tests: cameras at chosen places, events at chosen times, the matcher
run until the feed is drained, and a webhook receiver on a real socket checking signatures."""
from __future__ import annotations

import copy
import email
import email.policy
import socket
import datetime as _dt
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

from meteorpi_db.matcher import MatchSettings
from meteorpi_model import CameraStatus, Event, Meta

NIGHT = _dt.datetime(2026, 8, 12, 23, 0, tzinfo=_dt.timezone.utc)
CAMBRIDGE = (52.2053, 0.1218)
KM_PER_DEGREE_LAT = 111.195


def north_of(km: float, origin=CAMBRIDGE) -> tuple[float, float]:
    """A point ``km`` due north of ``origin`` (great-circle distance along a meridian)."""
    return origin[0] + km / KM_PER_DEGREE_LAT, origin[1]


def make_camera(db, vectors, camera_id: str, where: tuple[float, float]) -> CameraStatus:
    body = copy.deepcopy(vectors["status"]["status"])
    body["status_id"], body["camera_id"] = uuid.uuid4().hex, camera_id
    body["location"]["lat"], body["location"]["long"] = where
    status = CameraStatus.from_dict(body)
    db.import_camera_status(status)
    return status


def make_event(status: CameraStatus, seconds: float, event_type: str = "meteorpi:meteor",
               meta: list[Meta] | None = None) -> Event:
    return Event(camera_id=status.camera_id, status_id=status.status_id,
                 event_time=NIGHT + _dt.timedelta(seconds=seconds), event_type=event_type,
                 files=[], meta=list(meta or []))


def add_event(db, status: CameraStatus, seconds: float, **kw) -> Event:
    event = make_event(status, seconds, **kw)
    assert db.import_event(event, "importer")
    return event


def drain(db, settings: MatchSettings | None = None) -> int:
    """Run matcher rounds until the feed holds nothing new; notifications written."""
    settings = settings or MatchSettings()
    total = 0
    for _ in range(10_000):
        result = db.match_round(settings)
        total += result.notifications
        if not result.more and not result.busy:
            return total
    raise AssertionError("the matcher never caught up")


class Receiver:
    """An HTTP server on 127.0.0.1 that verifies every Standard Webhooks signature it gets.

    ``fail_first`` answers 500 to that many requests first; ``status`` answers every request
    with it (e.g. 410). ``received`` holds verified payloads; ``bad`` what failed verification.
    """

    def __init__(self, fail_first: int = 0, status: int = 200):
        self.secrets: list[str] = []
        self.received: list[dict] = []
        self.ids: list[str] = []
        self.bad: list[str] = []
        self.requests = 0
        self.fail_first, self.status = fail_first, status
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                    if n <= receiver.fail_first or receiver.status != 200:
                        code = 500 if n <= receiver.fail_first else receiver.status
                    else:
                        code = receiver.verify(body, dict(self.headers))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify(self, body: bytes, headers: dict) -> int:
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
            except Exception:  # noqa: BLE001 - try the next endpoint's secret
                continue
            self.received.append(payload)
            self.ids.append(headers.get("webhook-id") or headers.get("Webhook-Id"))
            return 200
        self.bad.append(body.decode("utf-8", "replace")[:200])
        return 401

    def of_type(self, kind: str) -> list[dict]:
        with self.lock:
            return [p for p in self.received if p["type"] == f"meteorpi.{kind}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notify_config(**overrides):
    """The notifier's settings as the tests want them: private targets allowed, quick polls
    and retries (the schedule's shape is kept, only scaled)."""
    from meteorpi_db.config import NotifyConfig
    config = NotifyConfig(allow_private_targets=True, poll_seconds=0.5, retry_scale=0.01,
                          connect_timeout_seconds=2.0, read_timeout_seconds=5.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class NotifierThread:
    """A Notifier running in a thread of the test process, stopped by ``close``."""

    def __init__(self, db, config):
        from meteorpi_server.notify import Notifier
        self.notifier = Notifier(db, config)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.notifier.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(30)


class Mailbox:
    """What a real SMTP server (aiosmtpd, on loopback) received: (recipients, text) each.

    ``refuse`` maps an address (lower case) to the reply its ``RCPT TO`` gets instead of 250,
    e.g. ``"550 5.1.1 no such user"`` (a lasting refusal) or ``"451 4.3.0 try later"`` (a
    passing one); ``rcpt`` lists every ``RCPT TO`` address asked for, refused or not, and
    ``headers`` each accepted message's ``To`` header as sent."""

    def __init__(self):
        self.messages: list[tuple[list[str], str]] = []
        self.refuse: dict[str, str] = {}
        self.rcpt: list[str] = []
        self.headers: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt.append(address)
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.headers.append(str(message["To"]))
        self.messages.append((list(envelope.rcpt_tos), message.get_content()))
        return "250 OK"


@pytest.fixture
def smtp():
    """(Mailbox, port) of an SMTP server on 127.0.0.1 for one test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()
