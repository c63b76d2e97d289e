"""The watches API and GET /coincidences over HTTP, and e-mail watches through a real SMTP
server on loopback (aiosmtpd): owners see only their own, bad input is a 400 naming the field."""
from __future__ import annotations

import re

import pytest
import requests

from .export_fixtures import wait_for
from .server_fixtures import IMPORTER, READER, TIMEOUT, VIEWER
from .watch_fixtures import (CAMBRIDGE, NotifierThread, Receiver, add_event, drain, make_camera, north_of,
                             notify_config)


@pytest.fixture
def srv(clean_server):
    config = clean_server.db.config
    saved = (config.notify.allow_private_targets, config.server.public_read, config.notify.smtp_port)
    config.notify.allow_private_targets = True
    yield clean_server
    config.notify.allow_private_targets, config.server.public_read, config.notify.smtp_port = saved


def _post(srv, body, auth=READER):
    return requests.post(srv.url + "/watches", json=body, auth=auth, timeout=TIMEOUT)


def _get(srv, path, auth=READER):
    return requests.get(srv.url + path, auth=auth, timeout=TIMEOUT)


def test_a_user_sees_and_deletes_only_their_own_watches(srv):
    r = _post(srv, {"name": "mine", "kind": "coincidence", "webhook": "http://127.0.0.1:9/hook"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["watch"]["owner"] == "reader"
    watch_id = created["watch"]["watch_id"]
    assert [w["name"] for w in _get(srv, "/watches").json()["watches"]] == ["mine"]
    assert "secret" not in _get(srv, f"/watches/{watch_id}").text  # shown once, at creation
    padded = _get(srv, "/watches?callback=steal")  # private: never JSONP another page could read
    assert padded.headers["Content-Type"].startswith("application/json") and padded.text.startswith("{")
    assert _get(srv, "/watches", auth=IMPORTER).json()["watches"] == []
    assert _get(srv, f"/watches/{watch_id}", auth=IMPORTER).status_code == 404
    assert [w["name"] for w in _get(srv, "/watches", auth=VIEWER).json()["watches"]] == ["mine"]  # camera_admin
    assert requests.delete(f"{srv.url}/watches/{watch_id}", auth=IMPORTER, timeout=TIMEOUT).status_code == 404
    assert requests.delete(f"{srv.url}/watches/{watch_id}", auth=READER, timeout=TIMEOUT).status_code == 200
    assert _get(srv, "/watches").json()["watches"] == []
    assert requests.get(srv.url + "/watches", timeout=TIMEOUT).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"name": "x"}, "watch.webhook"),
    ({"name": "x", "webhook": "http://127.0.0.1:9/", "email": "a@example.org"}, "watch.webhook"),
    ({"name": "x", "webhook": "ftp://example.org/"}, "watch.webhook"),
    ({"name": "x", "email": "not an address"}, "watch.email"),
    ({"name": "x", "email": "a@example.org", "meta": [{"key": "magnitude", "op": "<<", "value": 1}]},
     "watch.meta[0].op"),
    ({"name": "x", "email": "a@example.org", "meta": [{"key": "magnitude", "op": "<=", "value": "bright"}]},
     "watch.meta[0].value"),
    ({"name": "x", "email": "a@example.org", "near": {"lat": 95, "long": 0, "km": 10}}, "watch.near.lat"),
    ({"name": "x", "email": "a@example.org", "kind": "absence"}, "watch.silent_hours"),
    ({"name": "x", "email": "a@example.org", "owner": "someone-else"}, "watch.owner"),
    ({"name": "x", "email": "a@example.org", "colour": "red"}, "watch.colour"),
    ({"name": "bad name!", "email": "a@example.org"}, "watch.name"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_watches_are_refused_naming_the_field(srv, body, field):
    r = _post(srv, body)
    assert r.status_code == 400, r.text
    assert r.json()["state"] == "failed" and r.json()["message"].startswith(field), r.json()
    assert _get(srv, "/watches").json()["watches"] == []


def test_private_targets_are_refused_unless_allowed_and_names_are_unique(srv):
    srv.db.config.notify.allow_private_targets = False
    r = _post(srv, {"name": "inside", "webhook": "http://10.1.2.3/hook"})
    assert r.status_code == 400 and r.json()["message"].startswith("watch.webhook"), r.text
    assert "non-public" in r.json()["message"]
    srv.db.config.notify.allow_private_targets = True
    assert _post(srv, {"name": "twice", "email": "a@example.org"}).status_code == 201
    r = _post(srv, {"name": "twice", "email": "b@example.org"}, auth=IMPORTER)
    assert r.status_code == 409 and "twice" in r.json()["message"]


def test_a_test_notification_and_coincidences_over_http(srv, vectors):
    receiver = Receiver()
    notifier = NotifierThread(srv.db, notify_config())
    try:
        r = _post(srv, {"name": "hook", "kind": "coincidence", "webhook": receiver.url})
        receiver.secrets.append(r.json()["secret"])
        watch_id = r.json()["watch"]["watch_id"]
        r = requests.post(f"{srv.url}/watches/{watch_id}/test", auth=READER, timeout=TIMEOUT)
        assert r.status_code == 202
        wait_for(lambda: receiver.of_type("test"), 20, "the test notification")
        a = make_camera(srv.db, vectors, "cam-a", CAMBRIDGE)
        b = make_camera(srv.db, vectors, "cam-b", north_of(120))
        ea, eb = add_event(srv.db, a, 0.0), add_event(srv.db, b, 1.5)
        wait_for(lambda: receiver.of_type("coincidence"), 20, "the coincidence notification")
    finally:
        notifier.close()
        receiver.close()
    assert receiver.bad == []
    found = _get(srv, "/coincidences").json()
    assert found["count"] == 1
    group = found["coincidences"][0]
    assert group["cameras"] == ["cam-a", "cam-b"] and group["camera_count"] == 2
    assert {m["event_id"] for m in group["members"]} == {ea.event_id.hex, eb.event_id.hex}
    assert _get(srv, f"/coincidences/{group['group_id']}").json()["coincidence"] == group
    assert _get(srv, "/coincidences?camera=cam-zzz").json()["count"] == 0
    assert _get(srv, "/coincidences?limit=0").status_code == 400
    assert _get(srv, "/coincidences?colour=1").status_code == 400
    feed = _get(srv, "/feed?after=0-0&kind=coincidence")
    assert feed.status_code == 200, feed.text
    items = feed.json()["items"]
    assert [(i["op"], i["id"], i["summary"]["camera_count"]) for i in items] == [("added", group["group_id"], 2)]


def test_an_email_watch_confirms_through_its_link_then_mails_events(srv, vectors, smtp):
    box, port = smtp
    srv.db.config.server.public_read = True
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    r = requests.post(srv.url + "/watches", json={"name": "by-mail", "email": "sky@example.org"}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    watch_id = r.json()["watch"]["watch_id"]
    assert r.json()["watch"]["confirmed"] is False and "secret" not in r.json()
    (to, text), = box.messages
    assert to == ["sky@example.org"]
    link = re.search(r"(/watches/[0-9a-f]{32}/confirm\?secret=\S+)", text).group(1)
    a = make_camera(srv.db, vectors, "cam-a", CAMBRIDGE)
    add_event(srv.db, a, 0.0)
    config = notify_config(smtp_host="127.0.0.1", smtp_port=port)
    notifier = NotifierThread(srv.db, config)
    try:
        drain(srv.db)
        assert len(box.messages) == 1  # unconfirmed: nothing sent
        assert requests.get(f"{srv.url}/watches/{watch_id}/confirm?secret=wrong", timeout=TIMEOUT).status_code == 404
        assert requests.get(srv.url + link, timeout=TIMEOUT).status_code == 200
        add_event(srv.db, a, 100.0)
        wait_for(lambda: len(box.messages) == 2, 20, "the notification e-mail")
    finally:
        notifier.close()
    to, text = box.messages[1]
    assert to == ["sky@example.org"] and "meteorpi.event" in text and "/events/" in text


# Numbers int() takes but a query parameter must not, control characters in the camera id, and
# a single-valued parameter given twice (the first value silently won).
LOOSE_NUMBERS = {"superscript": "²", "arabic_indic": "٣", "fullwidth": "１０", "underscore": "1_0",
                 "spaces": " 3 ", "newline": "3\n", "nul": "3\x00", "repeated": ["3", "3"]}


@pytest.mark.parametrize("value", LOOSE_NUMBERS.values(), ids=LOOSE_NUMBERS.keys())
@pytest.mark.parametrize("name", ["limit", "skip", "after", "before"])
def test_a_loose_number_for_coincidences_is_a_400_naming_the_parameter(srv, name, value):
    r = requests.get(srv.url + "/coincidences", params={name: value}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["message"].startswith(f"{name}:"), r.json()


@pytest.mark.parametrize("value", ["a\n", "\x00", " cam-a ", "cam²", ["cam-a", "cam-b"]],
                         ids=["newline", "nul", "spaces", "superscript", "repeated"])
def test_a_bad_camera_for_coincidences_is_a_400_naming_it(srv, value):
    r = requests.get(srv.url + "/coincidences", params={"camera": value}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("camera:"), r.json()


def test_coincidences_out_of_range_say_the_range(srv):
    r = requests.get(srv.url + "/coincidences", params={"limit": "1001"}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["message"].startswith("limit:")
    assert "1000" in r.json()["message"] and "1001" in r.json()["message"]
    ok = requests.get(srv.url + "/coincidences", params={"limit": "10", "skip": "0", "after": "0",
                                                         "before": "4102444800000", "camera": "cam-a"},
                      auth=READER, timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.json() == {"count": 0, "coincidences": []}


@pytest.mark.parametrize("path", ["/watches", "/watches/" + "0" * 32, "/watches/not-an-id"])
def test_watch_answers_are_never_padded_even_their_errors(srv, path):
    """Watches are private: no answer of theirs, an error included, is JSONP, even with
    public reads and a callback that is safe on the read API."""
    srv.db.config.server.public_read = True
    r = requests.get(srv.url + path, params={"callback": "cb"}, auth=READER, timeout=TIMEOUT)
    assert r.headers["Content-Type"].startswith("application/json") and r.text.startswith("{"), r.text
