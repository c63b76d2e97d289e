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


NOTIFY_KEYS = ("allow_private_targets", "smtp_host", "smtp_port", "confirm_hours", "max_pending_anonymous",
               "max_pending_per_user")


@pytest.fixture
def srv(clean_server):
    config = clean_server.db.config
    saved = ({k: getattr(config.notify, k) for k in NOTIFY_KEYS}, config.server.public_read)
    config.notify.allow_private_targets = True
    yield clean_server
    for key, value in saved[0].items():
        setattr(config.notify, key, value)
    config.server.public_read = saved[1]


def _mailing(srv, smtp, public_read: bool = True):
    """Confirmation mail goes to the test's SMTP sink; the mailbox."""
    box, port = smtp
    srv.db.config.server.public_read = public_read
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    return box


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
    ({"name": "x", "webhook": "http://a..b/"}, "watch.webhook: 'a..b' is not a host name"),  # private allowed too
    ({"name": "x", "webhook": f"http://{'x' * 64}.example.org/"}, "watch.webhook"),
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


def test_private_targets_are_refused_unless_allowed_and_names_are_unique_per_owner(srv):
    srv.db.config.notify.allow_private_targets = False
    r = _post(srv, {"name": "inside", "webhook": "http://10.1.2.3/hook"})
    assert r.status_code == 400 and r.json()["message"].startswith("watch.webhook"), r.text
    assert "non-public" in r.json()["message"]
    srv.db.config.notify.allow_private_targets = True
    assert _post(srv, {"name": "twice", "webhook": "http://127.0.0.1:9/a"}).status_code == 201
    r = _post(srv, {"name": "twice", "webhook": "http://127.0.0.1:9/b"})
    assert r.status_code == 409 and r.json()["message"] == "watch.name: you have a watch named 'twice' already"
    assert _post(srv, {"name": "twice", "webhook": "http://127.0.0.1:9/c"}, auth=VIEWER).status_code == 201


def test_another_owners_watch_name_is_neither_revealed_nor_taken(srv, smtp):
    """Finding 2: names were one global namespace, so an anonymous POST learnt (409) that a
    private watch 'w40' existed, and anyone could take a name first."""
    box, port = smtp
    srv.db.config.server.public_read = True
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    assert _post(srv, {"name": "w40", "webhook": "http://127.0.0.1:9/hook"}).status_code == 201  # reader's
    anonymous = _post(srv, {"name": "w40", "kind": "event", "email": "someone@example.org"}, auth=None)
    assert anonymous.status_code == 201, anonymous.text  # its own namespace: the address's
    assert anonymous.json()["watch"]["owner"] == "someone@example.org"
    other = _post(srv, {"name": "w40", "webhook": "http://127.0.0.1:9/hook"}, auth=VIEWER)
    assert other.status_code == 201, other.text
    again = _post(srv, {"name": "w40", "webhook": "http://127.0.0.1:9/other"})
    assert again.status_code == 409 and "you have" in again.json()["message"]
    assert "someone@example.org" not in again.text and "viewer" not in again.text
    assert sorted(w["owner"] for w in _get(srv, "/watches", auth=VIEWER).json()["watches"]) == [
        "reader", "someone@example.org", "viewer"]
    assert [w["owner"] for w in _get(srv, "/watches").json()["watches"]] == ["reader"]


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


def _link(text: str) -> str:
    return re.search(r"(/watches/[0-9a-f]{32}/confirm\?secret=\S+)", text).group(1)


def test_a_confirmation_link_checks_its_secret_every_time(srv, smtp):
    """Finding 4: once confirmed, any secret answered 200 (and an unknown id 404), which was a
    wrong success and told an anonymous caller the id existed."""
    box, port = smtp
    srv.db.config.server.public_read = True
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    r = _post(srv, {"name": "clicked", "email": "sky@example.org"}, auth=None)
    assert r.status_code == 201, r.text
    watch_id = r.json()["watch"]["watch_id"]
    link = _link(box.messages[0][1])

    def opened(path):
        return requests.get(srv.url + path, timeout=TIMEOUT)

    refusals = [opened(f"/watches/{watch_id}/confirm?secret=x"), opened(f"/watches/{'0' * 32}/confirm?secret=x"),
                opened("/watches/not-an-id/confirm?secret=x"), opened(f"/watches/{watch_id}/confirm")]
    first = opened(link)
    assert first.status_code == 200 and first.json() == {"confirmed": watch_id}
    refusals += [opened(f"/watches/{watch_id}/confirm?secret=x"),  # confirmed, wrong secret
                 opened(link[:-1] + ("A" if link[-1] != "A" else "B"))]
    assert [r.status_code for r in refusals] == [404] * len(refusals), [(r.url, r.text) for r in refusals]
    for refused in refusals:  # one answer for every wrong link: nothing tells an id exists
        assert refused.json() == {"state": "failed", "message": "no such confirmation link"}, refused.url
    again = opened(link)  # a second click with the right secret stays harmless
    assert again.status_code == 200 and again.json() == {"confirmed": watch_id}
    assert _get(srv, f"/watches/{watch_id}", auth=VIEWER).json()["watch"]["confirmed"] is True
    assert len(box.messages) == 1


def _expire_links(srv) -> None:
    """Move every unopened link's expiry into the past (as if confirm_hours had gone by)."""
    with srv.db.transaction() as cur:
        cur.execute("UPDATE watch SET confirm_expires = now() - interval '1 second' WHERE confirmed_at IS NULL")
        cur.execute("UPDATE confirmation_pending SET expires_at = now() - interval '1 second'")


def test_anonymous_posts_cannot_flood_an_address(srv, smtp):
    """Finding 1: 30 anonymous POSTs for one address answered 30 x 201 and mailed it 30 times."""
    box = _mailing(srv, smtp)
    answers = [_post(srv, {"name": f"spam{i}", "kind": "event", "email": "victim@example.org"}, auth=None)
               for i in range(30)]
    assert [a.status_code for a in answers] == [201] + [429] * 29, [a.text for a in answers[:2]]
    refused = answers[1].json()
    assert refused["state"] == "failed" and refused["message"].startswith("watch.email: a confirmation link mailed to "
                                                                          "victim@example.org is waiting"), refused
    for address, auth in (("VICTIM@example.ORG", None), ("victim@example.org", READER)):  # any case, any asker
        assert _post(srv, {"name": "again", "email": address}, auth=auth).status_code == 429
    assert [to for to, _ in box.messages] == [["victim@example.org"]]
    assert len(_get(srv, "/watches", auth=VIEWER).json()["watches"]) == 1
    hook = _post(srv, {"name": "hook", "webhook": "http://127.0.0.1:9/hook"}, auth=None)
    assert hook.status_code == 400 and hook.json()["message"].startswith("watch.webhook: a webhook watch needs a "
                                                                         "signed-in user"), hook.text


def test_pending_anonymous_confirmations_are_capped_archive_wide(srv, smtp):
    """Finding 1: a flood of different addresses is bounded by notify.max_pending_anonymous."""
    box = _mailing(srv, smtp)
    srv.db.config.notify.max_pending_anonymous = 3
    answers = [_post(srv, {"name": "w", "email": f"victim{i}@example.org"}, auth=None) for i in range(5)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    assert "confirmation links asked for without login are waiting" in answers[3].json()["message"]
    assert len(box.messages) == 3
    assert _post(srv, {"name": "w", "email": "mine@example.org"}).status_code == 201  # a user's are counted apart
    _expire_links(srv)  # expired links no longer count, and their watches are removed
    assert _post(srv, {"name": "w", "email": "victim9@example.org"}, auth=None).status_code == 201
    assert [w["email"] for w in _get(srv, "/watches", auth=VIEWER).json()["watches"]] == ["victim9@example.org"]


def test_an_unopened_link_expires_and_its_watch_is_removed(srv, smtp):
    """Finding 1: each unconfirmed watch used to stay stored forever."""
    box = _mailing(srv, smtp)
    r = _post(srv, {"name": "late", "email": "sky@example.org"}, auth=None)
    watch_id = r.json()["watch"]["watch_id"]
    assert "within 24 hours" in r.json()["confirmation"] and "within 24 hours" in box.messages[0][1]
    link = _link(box.messages[0][1])
    _expire_links(srv)
    assert requests.get(srv.url + link, timeout=TIMEOUT).status_code == 404  # too late
    assert srv.db.purge_unconfirmed() == 1
    assert _get(srv, f"/watches/{watch_id}", auth=VIEWER).status_code == 404
    assert _post(srv, {"name": "late", "email": "sky@example.org"}, auth=None).status_code == 201  # may ask again
    assert len(box.messages) == 2


def test_opening_the_link_frees_the_address_and_deleting_the_watch_does_not(srv, smtp):
    box = _mailing(srv, smtp)
    first = _post(srv, {"name": "one", "email": "sky@example.org"})
    assert requests.get(srv.url + _link(box.messages[0][1]), timeout=TIMEOUT).status_code == 200
    second = _post(srv, {"name": "two", "email": "sky@example.org"})
    assert (first.status_code, second.status_code) == (201, 201), second.text
    deleted = requests.delete(f"{srv.url}/watches/{second.json()['watch']['watch_id']}", auth=READER, timeout=TIMEOUT)
    assert deleted.status_code == 200
    again = _post(srv, {"name": "two", "email": "sky@example.org"})  # delete-and-add must not mail it again
    assert again.status_code == 429, again.text
    assert len(box.messages) == 2


def test_a_users_email_watch_mails_only_its_link_until_it_is_opened(srv, vectors, smtp):
    """Finding 3: a signed-in user's e-mail watch was confirmed at once for any address."""
    box = _mailing(srv, smtp, public_read=False)
    r = _post(srv, {"name": "theirs", "kind": "event", "email": "third-party@example.org", "max_per_hour": 100_000})
    assert r.status_code == 201, r.text
    watch_id = r.json()["watch"]["watch_id"]
    assert r.json()["watch"]["confirmed"] is False and r.json()["watch"]["owner"] == "reader"
    assert r.json()["confirmation"].startswith("a link was sent to third-party@example.org")
    (to, text), = box.messages
    assert to == ["third-party@example.org"] and "confirm" in text
    tested = requests.post(f"{srv.url}/watches/{watch_id}/test", auth=READER, timeout=TIMEOUT)
    assert tested.status_code == 409 and "not confirmed" in tested.json()["message"]
    a = make_camera(srv.db, vectors, "cam-a", CAMBRIDGE)
    notifier = NotifierThread(srv.db, notify_config(smtp_host="127.0.0.1", smtp_port=smtp[1]))
    try:
        add_event(srv.db, a, 0.0)
        drain(srv.db)
        assert srv.db.delivery_log(watch_id) == [] and len(box.messages) == 1  # the link only
        assert requests.get(srv.url + _link(text), timeout=TIMEOUT).status_code == 200
        add_event(srv.db, a, 100.0)
        wait_for(lambda: len(box.messages) == 2, 20, "the notification once the address agreed")
    finally:
        notifier.close()
    assert box.messages[1][0] == ["third-party@example.org"] and "meteorpi.event" in box.messages[1][1]


def test_one_user_cannot_flood_many_addresses(srv, smtp):
    box = _mailing(srv, smtp, public_read=False)
    srv.db.config.notify.max_pending_per_user = 2
    answers = [_post(srv, {"name": f"w{i}", "email": f"someone{i}@example.org"}) for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["message"] == ("watch.email: you have 2 confirmation links waiting to be opened, as many "
                                            "as this archive allows; wait until they are opened or expire")
    assert len(box.messages) == 2


@pytest.mark.parametrize("address", ["x1:target@example.org", "x2:target@example.org", "=?utf-8?q?target?=@example.org",
                                     "a(target@example.org", "target\x01@example.org", "a..b@example.org"])
def test_an_address_a_mailer_could_read_differently_is_a_400_naming_the_field(srv, smtp, address):
    """Review finding: the e-mail check let ``x1:target@example.org`` and ``x2:...`` through
    and both were mailed to RCPT TO:<target@example.org>, so the one-link-per-address limit was
    no limit; ``a(target@example.org`` went to RCPT TO:<a>. Now they are refused before
    anything is stored or mailed."""
    box = _mailing(srv, smtp)
    r = _post(srv, {"name": "w", "email": address}, auth=None)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("watch.email: ") and "not an address this archive mails" in r.text
    assert box.rcpt == [] and _get(srv, "/watches", auth=VIEWER).json()["watches"] == [] and _pending_holds(srv) == []


def test_an_address_is_mailed_as_itself_envelope_and_header(srv, smtp):
    """The confirmation goes to exactly the address given, in the envelope and in To."""
    box = _mailing(srv, smtp)
    address = "First.Last+meteors@sub-1.example.org"
    assert _post(srv, {"name": "w", "email": address}, auth=None).status_code == 201
    assert box.rcpt == [address] and box.headers == [address]


def _pending_holds(srv) -> list[str]:
    with srv.db.transaction() as cur:
        cur.execute("SELECT address FROM confirmation_pending ORDER BY address")
        return [row[0] for row in cur.fetchall()]


@pytest.mark.parametrize("reply, status, message", [
    ("550 5.1.1 no such mailbox", 400,
     "watch.email: the mail server refused victim@example.com (550); the watch was not added"),
    ("451 4.3.0 mailbox busy, try later", 503, "could not send the confirmation e-mail; the watch was not added"),
], ids=["refused-550", "deferred-451"])
def test_a_confirmation_the_mail_server_does_not_take_leaves_nothing_behind(srv, smtp, reply, status, message):
    """Review finding: a mail server answering RCPT with 550 made POST /watches a 500 (the
    lasting refusal, notify.PermanentFailure, was not caught), left the watch stored
    unconfirmed and held the address, so the next try was a 429 for a day. Whatever keeps the
    link from going (a lasting refusal: 400 naming the address and the code; a passing one:
    503), the watch is withdrawn whole and the address may be asked again at once."""
    box = _mailing(srv, smtp)
    box.refuse["victim@example.com"] = reply
    for auth in (None, READER):  # anonymous and signed-in adds share the path
        r = _post(srv, {"name": "smtp550", "email": "victim@example.com"}, auth=auth)
        assert r.status_code == status, r.text
        assert r.json() == {"state": "failed", "message": message}
        assert _get(srv, "/watches", auth=VIEWER).json()["watches"] == [] and _pending_holds(srv) == []
    assert box.messages == [] and box.rcpt == ["victim@example.com"] * 2
    box.refuse.clear()  # the address works again: it is not held by the failed tries
    again = _post(srv, {"name": "smtp550", "email": "victim@example.com"}, auth=None)
    assert again.status_code == 201, again.text
    assert [to for to, _ in box.messages] == [["victim@example.com"]]


def test_the_import_role_may_not_add_watches(srv, smtp):
    """Finding 3: any account (the cameras' import role too) could add watches."""
    box = _mailing(srv, smtp)
    for body in ({"name": "cam", "email": "third-party@example.org"},
                 {"name": "cam", "webhook": "http://127.0.0.1:9/hook"}):
        r = _post(srv, body, auth=IMPORTER)
        assert r.status_code == 403, r.text
        assert r.json() == {"state": "failed", "message": "importer does not hold a role that may add watches "
                                                          "(user or camera_admin; the import role is for cameras)"}
    assert box.messages == [] and _get(srv, "/watches", auth=VIEWER).json()["watches"] == []
    assert _post(srv, {"name": "adm", "webhook": "http://127.0.0.1:9/hook"}, auth=VIEWER).status_code == 201


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


def test_watch_routes_refuse_parameters_they_do_not_take(srv):
    """``GET /watches?owner=me`` answered every watch the caller may see, as if filtered."""
    r = requests.get(srv.url + "/watches", params={"owner": "me"}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["message"].startswith("owner: unknown parameter"), r.text
    r = requests.get(srv.url + "/watches/" + "0" * 32, params={"x": "1"}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["message"].startswith("x: unknown parameter"), r.text
    assert requests.get(srv.url + "/watches", auth=READER, timeout=TIMEOUT).status_code == 200


def test_coincidences_between_reversed_times_are_a_400(srv):
    """after later than before is a mistake (the two swapped), as on /events: said, not
    answered with an empty list that looks like a quiet night."""
    r = requests.get(srv.url + "/coincidences", params={"after": "10", "before": "5"}, auth=READER, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["message"].startswith("after:"), r.text
    same = requests.get(srv.url + "/coincidences", params={"after": "5", "before": "5"}, auth=READER, timeout=TIMEOUT)
    assert same.status_code == 200


@pytest.mark.parametrize("path", ["/watches", "/watches/" + "0" * 32, "/watches/not-an-id"])
def test_watch_answers_are_never_padded_even_their_errors(srv, path):
    """Watches are private: no answer of theirs, an error included, is JSONP, even with
    public reads and a callback that is safe on the read API."""
    srv.db.config.server.public_read = True
    r = requests.get(srv.url + path, params={"callback": "cb"}, auth=READER, timeout=TIMEOUT)
    assert r.headers["Content-Type"].startswith("application/json") and r.text.startswith("{"), r.text
