"""JSON answers, padded as JSONP on GET routes when reads are public and a safe ``callback`` is given.

JSONP is a cross-site read by design: any page may ``<script src=".../events?callback=steal">``,
and the visitor's browser sends along the HTTP Basic credentials it holds for this server. So
JSONP is offered only with ``server.public_read: true``, when the page could read the same
without credentials anyway; with private reads a ``callback`` is refused with a 400 saying why.

flask-jsonpify pads whatever ``callback`` the query string holds: ``?callback=alert(1)//``
would put script of the caller's choosing in our answer (reflected XSS). So a callback is
accepted only when it is a plain JavaScript name path (``cb``, ``jQuery123_456``,
``app.handlers.done``) of at most ``MAX_CALLBACK_LENGTH`` characters; the app refuses any other
with a 400 before a view runs (``callback_problem``), and ``jsonify`` never pads one it has not
checked. Only the read API's views pad (they say so with ``padded``): an import route, a
watch or an event stream answers plain JSON whatever the query holds, errors included, and POST
answers (the import protocol) are never padded.
"""
from __future__ import annotations

import re
import functools
from typing import Any, Callable

import flask
import flask_jsonpify
from flask import Response, current_app, g, request

CALLBACK_PARAMETER = "callback"
MAX_CALLBACK_LENGTH = 64
_CALLBACK_RE = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*", re.ASCII)
# Query parameters that belong to JSONP itself (jQuery adds "_" to defeat caches), not to a search.
JSONP_PARAMETERS = (CALLBACK_PARAMETER, "_")
_PADDED_METHODS = ("GET", "HEAD")


PRIVATE_READS_PROBLEM = (f"{CALLBACK_PARAMETER}: JSONP is offered only when reads are public "
                         "(server.public_read: true); here a page on another site could use it to read the "
                         "archive with its visitor's credentials. Ask without a callback for plain JSON.")


def reads_are_public() -> bool:
    """Whether this app's read API is open to anyone (``server.public_read``)."""
    meteor_app = current_app.extensions.get("meteorpi")
    return meteor_app is not None and meteor_app.config.server.public_read


def callback_problem(name: str | None, public: bool) -> str | None:
    """Why ``name`` may not be used as a JSONP callback (``public``: whether reads are public),
    or None when it is safe (or absent)."""
    if not name:
        return None
    if not public:
        return PRIVATE_READS_PROBLEM
    if len(name) > MAX_CALLBACK_LENGTH:
        return f"{CALLBACK_PARAMETER}: longer than {MAX_CALLBACK_LENGTH} characters"
    if not _CALLBACK_RE.fullmatch(name):
        return f"{CALLBACK_PARAMETER}: must be a JavaScript name such as handleData or app.onData"
    return None


def request_callback_problem() -> str | None:
    """Why this request's ``callback`` may not be used, or None: ``callback_problem`` for its one
    value. Given twice it is refused too, rather than the first value silently winning (what
    is checked and what is padded must be the same one)."""
    names = request.args.getlist(CALLBACK_PARAMETER)
    if len(names) > 1:
        return f"{CALLBACK_PARAMETER}: given {len(names)} times; give it once"
    return callback_problem(names[0] if names else None, reads_are_public())


def padded(view: Callable) -> Callable:
    """Mark ``view`` as one whose answers (and errors) may be JSONP: the public read API's."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.meteorpi_padded = True
        return view(*args, **kwargs)
    return wrapper


def unpadded(view: Callable) -> Callable:
    """Undo ``padded`` for a view inside it that must answer JSON only (an event stream)."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.meteorpi_padded = False
        return view(*args, **kwargs)
    return wrapper


def wants_padding() -> bool:
    """Whether this request's answer should be JSONP: a GET of a ``padded`` view with a safe
    callback, reads public. ``GET /import/v2?callback=cb`` was padded although it needs an
    import account: padding is for what anyone may read, and only there."""
    if request.method not in _PADDED_METHODS or not g.get("meteorpi_padded", False):
        return False
    return bool(request.args.get(CALLBACK_PARAMETER)) and request_callback_problem() is None


def jsonify(payload: Any) -> Response:
    """``payload`` as JSON, or as JSONP through flask-jsonpify when ``wants_padding()``."""
    if wants_padding():
        return flask_jsonpify.jsonify(payload)
    return flask.jsonify(payload)
