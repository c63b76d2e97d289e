"""Web pages over the archive: the network at a glance, cameras, event search, one event, and a
signed-in user's watches.

Server-rendered (Jinja2, autoescaped: everything a camera sent is text, never markup), one
stylesheet and one script from ``static/``, nothing from another host. ``install(app)`` adds
them to the import service:

* ``/cameras/<id>`` and ``/assets/...`` are routes of their own;
* ``/``, ``/events``, ``/events/<id>`` and ``/watches`` already answer JSON. A browser asking
  for HTML first (its ``Accept`` header) gets the page; every other client (``*/*``, JSON,
  JSONP) gets the JSON as before, and both answers say ``Vary: Accept``. The same goes for the
  watch forms' posts (``POST /watches``, ``POST /watches/<id>/test``; watch_views.py).

HTML answers carry a Content-Security-Policy without ``unsafe-inline`` (scripts and styles only
from this origin, no framing), ``nosniff`` and ``X-Frame-Options: DENY``.
"""
from __future__ import annotations

from flask import Flask, Response, request

from .views import PAGE_TWINS, pages
from .watch_views import WATCH_FORMS, WATCH_PAGES

# JSON endpoints a browser (asking for HTML first) gets a page from instead: GETs, form POSTs.
HTML_TWINS = {**PAGE_TWINS, **WATCH_PAGES}
FORM_TWINS = WATCH_FORMS

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "media-src 'self'",
    "connect-src 'self'", "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
])


def install(app: Flask) -> None:
    """Register the pages on ``app`` (built by ``create_app``: its read API holds the JSON twins)."""
    app.register_blueprint(pages)
    app.before_request(_page_for_browsers)
    app.after_request(_page_headers)


def wants_html() -> bool:
    """Whether the client prefers HTML to JSON: browsers do, scripts and exporters do not."""
    if "callback" in request.args:
        return False
    accept = request.accept_mimetypes
    return accept.best_match(["application/json", "text/html"]) == "text/html" and \
        accept["text/html"] > accept["application/json"]


def _page_for_browsers():
    twins = HTML_TWINS if request.method in ("GET", "HEAD") else FORM_TWINS if request.method == "POST" else {}
    if request.endpoint in twins and wants_html():
        return twins[request.endpoint](**(request.view_args or {}))
    return None


def _page_headers(response: Response) -> Response:
    if request.endpoint in HTML_TWINS or request.endpoint in FORM_TWINS:
        response.vary.add("Accept")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["Referrer-Policy"] = "same-origin"
    return response
