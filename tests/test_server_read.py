"""The read API shows exactly what was imported; JSONP only with public reads and a safe callback."""
from __future__ import annotations

import json
import urllib.parse

import pytest
import requests
from werkzeug.http import parse_options_header

from meteorpi_server import create_app
from meteorpi_server.jsonp import PRIVATE_READS_PROBLEM

from .server_fixtures import IMPORTER, READER, TIMEOUT, Api, add_users, deliver, serve_in_thread


def import_event(api: Api, records, status: dict, **kwargs) -> tuple[dict, dict]:
    event, files = records.event(status, **kwargs)
    exchange = deliver(api, event, {status["status"]["status_id"]: status}, files)
    assert exchange.answers[-1] == "complete"
    return event["event"], files


def test_imported_event_reads_back_key_for_key(server, api, records):
    """GET /events/<id>, /files/<id> and a search return the wire form that was sent."""
    status = records.status()
    event, _ = import_event(api, records, status)
    assert api.get(f"/events/{event['event_id']}").json() == {"event": event}
    assert api.get(f"/files/{event['files'][1]['file_id']}").json() == {"file": event["files"][1]}
    found = api.get("/events", params={"camera_ids": records.camera_id}).json()
    assert found == {"count": 1, "events": [event]}
    files = api.get("/files", params={"camera_ids": records.camera_id}).json()
    assert files["count"] == 2
    assert {f["file_id"] for f in files["files"]} == {f["file_id"] for f in event["files"]}


def test_cameras_and_their_status_at_a_time(server, api, records):
    status = records.status(valid_from=1435600800000)
    import_event(api, records, status, sizes=[8])
    assert records.camera_id in api.get("/cameras").json()["cameras"]
    r = api.get(f"/cameras/{records.camera_id}/status", params={"time": 1435600800000 + 5})
    assert r.json() == {"status": status["status"]}
    before = api.get(f"/cameras/{records.camera_id}/status", params={"time": 1435600800000 - 1})
    assert before.status_code == 404 and before.json()["state"] == "failed"
    bad = api.get(f"/cameras/{records.camera_id}/status", params={"time": "noon"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("time:")


def test_searches_are_paginated(server, api, records):
    """limit/skip page through the matches; count is the total whatever the page."""
    status = records.status()
    sent = [import_event(api, records, status, sizes=[4], time=1435630000000 + i)[0] for i in range(3)]
    page1 = api.get("/events", params={"camera_ids": records.camera_id, "limit": 2}).json()
    page2 = api.get("/events", params={"camera_ids": records.camera_id, "limit": 2, "skip": 2}).json()
    assert page1["count"] == page2["count"] == 3
    assert [e["event_id"] for e in page1["events"] + page2["events"]] == [e["event_id"] for e in sent]


@pytest.mark.parametrize("params, expected", [
    ({"limit": "many"}, "query.limit"),
    ({"colour": "red"}, "query.colour"),
    ({"after": "1", "before": "0"}, "query.after"),
])
def test_bad_search_parameters_are_400_naming_them(server, api, params, expected):
    r = api.get("/events", params=params)
    assert r.status_code == 400 and r.json()["message"].startswith(expected)


def test_file_data_streams_identical_bytes_with_type_and_safe_name(server, api, records):
    """GET /files/<id>/data: the same bytes, the record's MIME type, and its file name in a
    Content-Disposition that parses back to exactly that name (quotes and all)."""
    status = records.status()
    event, files = records.event(status, sizes=[300_000])
    record = event["event"]["files"][0]
    record.update(file_name='evil"; filename=x.html; %C3.png', mime_type="image/png")
    deliver(api, event, {status["status"]["status_id"]: status}, files)
    r = api.get(f"/files/{record['file_id']}/data")
    assert r.status_code == 200
    assert r.content == files[record["file_id"]]
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    disposition, params = parse_options_header(r.headers["Content-Disposition"])
    assert disposition == "attachment"
    assert params["filename"] == record["file_name"]


@pytest.mark.parametrize("mime_type, served", [
    ("text/html", "application/octet-stream"), ("text/javascript", "application/octet-stream"),
    ("application/javascript", "application/octet-stream"), ("application/x-ecmascript", "application/octet-stream"),
    ("image/svg+xml", "application/octet-stream"), ("text/css", "application/octet-stream"),
    ("application/xhtml+xml", "application/octet-stream"), ("text/xml", "application/octet-stream"),
    ("application/wasm", "application/octet-stream"), ("TEXT/HTML", "application/octet-stream"),
    ("image/jpeg", "image/jpeg"), ("video/mp4", "video/mp4"), ("text/plain", "text/plain"),
    ("application/fits", "application/fits"), ("application/json", "application/json"),
])
def test_stored_files_are_never_served_as_something_a_browser_runs(server, api, records, mime_type, served):
    """An import account stores a script, a page or an SVG: a page elsewhere on the archive's
    origin could pull it in with <script src> (the attachment disposition does not stop that,
    and the pages' CSP counts it as 'self'). It is served as octet-stream, with a sandbox CSP;
    what cameras record (images, videos, FITS, text) keeps its type, so pages still show it."""
    status = records.status()
    event, files = records.event(status, sizes=[64])
    record = event["event"]["files"][0]
    record.update(mime_type=mime_type)
    deliver(api, event, {status["status"]["status_id"]: status}, files)
    r = api.get(f"/files/{record['file_id']}/data")
    assert r.status_code == 200 and r.content == files[record["file_id"]]
    assert r.headers["Content-Type"].split(";")[0] == served
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_every_read_route_refuses_a_parameter_it_does_not_take(server, api, records):
    """``?tme=`` for ``?time=`` on a camera's status answered the current status as if the
    time had not been asked: every read route names the parameter it does not take, as
    /events always did; jQuery's cache buster ``_`` stays welcome."""
    status = records.status()
    event, files = records.event(status, sizes=[10])
    deliver(api, event, {status["status"]["status_id"]: status}, files)
    camera, file_id = status["status"]["camera_id"], event["event"]["files"][0]["file_id"]
    for path in ("/cameras", f"/cameras/{camera}/status", f"/events/{event['event']['event_id']}",
                 f"/files/{file_id}", f"/files/{file_id}/data"):
        assert api.get(path, params={"_": "1"}).status_code == 200, path
        r = api.get(path, params={"tme": "1"})
        assert r.status_code == 400 and r.json()["message"].startswith("query.tme: unknown parameter"), (path, r.text)
    assert api.get(f"/cameras/{camera}/status", params={"time": str(status["status"]["valid_from"])}).status_code == 200


def test_file_data_ranges_follow_http(server, api, records):
    """A video player asks for byte ranges: a satisfiable one is a 206 of those bytes; one past
    the end is a 416 that says the file's length (Content-Range: bytes */N), which the JSON
    error form once dropped; a Range in a unit the server does not know is ignored (RFC 9110:
    the whole file, 200), not refused."""
    status = records.status()
    event, files = records.event(status, sizes=[1000])
    record = event["event"]["files"][0]
    deliver(api, event, {status["status"]["status_id"]: status}, files)
    data, url = files[record["file_id"]], f"/files/{record['file_id']}/data"
    r = api.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20], r.headers
    r = api.get(url, headers={"Range": "bytes=5000-"})
    assert r.status_code == 416 and r.json()["state"] == "failed"
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    for unit in ("chars=0-1", "items=0-0", "pages"):
        r = api.get(url, headers={"Range": unit})
        assert r.status_code == 200 and r.content == data, (unit, r.status_code)


def test_file_data_not_held_is_404_json(server, api):
    r = api.get(f"/files/{'e' * 32}/data")
    assert r.status_code == 404 and r.json()["state"] == "failed"
    assert api.get(f"/events/{'e' * 32}").status_code == 404
    assert api.get("/events/not-an-id").json()["message"].startswith("event_id:")


@pytest.fixture(scope="module")
def public_url(make_database) -> str:
    """A second server, with ``server.public_read: true`` (the shared one keeps reads private)."""
    db = make_database("meteorpi_public_read")
    db.config.server.public_read = True
    add_users(db)
    url, http = serve_in_thread(create_app(db=db))
    yield url
    http.shutdown()


@pytest.mark.parametrize("callback", ["cb", "jQuery1234_5678", "app.handlers.done", "$x"])
def test_jsonp_pads_a_safe_callback_when_reads_are_public(public_url, callback):
    for auth in (None, READER):
        r = requests.get(public_url + "/cameras", params={"callback": callback, "_": "1700000000"}, auth=auth,
                         timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/javascript")
        assert r.text.startswith(callback + "(") and r.text.rstrip().endswith(");")
        assert "cameras" in json.loads(r.text[len(callback) + 1:r.text.rstrip().rindex(")")])


@pytest.mark.parametrize("path, auth", [
    ("/import/v2", IMPORTER),                   # needs an import account: not a public read
    ("/feed/stream?after=not-a-cursor", None),  # an event stream, its errors JSON
    ("/feed/stream?after=not-a-cursor", READER),
])
def test_only_the_read_api_pads_even_when_reads_are_public(public_url, path, auth):
    """GET /import/v2?callback=cb was padded although it needs import credentials, and
    /feed/stream answered its 400 as application/javascript: padding is for the read API only."""
    r = requests.get(public_url + path, params={"callback": "cb"}, auth=auth, timeout=TIMEOUT)
    assert r.headers["Content-Type"].startswith("application/json"), (r.status_code, r.text[:200])
    assert not r.text.startswith("cb(")
    assert isinstance(r.json(), dict)


@pytest.mark.parametrize("callback", [
    "alert(1)//", "<script>alert(1)</script>", "a;b", "cb\nx", "1abc", "a..b", "x" * 65, "a b", "ünï",
    "cb\n", "cb\r\n", "cb\x00", "cb\uff11",
])
@pytest.mark.parametrize("reads", ["public", "private"])
def test_jsonp_refuses_a_hostile_callback(server, public_url, reads, callback):
    """A callback that is not a plain JavaScript name is refused with 400 JSON, never echoed
    into a script, even before authentication."""
    url = (public_url if reads == "public" else server.url) + "/cameras?" + urllib.parse.urlencode(
        {"callback": callback})
    for auth in (READER, None):
        r = requests.get(url, auth=auth, timeout=TIMEOUT)
        assert r.status_code == 400
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["message"].startswith("callback:")
        assert callback not in r.text


@pytest.mark.parametrize("path", ["/cameras", "/events", "/files", f"/events/{'e' * 32}",
                                  "/cameras/cam-a/status", "/", "/openapi.json", "/import/v2"])
@pytest.mark.parametrize("callback", ["steal", "jQuery1234_5678"])
def test_private_reads_offer_no_jsonp(server, path, callback):
    """With ``public_read: false`` a page on another site could read the archive through JSONP
    with its visitor's Basic credentials: any callback is a 400 saying why, with or without
    credentials, and nothing is padded (issue 12 §7)."""
    for auth in (READER, IMPORTER, None):
        r = requests.get(server.url + path, params={"callback": callback}, auth=auth, timeout=TIMEOUT)
        assert r.status_code == 400, (auth, r.status_code, r.text[:200])
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json() == {"state": "failed", "message": PRIVATE_READS_PROBLEM}
        assert "only when reads are public" in r.json()["message"]
    assert requests.get(server.url + "/cameras", auth=READER, timeout=TIMEOUT).status_code == 200


def test_the_document_offers_jsonp_only_with_public_reads(server, public_url):
    """GET /openapi.json lists the ``callback`` parameter and JavaScript answers only where they are given."""
    for url, offered in ((server.url, False), (public_url, True)):
        events = requests.get(url + "/openapi.json", timeout=TIMEOUT).json()["paths"]["/events"]["get"]
        assert ("callback" in {p["name"] for p in events["parameters"]}) is offered
        assert ("application/javascript" in events["responses"]["200"]["content"]) is offered


@pytest.mark.parametrize("path", ["/cameras", "/events", "/coincidences", "/feed"])
def test_a_callback_given_twice_is_refused_naming_it(public_url, path):
    """The callback checked must be the one padded: given twice, neither is taken."""
    r = requests.get(public_url + path, params={"callback": ["cb", "alert(1)//"]}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/json") and r.text.startswith("{")
    assert r.json()["message"].startswith("callback: given 2 times")
