"""The app factory: ``create_app(config, db)`` builds the whole import service.

``MeteorApp`` is what the routes hang on: the Flask app, the configuration, the database (made
from the configuration at first use, so each worker process opens its own after the fork, and a
database that is down at start-up only costs 503s until it is back) and the authenticator.
Another Flask application embeds the import API with ``MeteorApp(db, app=its_app)`` and
``add_routes``; ``create_app`` adds the read API, the index and JSON answers for every error.
"""
from __future__ import annotations

import functools
import os
import threading
from importlib import metadata
from typing import Callable, Iterable

from flask import Flask, Response, current_app, request

from meteorpi_db import Config, MeteorDatabase, load_config
from meteorpi_db.feed_hub import FeedHub

from .auth import Authenticator
from .cross_site import refuse_cross_site
from .entity_cache import EntityCache
from .errors import BadRequest, CallbackRefused, ResourceNotFound, error_response
from .feed_routes import feed_api
from .import_routes import add_routes
from .jsonp import jsonify, request_callback_problem
from .openapi import openapi_document
from .read_routes import read_api
from .watch_routes import watch_api

SERVICE_NAME = "meteorpi"


def service_version() -> str:
    """The installed meteorpi version (``unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version("meteorpi")
    except metadata.PackageNotFoundError:
        return "unknown"


class MeteorApp:
    """A Flask app with meteorpi's database and authentication attached.

    ``config`` defaults to ``db.config`` or, with no database either, ``load_config()``.
    """

    def __init__(self, db: MeteorDatabase | None = None, app: Flask | None = None,
                 config: Config | None = None):
        self.app = app if app is not None else Flask("meteorpi_server")
        self.config = config or (db.config if db is not None else load_config())
        self._db = db
        self._db_lock = threading.Lock()
        self.auth = Authenticator(lambda: self.db, self.config.server.auth_cache_seconds)
        # The entity cache of each add_routes call, by url_path (tests reset them).
        self.entity_caches: dict[str, EntityCache] = {}
        self._feed_hub: FeedHub | None = None
        self._feed_pid = 0
        self.app.extensions["meteorpi"] = self

    @property
    def db(self) -> MeteorDatabase:
        """The database, opened from the configuration at first use in this process."""
        if self._db is None:
            with self._db_lock:
                if self._db is None:
                    self._db = MeteorDatabase(config=self.config)
        return self._db

    @property
    def feed_hub(self) -> FeedHub:
        """This process's one listener on the change feed, started at first use (after a fork,
        each worker process starts its own: a listening connection cannot be shared)."""
        if self._feed_hub is None or self._feed_pid != os.getpid():
            db = self.db
            with self._db_lock:
                if self._feed_hub is None or self._feed_pid != os.getpid():
                    self._feed_hub = FeedHub(db, retention_days=self.config.feed.retention_days).start()
                    self._feed_pid = os.getpid()
        return self._feed_hub

    def requires_auth(self, roles: Iterable[str] | None = None) -> Callable:
        """Decorator: HTTP Basic credentials of a user holding any of ``roles`` (401/403 JSON)."""
        return self.auth.required(roles)


def create_app(config: Config | None = None, db: MeteorDatabase | None = None) -> Flask:
    """The import service: import API at ``/import``, read API, index, JSON errors throughout."""
    meteor_app = MeteorApp(db=db, config=config)
    app = meteor_app.app
    app.url_map.merge_slashes = False  # "//" is a 404 JSON answer, never an HTML redirect
    app.before_request(_refuse_malformed_requests)
    app.before_request(refuse_cross_site)
    app.before_request(_refuse_unsafe_callback)
    app.before_request(functools.partial(_bound_socket_waits, meteor_app.config.server.timeout_seconds))
    app.after_request(_no_sniffing)
    app.register_error_handler(Exception, error_response)
    app.add_url_rule("/", endpoint="index", view_func=_index)
    app.add_url_rule("/openapi.json", endpoint="openapi", view_func=openapi_json)
    add_routes(meteor_app)
    app.register_blueprint(read_api)
    app.register_blueprint(feed_api)
    app.register_blueprint(watch_api)
    from .pages import install as install_pages
    install_pages(app)
    return app


def _refuse_malformed_requests() -> None:
    """An HTTP/1.1 request without Host is a 400 (RFC 9112 3.2: gunicorn served it). A path
    with an empty segment (``//events``) is a 404, as the URL map answers it anywhere
    but at the start: there gunicorn hands ``//events`` over as ``/events``, so one resource
    answered under two paths, and a proxy's rule for ``/import`` would not see ``//import``."""
    environ = request.environ
    if environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and "HTTP_HOST" not in environ:
        raise BadRequest("headers: an HTTP/1.1 request must carry a Host header")
    raw = environ.get("RAW_URI")
    if raw and "//" in raw.partition("?")[0].partition("#")[0]:
        raise ResourceNotFound("no such path: it has an empty segment (//)")


def _refuse_unsafe_callback() -> None:
    if request.method in ("GET", "HEAD"):
        problem = request_callback_problem()
        if problem:
            raise CallbackRefused(problem)


def _bound_socket_waits(seconds: float) -> None:
    # gunicorn's own timeout only restarts a silent worker; a client stalling mid-body would
    # hold a thread for ever. A socket timeout makes such a read fail after server.timeout_seconds.
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(seconds)


def _no_sniffing(response: Response) -> Response:
    # Stored files and JSONP must be taken for what their Content-Type says, never sniffed.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _index() -> Response:
    return jsonify({"service": SERVICE_NAME, "version": service_version(), "protocol": 1})


def openapi_json() -> Response:
    """``GET /openapi.json``: the document of this app's routes (public, like ``/``)."""
    meteor_app = current_app.extensions["meteorpi"]
    return jsonify(openapi_document(sorted(meteor_app.entity_caches), meteor_app.config.server.public_read,
                                    service_version(), meteor_app.config.feed.max_wait_seconds))
