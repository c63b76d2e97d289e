"""Refusing requests that change state when a browser says another site sent them (CSRF).

A browser sends the HTTP Basic credentials it holds for the archive with every request to it,
whichever page made the request: a page on another site could make a logged-in user's browser
add, delete or test watches (a form can post to ``/watches/<id>/test``, and a ``text/plain``
form can even carry a JSON body). So every request whose method may change state (anything
but GET, HEAD and OPTIONS) is refused with 403 when the browser marks it as cross-origin:

* ``Sec-Fetch-Site`` (Fetch Metadata, set by the browser, never by a page): anything but
  ``same-origin`` or ``none`` (the user's own action) is refused;
* without it (older browsers), ``Origin``: refused unless its host is the request's ``Host``
  (a reverse proxy must pass ``Host`` on, as the README's nginx example does);
* with neither, the client is not a browser acting for a page (an exporter, curl, a script):
  allowed, it sends only the credentials it was given.

Why headers, not a per-session token: the archive has no session (HTTP Basic, no cookies) to
keep a token in, nor a secret shared by gunicorn's worker processes to sign one with; the
headers need neither, no page can forge them, and one check covers the JSON API as well as the
forms. It is the check of Go's ``net/http.CrossOriginProtection``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

from .errors import ApiError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ALLOWED_FETCH_SITES = ("same-origin", "none")


class CrossSiteRefused(ApiError):
    """A state-changing request another site's page made the browser send."""

    status = 403


def cross_site_problem() -> str | None:
    """Why this request must be refused as cross-site, or None when it may go ahead."""
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.strip().lower() in ALLOWED_FETCH_SITES:
            return None
        return "refused: the browser says a page on another site sent this request (Sec-Fetch-Site)"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        host = urlsplit(origin).netloc
    except ValueError:
        host = ""
    if host and host.lower() == request.host.lower():
        return None
    return "refused: the browser says a page on another site sent this request (Origin is not this host)"


def refuse_cross_site() -> None:
    """``before_request``: raise CrossSiteRefused (403) for a cross-site state change."""
    problem = cross_site_problem()
    if problem:
        raise CrossSiteRefused(problem)
