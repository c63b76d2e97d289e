"""The page views: each gathers what its page shows through meteorpi_db and renders a template.

Access is the read API's (``server.public_read``, else HTTP Basic with role ``user`` or
``import``: a browser prompts); the watches pages (watch_views.py) want a signed-in user
always. A bad query or an unknown id renders an error page with the
problem named (400/404), never a traceback.
"""
from __future__ import annotations

import datetime as _dt
import functools
import urllib.parse
from typing import Callable

from flask import Blueprint, current_app, render_template, request

from meteorpi_db import MeteorDatabase, StorageUnavailable
from meteorpi_model import ValidationError, now
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.fields import UUIDCodec

from ..errors import ResourceNotFound
from ..read_routes import READ_ROLES
from . import drawing, search_form

# A camera that sent nothing (status, event, file) for this long is flagged as silent.
SILENT_AFTER = _dt.timedelta(hours=36)
LATEST_EVENTS = 30
STATUS_HISTORY = 50
CHART_NIGHTS = 30
LATEST_COINCIDENCES = 10

pages = Blueprint("meteorpi_pages", __name__, template_folder="templates", static_folder="static",
                  static_url_path="/assets")


class PageNotFound(Exception):
    """The camera or event named in the URL is not held."""


def meteor_app():
    return current_app.extensions["meteorpi"]


def archive_db() -> MeteorDatabase:
    return meteor_app().db


def _error_page(status: int, title: str, message: str):
    return render_template("error.html", title=title, message=message), status


def _rendering(view: Callable) -> Callable:
    """``view`` with its problems answered as error pages, never a traceback."""
    @functools.wraps(view)
    def rendering(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except ValidationError as e:
            return _error_page(400, "Not a valid request", str(e))
        except (PageNotFound, ResourceNotFound) as e:
            return _error_page(404, "Not found", str(e))
        except StorageUnavailable:
            return _error_page(503, "Archive unavailable", "The database cannot be reached; try again shortly."), \
                {"Retry-After": "5"}
    return rendering


def page(view: Callable) -> Callable:
    """Run ``view`` for a reader (anyone with ``server.public_read``); problems as error pages."""
    rendering = _rendering(view)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        found = meteor_app()
        if found.config.server.public_read:
            return rendering(*args, **kwargs)
        return found.requires_auth(roles=READ_ROLES)(rendering)(*args, **kwargs)
    return wrapper


def signed_in_page(view: Callable) -> Callable:
    """Run ``view`` for a signed-in user, whatever ``server.public_read`` says (their watches
    are theirs): HTTP Basic as the watches API, so a browser asks for the login."""
    rendering = _rendering(view)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        return meteor_app().requires_auth()(rendering)(*args, **kwargs)
    return wrapper


@pages.app_template_filter("utc")
def _utc(value: _dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@pages.app_template_filter("iso")
def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pages.app_template_filter("ago")
def _ago(value: _dt.datetime | None, reference: _dt.datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((reference or now()) - value).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


@pages.app_template_test("web_link")
def _web_link(value: str | None) -> bool:
    """Whether a URL a camera sent may become a link: http(s) to a host only. Anything else
    (``javascript:``, ``data:``, a relative path onto our own origin) is shown as text."""
    if not value:
        return False
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


@pages.app_template_filter("size")
def _size(value: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


@pages.app_template_global("page_url")
def _page_url(form: search_form.SearchForm, number: int) -> str:
    from urllib.parse import urlencode
    return "/events?" + urlencode(search_form.page_query(form, number))


def index():
    """The network at a glance."""
    db = archive_db()
    feed_after = str(db.feed_end())  # before the queries: nothing committed in between is missed
    cameras = db.camera_summaries()
    night, night_counts = db.last_night()
    moment = now()
    silent = {c.camera_id for c in cameras if moment - c.last_seen > SILENT_AFTER}
    return render_template(
        "index.html", cameras=cameras, silent=silent, night=night, night_counts=night_counts, now=moment,
        latest=db.latest_events(LATEST_EVENTS), groups=db.latest_coincidences(LATEST_COINCIDENCES),
        camera_map=drawing.camera_map([(c.camera_id, c.lat, c.long, c.camera_id in silent) for c in cameras]),
        feed_after=feed_after, silent_hours=int(SILENT_AFTER.total_seconds() // 3600))


@pages.route("/cameras/<camera_id>")
@page
def camera(camera_id: str):
    """One camera: its status history, sky regions, events per night."""
    CAMERA_ID.decode(camera_id, "camera_id")
    db = archive_db()
    history = db.status_history(camera_id, STATUS_HISTORY)
    if not history:
        raise PageNotFound(f"No camera {camera_id!r} is known to this archive.")
    return render_template(
        "camera.html", camera_id=camera_id, history=history, regions=[drawing.sky_regions(s) for s in history],
        chart=drawing.night_chart(db.events_per_night(camera_id, CHART_NIGHTS)))


def events():
    """The event search form and one page of what it finds."""
    try:
        form = search_form.parse(request.args)
    except ValidationError as e:
        return render_template("events.html", form=search_form.as_sent(request.args), found=None, error=str(e), cameras=archive_db().get_cameras(),
                               op_labels=search_form.OP_LABELS), 400
    found = archive_db().search_events(form.search)
    pages_total = max(1, -(-found["count"] // search_form.PAGE_SIZE))
    return render_template("events.html", form=form, found=found, error=None, pages_total=pages_total,
                           cameras=archive_db().get_cameras(), op_labels=search_form.OP_LABELS)


def event(event_id: str):
    """One event: its files, its meta, its coincident events on other cameras."""
    db = archive_db()
    found = db.get_event(UUIDCodec().decode(event_id, "event_id"))
    if found is None:
        raise PageNotFound(f"No event {event_id[:64]!r} is held by this archive.")
    held = {f.file_id for f in found.files if db.has_file_data(f.file_id, f.md5)}
    # The stored coincidence group (linked by the matcher, as the watches are told of it).
    group = db.coincidence_of_event(found.event_id)
    partners = [m for m in group.members if m.camera_id != found.camera_id] if group else []
    return render_template("event.html", event=found, held=held, partners=partners)


# The JSON endpoints of the read API that a browser asking for HTML gets a page for instead.
PAGE_TWINS = {"index": page(index), "meteorpi_read.events": page(events), "meteorpi_read.event": page(event)}
