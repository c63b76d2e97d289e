"""The web pages over real HTTP: what a browser is sent (the browser itself is in tests/browser).

Browsers ask for HTML first and get pages at ``/``, ``/events`` and ``/events/<id>``; every other
client keeps getting the JSON it got before. Pages are escaped, framed by no one, scripted only
from this origin, and follow the read API's access rules.
"""
from __future__ import annotations

import datetime as _dt
import re
from html import escape
import uuid

import pytest
import requests

from meteorpi_model import Event, now
from meteorpi_server.pages import CONTENT_SECURITY_POLICY

from .page_fixtures import HOSTILE_IMG, HOSTILE_NAME, HOSTILE_SCRIPT
from .server_fixtures import READER, TIMEOUT, VIEWER

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"}


def _page(page_server, path: str, auth=None, **params) -> requests.Response:
    return requests.get(page_server.url + path, headers=BROWSER, params=params, auth=auth, timeout=TIMEOUT)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize("path", ["/", "/events", "/events/{event}"])
def test_browsers_get_a_page_where_scripts_keep_getting_json(page_server, path):
    path = path.format(event=page_server.sample.pair[0].event_id.hex)
    page = _page(page_server, path)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Accept" in page.headers["Vary"]
    for accept in ("*/*", "application/json", None):
        headers = {"Accept": accept} if accept else {}
        answer = requests.get(page_server.url + path, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json"), accept
        answer.json()


@pytest.mark.parametrize("path", ["/", "/events", "/events/{event}", "/cameras/north-1", "/cameras/nobody",
                                  "/events/{missing}", "/events?lat_min=north"])
def test_every_page_forbids_inline_script_framing_and_sniffing(page_server, path):
    path = path.format(event=page_server.sample.pair[0].event_id.hex, missing=uuid.uuid4().hex)
    page = _page(page_server, path)
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style anywhere: the policy would block it, so it would be a bug.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text) and " style=" not in page.text
    assert "<style" not in page.text and not re.search(r"\son[a-z]+=", page.text)


def test_the_stylesheet_and_script_are_served_by_the_app_with_their_types(page_server):
    css = requests.get(page_server.url + "/assets/site.css", timeout=TIMEOUT)
    js = requests.get(page_server.url + "/assets/live.js", timeout=TIMEOUT)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert "EventSource" in js.text


def test_hostile_meta_and_file_names_are_sent_as_text(page_server):
    page = _page(page_server, f"/events/{page_server.sample.hostile.event_id.hex}")
    for hostile in (HOSTILE_SCRIPT, HOSTILE_IMG, HOSTILE_NAME):
        assert hostile not in page.text
    assert "&lt;script&gt;window.__meteorpi_pwned = 1&lt;/script&gt;" in page.text
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__meteorpi_pwned = 2&#34;&gt;" in page.text
    assert "<img src=x" not in page.text and "<script>window" not in page.text


def test_the_index_shows_cameras_last_night_map_latest_events_and_coincidences(page_server):
    sample = page_server.sample
    page = _page(page_server, "/")
    text = _text(page.text)
    for camera in sample.cameras:
        assert f'href="/cameras/{camera}"' in page.text
    assert re.search(r'<tr class="silent">\s*<th scope="row"><a href="/cameras/quiet-3">', page.text)
    assert "Silent: nothing received for 5 days" in text
    assert page.text.count('<tr class="silent">') == 1
    assert '<svg class="map"' in page.text and page.text.count("<circle ") == 3
    first, second = sample.pair
    assert f'id="event-{sample.hostile.event_id.hex}"' in page.text
    group = re.search(r'<ul class="groups">(.*?)</ul>', page.text, re.S).group(1)
    assert f"/events/{first.event_id.hex}" in group and f"/events/{second.event_id.hex}" in group
    assert re.search(r'data-feed-url="/feed/stream\?kind=event&amp;after=\d+-\d+"', page.text)
    assert 'href="/">reload</a>' in page.text


def test_a_camera_page_shows_status_history_sky_regions_and_nights(page_server):
    page = _page(page_server, "/cameras/north-1")
    assert page.status_code == 200
    assert page.text.count('<article class="status">') == 2  # the current status and the one before it
    assert "old lens" in page.text and "(current)" in page.text
    assert page.text.count("<polygon ") == 2
    bars = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="#2d7dd2"><title>(\S+): (\d+) event',
                      page.text)
    assert len(bars) == 30 and sum(int(n) for _, _, n in bars) == 6  # 4 + the pair's + the hostile one


def test_an_event_page_shows_images_downloads_meta_and_the_other_camera(page_server):
    first, second = page_server.sample.pair
    page = _page(page_server, f"/events/{first.event_id.hex}")
    image = first.files[0]
    assert f'<img src="/files/{image.file_id.hex}/data"' in page.text
    assert image.md5 in page.text and "frame.png" in page.text
    assert "meteorpi:classification" in page.text and "fireball" in page.text
    assert f'<a href="/events/{second.event_id.hex}">south-2 at' in page.text and "(+1.200 s)" in page.text
    data = requests.get(f"{page_server.url}/files/{image.file_id.hex}/data", timeout=TIMEOUT)
    assert data.content.startswith(b"\x89PNG")


def test_the_search_form_finds_by_camera_time_and_meta_and_the_url_is_the_bookmark(page_server):
    first = page_server.sample.pair[0]
    moment = first.event_time.strftime("%Y-%m-%dT%H:%M:%S")
    params = {"camera_ids": "north-1", "after": moment, "meta_key_0": "meteorpi:classification",
              "meta_op_0": "string_equals", "meta_value_0": "fireball"}
    page = _page(page_server, "/events", **params)
    assert "1 event found" in page.text and f"/events/{first.event_id.hex}" in page.text
    assert 'value="fireball"' in page.text and 'value="north-1"' in page.text  # the form shows the query
    params["meta_value_0"] = "plane"
    assert "0 events found" in _page(page_server, "/events", **params).text


def test_search_results_are_paged_with_links_that_keep_the_query(page_server, monkeypatch):
    from meteorpi_server.pages import search_form
    monkeypatch.setattr(search_form, "PAGE_SIZE", 4)
    # north-1 only: the browser tests import more events, on south-2.
    first = _page(page_server, "/events", camera_ids="north-1,quiet-3", event_type="meteorpi:meteor")
    assert "7 events found" in first.text and "Page 1 of 2" in first.text
    link = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert "camera_ids=north-1%2C+quiet-3" in link and "event_type=meteorpi%3Ameteor" in link and "page=2" in link
    second = requests.get(page_server.url + link, headers=BROWSER, timeout=TIMEOUT)
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text and 'rel="next"' not in second.text
    assert second.text.count("<tr><td>") == 3


@pytest.mark.parametrize("params, named", [
    ({"lat_min": "north"}, "form.lat_min"),
    ({"after": "yesterday"}, "form.after"),
    ({"after": "2026-01-02T00:00", "before": "2026-01-01T00:00"}, "form.after"),
    ({"camera_ids": "bad id!"}, "form.camera_ids"),
    ({"meta_key_0": "meteorpi:duration", "meta_op_0": "less", "meta_value_0": "long"}, "form.meta_value_0"),
    ({"meta_key_0": "meteorpi:duration", "meta_op_0": "drop table", "meta_value_0": "1"}, "form.meta_op_0"),
    ({"page": "0"}, "form.page"),
    ({"after_offset_hours": "25"}, "form.after_offset"),
    ({"exclude_imported": "maybe"}, "form.exclude_imported"),
])
def test_a_bad_search_is_a_400_page_naming_the_field(page_server, params, named):
    page = _page(page_server, "/events", **params)
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert named in page.text
    for name, value in params.items():  # the form keeps what was typed, to be corrected
        if not name.startswith(("meta_op", "page", "exclude_imported")):  # a checkbox has no typed value
            assert f'name="{name}"' in page.text and f'value="{value}"' in page.text, name


@pytest.mark.parametrize("path, status, says", [
    ("/cameras/nobody", 404, "No camera &#39;nobody&#39;"),
    ("/cameras/bad%20id", 400, "camera_id"),
    ("/events/not-a-uuid", 400, "event_id"),
    ("/events/" + "0" * 32, 404, "No event"),
])
def test_unknown_or_malformed_ids_are_error_pages(page_server, path, status, says):
    page = _page(page_server, path)
    assert page.status_code == status and page.headers["Content-Type"].startswith("text/html")
    assert says in page.text and "Traceback" not in page.text


@pytest.mark.parametrize("path", ["/", "/events", "/cameras/north-1"])
def test_pages_follow_the_read_apis_access_rules(page_server, path):
    config = page_server.app.extensions["meteorpi"].config
    config.server.public_read = False
    try:
        anonymous = _page(page_server, path)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert _page(page_server, path, auth=VIEWER).status_code == 403
        assert _page(page_server, path, auth=READER).status_code == 200
        assert requests.get(page_server.url + "/assets/site.css", timeout=TIMEOUT).status_code == 200
    finally:
        config.server.public_read = True


def test_an_empty_archive_renders_every_page_saying_so(db):
    """A new archive (no camera yet) is not an error: the pages say there is nothing yet."""
    from meteorpi_server import create_app
    from .server_fixtures import serve_in_thread
    db.config.server.public_read = True
    url, server = serve_in_thread(create_app(db=db))
    try:
        index = requests.get(url + "/", headers=BROWSER, timeout=TIMEOUT)
        assert index.status_code == 200 and "No camera has reported to this archive yet." in index.text
        assert "No events yet." in index.text and "No event has been seen by two cameras yet." in index.text
        events = requests.get(url + "/events", headers=BROWSER, timeout=TIMEOUT)
        assert events.status_code == 200 and "0 events found" in events.text
    finally:
        server.shutdown()
        db.config.server.public_read = False


def test_a_hostile_search_comes_back_as_text_in_the_form_and_the_error(page_server):
    hostile = '"><script>window.__meteorpi_pwned = 4</script>'
    page = _page(page_server, "/events", lat_min=hostile, event_type=hostile)
    assert page.status_code == 400
    assert hostile not in page.text and "<script>window" not in page.text
    assert 'value="&#34;&gt;&lt;script&gt;window.__meteorpi_pwned = 4&lt;/script&gt;"' in page.text


def test_an_imported_coincidence_appears_on_the_index_and_links_the_events(db, tmp_path):
    """Two cameras 150 km apart import a meteor 1.5 s apart: once the matcher (the notifier's)
    has linked them, ``/`` lists the group and each event page links the other. A third
    camera 900 km away with an event in the same seconds saw another meteor: the pages leave
    it out, as the watches' coincidence alerts do."""
    from meteorpi_server import create_app
    from .page_fixtures import _status
    from .server_fixtures import IMPORTER, add_users, serve_in_thread
    from .watch_fixtures import drain
    add_users(db)
    db.config.server.public_read = True
    at = now().replace(microsecond=0) - _dt.timedelta(hours=1)
    statuses = {camera: _status(db, camera, lat, 0.12, at - _dt.timedelta(hours=2))
                for camera, lat in (("ash-1", 52.2), ("elm-2", 53.55), ("fir-3", 60.3))}
    url, server = serve_in_thread(create_app(db=db))
    try:
        events = {}
        for camera, seconds in (("ash-1", 0.0), ("elm-2", 1.5), ("fir-3", 1.0)):
            event = Event(camera_id=camera, status_id=statuses[camera].status_id,
                          event_time=at + _dt.timedelta(seconds=seconds), event_type="meteorpi:meteor")
            answer = requests.post(url + "/import", json={"type": "event", "event": event.as_dict()}, auth=IMPORTER,
                                   timeout=TIMEOUT)
            assert answer.json()["state"] == "complete"
            events[camera] = event.event_id.hex
        drain(db)
        index = requests.get(url + "/", headers=BROWSER, timeout=TIMEOUT).text
        groups = re.findall(r"<li>(.*?)</li>", re.search(r'<ul class="groups">(.*?)</ul>', index, re.S).group(1), re.S)
        assert len(groups) == 1 and "seen by 2 cameras" in _text(groups[0])
        assert f'href="/events/{events["ash-1"]}">ash-1</a>' in groups[0]
        assert f'href="/events/{events["elm-2"]}">elm-2</a>' in groups[0] and events["fir-3"] not in groups[0]
        ash = requests.get(f"{url}/events/{events['ash-1']}", headers=BROWSER, timeout=TIMEOUT).text
        assert f'<a href="/events/{events["elm-2"]}">elm-2 at' in ash and "(+1.500 s)" in ash
        assert events["fir-3"] not in ash
        elm = requests.get(f"{url}/events/{events['elm-2']}", headers=BROWSER, timeout=TIMEOUT).text
        assert f'<a href="/events/{events["ash-1"]}">ash-1 at' in elm and "(-1.500 s)" in elm
        fir = requests.get(f"{url}/events/{events['fir-3']}", headers=BROWSER, timeout=TIMEOUT).text
        assert "No event of another camera is linked to this one." in fir
    finally:
        server.shutdown()
        db.config.server.public_read = False


@pytest.mark.parametrize("inst_url, linked", [
    ("javascript:alert(document.domain)", False), ("JaVaScRiPt:alert(1)", False),
    ("data:text/html,<script>alert(1)</script>", False), ("/files/00/data", False),
    ("https://observatory.example.org/cam", True), ("http://example.org", True),
])
def test_a_camera_url_becomes_a_link_only_to_a_web_address(db, inst_url, linked):
    """A camera's inst_url is whatever its import account sent: `javascript:` (or a path onto
    the archive itself) is shown as text, never as a link; an http(s) address is a link."""
    from meteorpi_server import create_app
    from .page_fixtures import _status
    from .server_fixtures import serve_in_thread
    _status(db, "link-1", 51.5, -0.1, now() - _dt.timedelta(hours=1), inst_url=inst_url)
    db.config.server.public_read = True
    url, server = serve_in_thread(create_app(db=db))
    try:
        page = requests.get(url + "/cameras/link-1", headers=BROWSER, timeout=TIMEOUT)
        assert page.status_code == 200
        shown = escape(inst_url, quote=True).replace("&#x27;", "&#39;")
        assert (f'<a href="{shown}"' in page.text) == linked, page.text
        assert escape(inst_url, quote=False) in page.text  # shown, as text, either way
    finally:
        server.shutdown()
        db.config.server.public_read = False


# What a review sent to the search form: digits Python's int() and str.isdigit() take but a
# query parameter must not (superscript, Arabic-Indic, fullwidth), digit separators, spaces
# around the value, control characters, and a field given twice (a 500 or a silent rewrite).
LOOSE_NUMBERS = {"superscript": "²", "arabic_indic": "٣", "fullwidth": "１", "underscore": "1_0",
                 "spaces": " 3 ", "newline": "3\n", "nul": "3\x00", "repeated": ["3", "3"]}


def _problem(html: str) -> str:
    found = re.search(r'<p class="problem" role="alert">(.*?)</p>', html, re.S)
    assert found, "no problem shown on the page"
    return found.group(1)


@pytest.mark.parametrize("value", LOOSE_NUMBERS.values(), ids=LOOSE_NUMBERS.keys())
@pytest.mark.parametrize("field", ["page", "after", "before", "meta_value_0"])
def test_a_loose_number_in_the_search_form_is_a_400_page_naming_the_field(page_server, field, value):
    params = {field: value}
    if field == "meta_value_0":
        params.update(meta_key_0="meteorpi:when", meta_op_0="before")
    page = _page(page_server, "/events", **params)
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert _problem(page.text).startswith(f"form.{field}:"), _problem(page.text)
    assert "Traceback" not in page.text


@pytest.mark.parametrize("field", ["camera_ids", "event_type", "lat_min", "meta_key_0"])
def test_a_search_field_given_twice_is_a_400_page_naming_it(page_server, field):
    page = _page(page_server, "/events", **{field: ["north-1", "north-1"]})
    assert page.status_code == 400 and _problem(page.text).startswith(f"form.{field}: given 2 times")


def test_the_search_form_still_takes_milliseconds_and_a_page_number(page_server):
    first = page_server.sample.pair[0]
    ms = int(first.event_time.timestamp() * 1000)
    page = _page(page_server, "/events", camera_ids="north-1", after=str(ms), before=str(ms + 1000), page="1")
    assert page.status_code == 200 and f"/events/{first.event_id.hex}" in page.text
    assert _page(page_server, "/events", page="2").status_code == 200
