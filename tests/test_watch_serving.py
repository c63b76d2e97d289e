"""`meteorpi serve` alone gives a working archive with alerts: imports over HTTP reach a
webhook as one signed coincidence notification, from one notifier process beside the workers."""
from __future__ import annotations

import copy
import uuid

import psutil

from meteorpi_model.watch import Watch

from .export_fixtures import wait_for
from .server_fixtures import Api
from .test_server_serving import Served, serve_db  # noqa: F401  (fixture)
from .watch_fixtures import CAMBRIDGE, NIGHT, Receiver, north_of


def _status_body(vectors, camera_id, where):
    body = copy.deepcopy(vectors["status"])
    body["status"].update(status_id=uuid.uuid4().hex, camera_id=camera_id)
    body["status"]["location"].update(lat=where[0], long=where[1])
    return body


def _event_body(status, ms):
    return {"type": "event", "event": {"event_id": uuid.uuid4().hex, "camera_id": status["status"]["camera_id"],
                                       "status_id": status["status"]["status_id"], "event_time": ms,
                                       "event_type": "meteorpi:meteor", "files": [], "meta": []}}


def test_meteorpi_serve_matches_and_delivers_with_one_notifier(serve_db, vectors):
    serve_db.create_or_update_user("alice", "alice-pw", ["user"])
    receiver = Receiver()
    _, secret, _ = serve_db.create_watch(Watch(name="hook", kind="coincidence", webhook=receiver.url), "alice")
    receiver.secrets.append(secret)
    served = Served(serve_db, workers=2, METEORPI_NOTIFY_ALLOW_PRIVATE_TARGETS="true",
                    METEORPI_NOTIFY_POLL_SECONDS="1")
    try:
        helpers = served.helpers()
        api = Api(served.url)
        night_ms = int(NIGHT.timestamp() * 1000)
        for camera, where, offset in (("cam-a", CAMBRIDGE, 0), ("cam-b", north_of(120), 1500)):
            status = _status_body(vectors, camera, where)
            assert api.post(status)[1]["state"] in ("complete", "continue")
            code, answer = api.post(_event_body(status, night_ms + offset))
            assert code == 200 and answer["state"] == "complete", answer
        wait_for(lambda: receiver.of_type("coincidence"), 30, "the coincidence webhook")
    finally:
        code = served.stop()
        receiver.close()
    assert code == 0, "".join(served.lines)
    assert receiver.bad == [] and len(receiver.received) == 1
    assert helpers and not any(h.is_running() and h.status() != psutil.STATUS_ZOMBIE for h in helpers)
