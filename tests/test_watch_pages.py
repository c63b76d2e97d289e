"""The watches page over real HTTP, as a browser sends its forms: a signed-in user lists, adds,
tests and deletes watches; bad input comes back as the form with the field named; a page on
another site cannot make a signed-in browser change anything (the browser itself is in
tests/browser)."""
from __future__ import annotations

import re

import pytest
import requests

from meteorpi_model.watch import Watch

from .server_fixtures import IMPORTER, READER, TIMEOUT, VIEWER

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"}
SAME_ORIGIN = {**BROWSER, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}
FORM = {"name": "fireballs", "kind": "coincidence", "webhook": "http://127.0.0.1:9/hook", "email": "",
        "event_types": "meteorpi:*", "cameras": "north-1, south-2", "near": "52.2, 0.12, 300",
        "meta": "meteorpi:peak_magnitude<=-4\nrms:night~2026", "silent_hours": "", "max_per_hour": "20",
        "notify_on_join": "on"}


@pytest.fixture
def srv(clean_server):
    config = clean_server.db.config
    saved = (config.notify.allow_private_targets, config.server.public_read, config.notify.smtp_host,
             config.notify.smtp_port)
    config.notify.allow_private_targets = True
    config.server.public_read = True  # the watches page asks for a login all the same
    yield clean_server
    (config.notify.allow_private_targets, config.server.public_read, config.notify.smtp_host,
     config.notify.smtp_port) = saved


def _get(srv, path: str, auth=READER, headers=BROWSER) -> requests.Response:
    return requests.get(srv.url + path, headers=headers, auth=auth, timeout=TIMEOUT)


def _post(srv, path: str, data=None, auth=READER, headers=SAME_ORIGIN) -> requests.Response:
    return requests.post(srv.url + path, data=data or {}, headers=headers, auth=auth, timeout=TIMEOUT,
                         allow_redirects=False)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _watch(srv, name: str = "theirs", owner: str = "reader") -> Watch:
    stored, _, _ = srv.db.create_watch(Watch(name=name, webhook="http://127.0.0.1:9/hook"), owner)
    return stored


def test_the_watches_page_asks_a_browser_to_log_in_and_scripts_keep_getting_json(srv):
    anonymous = _get(srv, "/watches", auth=None)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    page = _get(srv, "/watches")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Your watches" in page.text and "No watch yet" in page.text and 'action="/watches"' in page.text
    assert "Accept" in page.headers["Vary"] and "unsafe-inline" not in page.headers["Content-Security-Policy"]
    _watch(srv, name="mine")
    for shown in (_get(srv, "/watches"), _post(srv, "/watches", {**FORM, "name": "bad name"})):
        # No inline script, style or handler: the policy would block it, so it would be a bug.
        assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", shown.text), shown.status_code
    assert [w["name"] for w in _get(srv, "/watches", headers={"Accept": "*/*"}).json()["watches"]] == ["mine"]
    assert '<a href="/watches">Watches</a>' in _get(srv, "/", auth=None).text  # in the site's navigation


def test_a_user_adds_sees_tests_and_deletes_a_watch_with_the_forms(srv):
    added = _post(srv, "/watches", FORM)
    assert added.status_code == 201 and added.headers["Content-Type"].startswith("text/html")
    secret = re.search(r'<code class="id" id="watch-secret">(whsec_[A-Za-z0-9+/=]+)</code>', added.text).group(1)
    [stored] = srv.db.get_watches("reader")
    assert (stored.name, stored.kind, stored.webhook, stored.max_per_hour) == ("fireballs", "coincidence",
                                                                               FORM["webhook"], 20)
    assert [str(m) for m in stored.meta] == ["meteorpi:peak_magnitude<=-4", "rms:night~2026"]
    assert stored.cameras == ["north-1", "south-2"] and stored.near.km == 300 and stored.notify_on_join
    listed = _text(_get(srv, "/watches").text)
    assert "1 watch " in listed and "fireballs" in listed and "within 300 km of 52.2, 0.12" in listed
    assert secret not in listed and "Last delivery none yet" in listed  # the secret is shown once

    tested = _post(srv, f"/watches/{stored.watch_id.hex}/test")
    assert tested.status_code == 303 and tested.headers["Location"].endswith(f"/watches?tested={stored.watch_id.hex}")
    after = _text(_get(srv, f"/watches?tested={stored.watch_id.hex}").text)
    assert "A test notification for fireballs is queued" in after and "Last delivery test: pending" in after
    assert [e.kind for e in srv.db.delivery_log(stored.watch_id)] == ["test"]

    deleted = _post(srv, f"/watches/{stored.watch_id.hex}/delete")
    assert deleted.status_code == 303 and deleted.headers["Location"].endswith("/watches?deleted=fireballs")
    assert "Watch fireballs deleted." in _text(_get(srv, "/watches?deleted=fireballs").text)
    assert srv.db.get_watches() == []


def test_a_user_sees_and_changes_only_their_own_watches(srv):
    theirs = _watch(srv, owner="importer")
    assert "theirs" not in _get(srv, "/watches").text
    for action in ("test", "delete"):
        refused = _post(srv, f"/watches/{theirs.watch_id.hex}/{action}")
        assert refused.status_code == 404 and refused.headers["Content-Type"].startswith("text/html")
    assert srv.db.get_watch(theirs.watch_id) is not None and srv.db.delivery_log(theirs.watch_id) == []
    admin = _text(_get(srv, "/watches", auth=VIEWER).text)  # camera_admin sees everyone's
    assert "All watches" in admin and "theirs" in admin and "Owner importer" in admin


@pytest.mark.parametrize("changes, named", [
    ({"name": ""}, "form.name"),
    ({"name": "two words"}, "form.name"),
    ({"kind": "sometimes"}, "form.kind"),
    ({"webhook": ""}, "form.webhook"),
    ({"email": "a@example.org"}, "form.webhook"),  # both channels
    ({"webhook": "ftp://example.org/hook"}, "form.webhook"),
    ({"webhook": "", "email": "not an address"}, "form.email"),
    ({"webhook": "", "email": "x1:target@example.org"}, "form.email"),  # was mailed to target@example.org
    ({"webhook": "", "email": "a(target@example.org"}, "form.email"),  # was mailed to <a>
    ({"cameras": "north-1, bad id!"}, "form.cameras[1]"),
    ({"meta": "meteorpi:peak_magnitude<=-4\nmagnitude is bright"}, "form.meta line 2"),
    ({"meta": "meteorpi:peak_magnitude<=bright"}, "form.meta line 1.value"),
    ({"near": "52.2, 0.12"}, "form.near"),
    ({"near": "95, 0.12, 300"}, "form.near.lat"),
    ({"kind": "absence", "silent_hours": ""}, "form.silent_hours"),
    ({"silent_hours": "a day"}, "form.silent_hours"),
    ({"max_per_hour": "0"}, "form.max_per_hour"),
    ({"max_per_hour": "1e400"}, "form.max_per_hour"),
])
def test_bad_input_comes_back_as_the_form_naming_the_field(srv, changes, named):
    answer = _post(srv, "/watches", {**FORM, **changes})
    assert answer.status_code == 400 and answer.headers["Content-Type"].startswith("text/html")
    problem = re.search(r'<p class="problem" role="alert">(.*?)</p>', answer.text, re.S).group(1)
    assert problem.startswith(named + ":"), problem
    assert 'value="fireballs"' in answer.text or changes.get("name") is not None  # what was typed is kept
    assert srv.db.get_watches() == []


def test_a_name_taken_and_a_private_webhook_are_named_too(srv):
    _watch(srv, name="fireballs", owner="importer")  # another owner's name is not the user's business
    assert _post(srv, "/watches", FORM).status_code == 201
    taken = _post(srv, "/watches", FORM)
    assert taken.status_code == 409 and "form.name: you have a watch named &#39;fireballs&#39; already" in taken.text
    assert "importer" not in taken.text
    srv.db.config.notify.allow_private_targets = False
    private = _post(srv, "/watches", {**FORM, "name": "mine"})
    assert private.status_code == 400 and "form.webhook: 127.0.0.1 is a non-public address" in private.text


def test_an_email_watch_from_the_page_waits_for_its_link_and_one_link_waits_per_address(srv, smtp):
    """The page adds with the API's rules: a user's e-mail watch mails only its link (finding
    3), and a second one for an address whose link waits is refused with why (finding 1)."""
    box, port = smtp
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    mail = {**FORM, "name": "by-mail", "webhook": "", "email": "someone@example.org"}
    added = _post(srv, "/watches", mail)
    assert added.status_code == 201, _text(added.text)
    assert "Confirmation: a link was sent to someone@example.org; nothing is sent to it until the link is opened" \
        in _text(added.text)
    [stored] = srv.db.get_watches("reader")
    assert not stored.confirmed and "waiting for the e-mail link to be opened" in _text(_get(srv, "/watches").text)
    assert [to for to, _ in box.messages] == [["someone@example.org"]]
    tested = _post(srv, f"/watches/{stored.watch_id.hex}/test")
    assert tested.status_code == 409 and "is not confirmed yet" in _text(tested.text)
    again = _post(srv, "/watches", {**mail, "name": "by-mail-2"})
    assert again.status_code == 429, _text(again.text)
    problem = re.search(r'<p class="problem" role="alert">(.*?)</p>', again.text, re.S).group(1)
    assert problem.startswith("form.email: a confirmation link mailed to someone@example.org is waiting"), problem
    assert 'value="by-mail-2"' in again.text and len(box.messages) == 1
    assert [w.name for w in srv.db.get_watches()] == ["by-mail"] and srv.db.delivery_log(stored.watch_id) == []


@pytest.mark.parametrize("reply, status, problem", [
    ("550 5.1.1 no such mailbox", 400,
     "form.email: the mail server refused someone@example.org (550); the watch was not added"),
    ("421 4.7.0 too busy, come back later", 503, "could not send the confirmation e-mail; the watch was not added"),
], ids=["refused-550", "deferred-421"])
def test_a_confirmation_the_mail_server_does_not_take_comes_back_as_the_form(srv, smtp, reply, status, problem):
    """Review finding: the page caught only ApiError, so a mail server refusing the address
    (notify.PermanentFailure) was a 500 page and left the watch stored, holding the address.
    Now the form comes back with why, nothing is stored and the address may be asked again."""
    box, port = smtp
    srv.db.config.notify.smtp_host, srv.db.config.notify.smtp_port = "127.0.0.1", port
    box.refuse["someone@example.org"] = reply
    mail = {**FORM, "name": "by-mail", "webhook": "", "email": "someone@example.org"}
    refused = _post(srv, "/watches", mail)
    assert refused.status_code == status and refused.headers["Content-Type"].startswith("text/html"), refused.text
    shown = re.search(r'<p class="problem" role="alert">(.*?)</p>', refused.text, re.S).group(1)
    assert shown == problem and 'value="by-mail"' in refused.text
    assert srv.db.get_watches() == [] and box.messages == []
    box.refuse.clear()
    assert _post(srv, "/watches", mail).status_code == 201  # the address is not held
    assert [to for to, _ in box.messages] == [["someone@example.org"]]


def test_the_import_role_cannot_add_from_the_page(srv):
    refused = _post(srv, "/watches", FORM, auth=IMPORTER)
    assert refused.status_code == 403 and "importer does not hold a role that may add watches" in refused.text
    assert srv.db.get_watches() == []


def test_an_oversized_form_is_refused_with_a_page(srv):
    answer = _post(srv, "/watches", {**FORM, "meta": "x" * 70_000})
    assert answer.status_code == 413 and "form: more than 64 KiB" in answer.text
    assert srv.db.get_watches() == []


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling host is another origin all the same
    {"Origin": "https://evil.example"},  # an older browser, without Fetch Metadata
    {"Origin": "null"},  # a sandboxed frame or a privacy-minded redirect
], ids=["cross-site", "same-site", "other-origin", "null-origin"])
def test_a_cross_site_post_is_refused_and_changes_nothing(srv, headers):
    """A page elsewhere can make a signed-in browser post (its Basic credentials go along):
    the browser marks such a request, and the archive refuses it, forms and JSON API alike."""
    mine = _watch(srv, name="mine")
    attempts = [("/watches", {**FORM, "name": "planted"}), (f"/watches/{mine.watch_id.hex}/test", None),
                (f"/watches/{mine.watch_id.hex}/delete", None)]
    for path, data in attempts:
        for accept in (BROWSER, {"Accept": "*/*"}):
            answer = _post(srv, path, data, headers={**accept, **headers})
            assert answer.status_code == 403 and "another site" in answer.text, (path, answer.text[:200])
    text_json = requests.post(srv.url + "/watches", data='{"name": "planted", "email": "a@example.org"}',
                              headers={"Content-Type": "text/plain", **headers}, auth=READER, timeout=TIMEOUT)
    assert text_json.status_code == 403
    assert [w.name for w in srv.db.get_watches()] == ["mine"] and srv.db.delivery_log(mine.watch_id) == []


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                                     {"Origin": "{url}"}, {}], ids=["same-origin", "user", "own-origin", "script"])
def test_same_origin_forms_and_scripts_are_let_through(srv, headers):
    headers = {k: v.format(url=srv.url) for k, v in headers.items()}
    mine = _watch(srv, name="mine")
    assert _post(srv, f"/watches/{mine.watch_id.hex}/test", headers={**BROWSER, **headers}).status_code == 303
    api = requests.post(f"{srv.url}/watches/{mine.watch_id.hex}/test", headers=headers, auth=READER, timeout=TIMEOUT)
    assert api.status_code == 202
    assert len(srv.db.delivery_log(mine.watch_id)) == 2


def test_hostile_watch_values_are_sent_back_as_text(srv):
    hostile = {"webhook": 'https://example.org/"><script>window.__meteorpi_pwned=5</script>',
               "event_types": "meteorpi:<img/src=x/onerror=window.__meteorpi_pwned=6>",
               "meta": "meteorpi:note~<script>window.__meteorpi_pwned=7</script>"}
    added = _post(srv, "/watches", {**FORM, **hostile})
    assert added.status_code == 201
    page = _get(srv, "/watches").text
    for value in ('"><script>window.__meteorpi_pwned=5</script>', "<img/src=x", "<script>window.__meteorpi_pwned=7"):
        assert value not in page
    assert "https://example.org/&#34;&gt;&lt;script&gt;window.__meteorpi_pwned=5&lt;/script&gt;" in page
    assert "meteorpi:&lt;img/src=x/onerror=window.__meteorpi_pwned=6&gt;" in page
    refused = _post(srv, "/watches", {**FORM, "name": '"><script>window.__meteorpi_pwned=8</script>'})
    assert refused.status_code == 400 and "<script>window.__meteorpi_pwned=8" not in refused.text
    assert 'value="&#34;&gt;&lt;script&gt;window.__meteorpi_pwned=8&lt;/script&gt;"' in refused.text


@pytest.mark.parametrize("line, key, op, value", [
    ("meteorpi:peak_magnitude<=-4", "meteorpi:peak_magnitude", "<=", -4.0),
    ("rms:night~2026", "rms:night", "~", "2026"),  # contains: text, even of digits
    ("meteorpi:note~a<b", "meteorpi:note", "~", "a<b"),  # an operator inside the value
    ("meteorpi:note!=x=y", "meteorpi:note", "!=", "x=y"),
])
def test_a_meta_line_splits_at_its_first_operator(line, key, op, value):
    from meteorpi_model.watch import WatchMeta
    meta = WatchMeta.parse(line)
    assert (str(meta.key), meta.op, meta.value) == (key, op, value)


LOOSE_NUMBERS = {"superscript": "²", "arabic_indic": "٣", "fullwidth": "１０", "underscore": "1_0",
                 "spaces": " 3 ", "newline": "3\n", "nul": "3\x00", "repeated": ["3", "3"]}


@pytest.mark.parametrize("value", LOOSE_NUMBERS.values(), ids=LOOSE_NUMBERS.keys())
@pytest.mark.parametrize("field", ["max_per_hour", "silent_hours"])
def test_a_loose_number_in_the_watch_form_is_refused_naming_the_field(srv, field, value):
    """``int('١٠')`` and ``int('1_0')`` are 10 to Python; to the form they are not numbers,
    and nothing is stored."""
    answer = _post(srv, "/watches", {**FORM, field: value})
    assert answer.status_code == 400 and answer.headers["Content-Type"].startswith("text/html")
    problem = re.search(r'<p class="problem" role="alert">(.*?)</p>', answer.text, re.S).group(1)
    assert problem.startswith(f"form.{field}:"), problem
    assert srv.db.get_watches() == []


def test_a_watch_form_field_given_twice_is_refused_naming_it(srv):
    answer = _post(srv, "/watches", {**FORM, "name": ["one", "two"]})
    assert answer.status_code == 400
    problem = re.search(r'<p class="problem" role="alert">(.*?)</p>', answer.text, re.S).group(1)
    assert problem.startswith("form.name: given 2 times"), problem
    assert srv.db.get_watches() == []


def test_the_watch_form_still_takes_plain_numbers(srv):
    answer = _post(srv, "/watches", {**FORM, "max_per_hour": "20", "silent_hours": "1.5"})
    assert answer.status_code == 201, answer.text
    [stored] = srv.db.get_watches()
    assert stored.max_per_hour == 20 and stored.silent_hours == 1.5


@pytest.mark.parametrize("changes, named", [
    ({"near": "٥٢, 0.12, 300"}, "form.near"),
    ({"near": "52.2, 0.12, 3_00"}, "form.near"),
    ({"meta": "meteorpi:peak_magnitude<=١٠"}, "form.meta line 1.value"),
    ({"meta": "meteorpi:peak_magnitude<=-1_0"}, "form.meta line 1.value"),
])
def test_numbers_inside_the_near_and_meta_fields_are_ascii_too(srv, changes, named):
    answer = _post(srv, "/watches", {**FORM, **changes})
    assert answer.status_code == 400
    problem = re.search(r'<p class="problem" role="alert">(.*?)</p>', answer.text, re.S).group(1)
    assert problem.startswith(named + ":"), problem
    assert srv.db.get_watches() == []
