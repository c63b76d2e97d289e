"""Delivery of notifications: signed webhooks to a real receiver on a socket, retries, 410,
several deliverers, and rate limits with a digest."""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time

import pytest

from meteorpi_model.watch import Watch

from .export_fixtures import wait_for
from .watch_fixtures import (CAMBRIDGE, NIGHT, NotifierThread, Receiver, add_event, make_camera,
                             north_of, notify_config)


@pytest.fixture
def alice(db):
    db.create_or_update_user("alice", "alice-pw", ["user"])
    return "alice"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _hook(db, owner, receiver, name="hook", kind="coincidence", **kw):
    watch, secret, _ = db.create_watch(Watch(name=name, kind=kind, webhook=receiver.url, **kw), owner)
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    return watch


def _states(db):
    return sorted((e.kind, e.state) for e in db.delivery_log(limit=100_000))


def test_a_coincidence_reaches_a_verifying_webhook_once_and_again_when_a_camera_joins(db, vectors, alice, receiver):
    db.create_or_update_user("bob", "bob-pw", ["user"])
    _hook(db, alice, receiver)
    _hook(db, alice, receiver, name="alice-again")  # alice hears once however many watches match
    _hook(db, "bob", receiver, name="bobs")
    notifier = NotifierThread(db, notify_config())
    try:
        a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
        b = make_camera(db, vectors, "cam-b", north_of(120))
        far = make_camera(db, vectors, "cam-far", north_of(620))
        add_event(db, a, 0.0)
        add_event(db, b, 1.5)
        wait_for(lambda: len(receiver.of_type("coincidence")) >= 2, 20, "a notification each for alice and bob")
        add_event(db, make_camera(db, vectors, "cam-c", north_of(60)), 0.7)
        wait_for(lambda: len(receiver.of_type("coincidence")) >= 4, 20, "one more each when cam-c joins")
        add_event(db, far, 1.0)  # 500 km from the nearest member: not the same meteor
        add_event(db, a, 100.0)
        add_event(db, b, 110.0)  # 10 s later: not the same meteor
        time.sleep(1.5)
    finally:
        notifier.close()
    assert receiver.bad == []
    counts = sorted(p["data"]["coincidence"]["camera_count"] for p in receiver.of_type("coincidence"))
    assert counts == [2, 2, 3, 3]
    assert len(set(receiver.ids)) == 4
    payload = receiver.of_type("coincidence")[0]["data"]["coincidence"]
    assert payload["url"].endswith(f"/coincidences/{payload['id']}")
    assert {m["camera_id"] for m in payload["members"]} == {"cam-a", "cam-b"}


def test_a_410_disables_the_endpoint(db, vectors, alice):
    gone = Receiver(status=410)
    try:
        watch = _hook(db, alice, gone, kind="event")
        notifier = NotifierThread(db, notify_config())
        try:
            a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
            add_event(db, a, 0.0)
            wait_for(lambda: not db.get_watch(watch.watch_id).enabled, 20, "the watch to be disabled")
            requests_then = gone.requests
            add_event(db, a, 10.0)
            time.sleep(1.0)
        finally:
            notifier.close()
        assert gone.requests == requests_then == 1
        assert "410" in db.get_watch(watch.watch_id).disabled_reason
    finally:
        gone.close()


def _notify_process(db, extra_env: dict) -> subprocess.Popen:
    env = {**os.environ, "METEORPI_DATABASE_URL": db.url, "METEORPI_DATA_DIR": str(db.config.data_path),
           "METEORPI_NOTIFY_ALLOW_PRIVATE_TARGETS": "true", "METEORPI_NOTIFY_RETRY_SCALE": "0.01",
           "METEORPI_NOTIFY_POLL_SECONDS": "0.5", "METEORPI_LOGGING_LEVEL": "WARNING", **extra_env}
    return subprocess.Popen([sys.executable, "-m", "meteorpi_server", "notify"], env=env)


def test_two_delivery_processes_and_a_failing_receiver_deliver_each_notification_exactly_once(db, vectors, alice):
    flaky = Receiver(fail_first=6)
    processes = []
    try:
        _hook(db, alice, flaky, kind="event")
        a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
        for i in range(20):
            add_event(db, a, float(i * 10))
        processes = [_notify_process(db, {}) for _ in range(2)]
        wait_for(lambda: len(flaky.received) >= 20, 60, "20 notifications delivered")
        time.sleep(1.5)  # anything sent twice would arrive now
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            assert p.wait(30) == 0
        flaky.close()
    assert flaky.bad == []
    assert len(flaky.ids) == 20 and len(set(flaky.ids)) == 20
    log = db.delivery_log()
    assert all(e.state == "delivered" for e in log)
    assert sum(e.attempts for e in log) == 26  # 6 failed attempts, then each once
    failed_one = next(e for e in log if e.attempts > 1)
    assert [a[1] for a in db.delivery_attempts(failed_one.delivery_id)][-1] == 200


INSERT_STORM = """
INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type)
SELECT gen_random_uuid(), %(camera)s, %(status)s, %(night)s + i * interval '1 minute', 0, 'meteorpi:meteor'
FROM generate_series(1, %(n)s) AS i
"""


def test_a_storm_gives_at_most_the_rate_then_one_digest(db, vectors, alice, receiver):
    _hook(db, alice, receiver, kind="event", max_per_hour=5)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    with db.transaction() as cur:  # 10,000 events in one statement (the feed triggers fire per row)
        cur.execute(INSERT_STORM, {"camera": a.camera_id, "status": a.status_id, "night": NIGHT, "n": 10_000})
    from meteorpi_server.notify import Notifier
    notifier = Notifier(db, notify_config())
    notifier.step()
    assert len(receiver.of_type("event")) == 5 and receiver.of_type("digest") == []
    assert _states(db).count(("notification", "held")) == 9995
    with db.transaction() as cur:  # the hour is over: the digest is due
        cur.execute("UPDATE delivery SET due_at = now() WHERE kind = 'digest'")
    notifier.step()
    digests = receiver.of_type("digest")
    assert len(receiver.of_type("event")) == 5 and len(digests) == 1
    assert digests[0]["data"]["count"] == 9995
    assert len(digests[0]["data"]["notifications"]) + digests[0]["data"]["more"] == 9995
    assert receiver.bad == []


def test_a_digest_watch_sends_nothing_until_its_nightly_digest(db, vectors, alice, receiver):
    _hook(db, alice, receiver, kind="event", digest=True)
    a = make_camera(db, vectors, "cam-a", CAMBRIDGE)
    for i in range(3):
        add_event(db, a, float(i))
    from meteorpi_server.notify import Notifier
    notifier = Notifier(db, notify_config())
    notifier.step()
    assert receiver.received == []
    digest = next(e for e in db.delivery_log() if e.kind == "digest")
    assert digest.state == "pending" and digest.due_at.hour == 12 and digest.due_at > _dt.datetime.now(_dt.timezone.utc)
    with db.transaction() as cur:  # noon comes
        cur.execute("UPDATE delivery SET due_at = now() WHERE kind = 'digest'")
    notifier.step()
    assert [p["data"]["count"] for p in receiver.of_type("digest")] == [3] and receiver.of_type("event") == []


def test_a_group_of_many_cameras_stays_under_20_kb_with_ids_and_links(db, vectors, alice, receiver):
    _hook(db, alice, receiver, notify_on_join=False)
    cams = [make_camera(db, vectors, f"cam-{i:03d}", north_of(i)) for i in range(120)]
    for i, cam in enumerate(cams):
        add_event(db, cam, i * 0.02)
    from meteorpi_server.notify import Notifier
    Notifier(db, notify_config()).step()
    (payload,) = receiver.of_type("coincidence")
    group = payload["data"]["coincidence"]
    assert group["camera_count"] == 120 and len(group["members"]) + group["more_members"] == 120
    assert group["url"].endswith(group["id"]) and all(m["url"].endswith(m["event_id"]) for m in group["members"])
    assert len(json.dumps(payload)) < 20_000


def test_mail_goes_to_its_address_alone_and_a_stored_address_the_rule_refuses_is_never_mailed(db, alice, smtp,
                                                                                               caplog):
    """Review finding (e-mail check): notifications were sent with ``To`` pasted in as text and
    the envelope read back from it, so a stored ``x1:target@example.org`` was mailed to
    RCPT TO:<target@example.org>. Now the envelope is the address, given explicitly, and the
    header an ``Address``; an address the rule refuses (stored under the older rule, or by
    hand) is not mailed at all: the delivery fails for good, saying why, and the log says so."""
    box, port = smtp
    plain, _, _ = db.create_watch(Watch(name="plain", email="Sky.Watcher@example.org"), alice,
                                  confirmed_by_operator=True)
    legacy, _, _ = db.create_watch(Watch(name="legacy", email="legacy@example.org"), alice,
                                   confirmed_by_operator=True)
    with db.transaction() as cur:  # as the older rule let it be stored (migration 008 would stop it)
        cur.execute("UPDATE watch SET email = 'x1:target@example.org' WHERE watch_id = %(id)s",
                    {"id": legacy.watch_id})
    assert db.get_watch(legacy.watch_id).email == "x1:target@example.org"  # still read
    for watch in (plain, legacy):
        db.queue_test(db.get_watch(watch.watch_id))
    notifier = NotifierThread(db, notify_config(smtp_host="127.0.0.1", smtp_port=port))
    try:
        wait_for(lambda: all(e.state != "pending" for e in db.delivery_log()), 20, "both deliveries to finish")
    finally:
        notifier.close()
    assert box.rcpt == ["Sky.Watcher@example.org"] and box.headers == ["Sky.Watcher@example.org"]
    [refused] = db.delivery_log(legacy.watch_id)
    assert refused.state == "failed" and refused.last_error.startswith(
        "not mailed: 'x1:target@example.org' is not an address this archive mails"), refused.last_error
    assert [e.state for e in db.delivery_log(plain.watch_id)] == ["delivered"]
    assert any("watch legacy: delivery" in r.getMessage() and "not mailed" in r.getMessage()
               for r in caplog.records if r.name == "meteorpi.notify"), caplog.text
