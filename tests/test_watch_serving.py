"""`meteorpi serve` alone gives a working archive with alerts: imports over HTTP reach a
webhook as one signed coincidence notification, from one notifier process beside the workers."""
from __future__ import annotations

import copy
import uuid

import psutil
import requests

from meteorpi_model.watch import Watch

from .export_fixtures import wait_for
from .server_fixtures import READER, TIMEOUT, Api
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


# Host names getaddrinfo cannot take (its IDNA step fails): an empty label, a label over 63
# characters, a name over 253; each once printed two tracebacks from gevent's threadpool.
UNRESOLVABLE_FORMS = ["a..b", "x" * 64 + ".example.org", ".example.org", ("y" * 60 + ".") * 5 + "org"]


def test_a_webhook_host_of_a_form_no_resolver_takes_is_a_400_and_leaves_no_traceback(serve_db):
    """Review finding: ``POST /watches`` with ``http://a..b/`` answered a right 400, but the
    name went to getaddrinfo, whose IDNA step failed inside gevent's threadpool, which printed
    two ``UnicodeError: encoding with 'idna' codec failed (label empty or too long)``
    tracebacks to the server's log per request: any signed-in user could fill the log. The host
    name's form is now checked before anything resolves it, so the log stays clean."""
    served = Served(serve_db, workers=1)
    try:
        for host in UNRESOLVABLE_FORMS:
            r = requests.post(served.url + "/watches", json={"name": "idna1", "webhook": f"http://{host}/"},
                              auth=READER, timeout=TIMEOUT)
            assert r.status_code == 400, r.text
            assert r.json()["message"].startswith(f"watch.webhook: {host!r} is not a host name"), r.text
    finally:
        code = served.stop()
    wait_for(lambda: any("Shutting down" in line for line in served.lines), 10, "the server's last words")
    output = "".join(served.lines)
    assert code == 0 and "Traceback" not in output and "UnicodeError" not in output, output
