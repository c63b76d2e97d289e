"""Watches and coincidences over HTTP.

* ``POST /watches`` (a user: the watch is theirs), ``GET /watches``, ``GET/DELETE
  /watches/<id>``, ``POST /watches/<id>/test``: a user sees and changes only their own watches;
  ``camera_admin`` sees all. With ``server.public_read``, anyone may ``POST`` an e-mail watch
  without logging in: it is owned by the address and sends nothing until the link mailed to it
  (``GET /watches/<id>/confirm?secret=...``) is opened.
* ``GET /coincidences`` and ``GET /coincidences/<id>``: coincidence groups, with the read API's
  access rules.

Watches are private, so their answers are plain JSON, never JSONP (a padded answer could be
read by any page the user visits). The body of ``POST /watches`` is the Watch wire form (JSON Schema in /openapi.json, derived from
meteorpi_model.watch); the fields the server sets (owner, state, id) are refused if sent.
"""
from __future__ import annotations

import functools
from typing import Callable

from flask import Blueprint, Response, current_app, jsonify, request

from meteorpi_db import Conflict, MeteorDatabase
from meteorpi_model import ValidationError, fields
from meteorpi_model.fields import Instant, Int, Str, UUIDCodec
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.watch import Watch

from .auth import current_user
from .bodies import parse_json_object, read_body
from .errors import ApiError, ResourceNotFound, json_errors
from .jsonp import jsonify as jsonp_or_json, never_padded
from .params import one
from .read_routes import readable

watch_api = Blueprint("meteorpi_watches", __name__)
ADMIN_ROLE = "camera_admin"
SERVER_FIELDS = ("watch_id", "owner", "confirmed", "enabled", "disabled_reason")
MAX_WATCH_BODY = 64 * 1024
COINCIDENCE_PARAMETERS = {"after", "before", "camera", "limit", "skip", "callback", "_"}
MAX_SECRET_CHARS = 200


class NameTaken(ApiError):
    status = 409


class MailUnavailable(ApiError):
    status = 503


def _meteor_app():
    return current_app.extensions["meteorpi"]


def _db() -> MeteorDatabase:
    return _meteor_app().db


def _signed_in(public: tuple[str, ...] = ()) -> Callable:
    """Views for any signed-in user (or, for the methods in ``public`` when
    ``server.public_read``, anyone)."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            meteor_app = _meteor_app()
            optional = request.method in public and meteor_app.config.server.public_read
            return meteor_app.auth.http.login_required(optional=optional)(view)(*args, **kwargs)
        return never_padded(json_errors(wrapper))
    return decorate


def own_watch(watch_id: str) -> Watch:
    """The watch, if the signed-in user may see it; 404 otherwise (others' ids are not told)."""
    watch = _db().get_watch(UUIDCodec().decode(watch_id, "watch_id"))
    user = current_user()
    if watch is None or not (user.has_role(ADMIN_ROLE) or watch.owner == user.user_id):
        raise ResourceNotFound(f"no watch {watch_id}")
    return watch


@watch_api.route("/watches", methods=["GET", "POST"])
@_signed_in(public=("POST",))
def watches() -> Response:
    return add_watch() if request.method == "POST" else list_watches()


def add_watch() -> Response:
    from .notify import TargetRefused, check_target, confirm_link, send_confirmation
    config = _meteor_app().config
    user = current_user()
    body = parse_json_object(read_body(MAX_WATCH_BODY))
    for name in SERVER_FIELDS:
        if name in body:
            raise ValidationError(f"watch.{name}", "is set by the server; leave it out")
    unknown = sorted(set(body) - {f.name for f in fields(Watch)})
    if unknown:
        raise ValidationError(f"watch.{unknown[0]}", "unknown field")
    watch = Watch.from_dict(body, "watch")
    if watch.webhook:
        try:
            check_target(watch.webhook, config.notify.allow_private_targets)
        except TargetRefused as e:
            raise ValidationError("watch.webhook", str(e).removeprefix("webhook: ")) from None
    try:
        stored, secret, confirm = _db().create_watch(watch, user.user_id if user else None)
    except Conflict as e:
        raise NameTaken(str(e)) from None
    answer = {"watch": stored.as_dict()}
    if secret:
        answer["secret"] = secret  # shown this once
    if confirm:
        try:
            send_confirmation(config.notify, stored.email, stored.name,
                              confirm_link(config.notify.base_url, stored, confirm))
        except OSError:
            _db().delete_watch(stored.watch_id)
            raise MailUnavailable("could not send the confirmation e-mail; the watch was not added") from None
        answer["confirmation"] = f"a link was sent to {stored.email}; nothing is sent until it is opened"
    response = jsonify(answer)
    response.status_code = 201
    return response


def list_watches() -> Response:
    user = current_user()
    watches = _db().get_watches(None if user.has_role(ADMIN_ROLE) else user.user_id)
    return jsonify({"watches": [w.as_dict() for w in watches]})


@watch_api.route("/watches/<watch_id>", methods=["GET", "DELETE"])
@_signed_in()
def watch(watch_id: str) -> Response:
    found = own_watch(watch_id)
    if request.method == "GET":
        return jsonify({"watch": found.as_dict()})
    _db().delete_watch(found.watch_id)
    return jsonify({"deleted": found.watch_id.hex})


@watch_api.route("/watches/<watch_id>/test", methods=["POST"])
@_signed_in()
def test_watch(watch_id: str) -> Response:
    delivery_id = _db().queue_test(own_watch(watch_id))
    response = jsonify({"delivery_id": delivery_id})
    response.status_code = 202
    return response


@watch_api.route("/watches/<watch_id>/confirm", methods=["GET"])
@never_padded
@json_errors
def confirm_watch(watch_id: str) -> Response:
    secret = one(request.args, "secret", Str(MAX_SECRET_CHARS, min_length=0), default="")
    if not secret or not _db().confirm_watch(UUIDCodec().decode(watch_id, "watch_id"), secret):
        raise ResourceNotFound("no such confirmation link (wrong or used secret)")
    return jsonify({"confirmed": watch_id})


@watch_api.route("/coincidences")
@readable
def coincidences() -> Response:
    unknown = sorted(set(request.args) - COINCIDENCE_PARAMETERS)
    if unknown:
        raise ValidationError(unknown[0], "unknown parameter (known: after, before, camera, limit, skip)")
    args = request.args
    found = _db().get_coincidences(one(args, "after", Instant()), one(args, "before", Instant()),
                                   one(args, "camera", CAMERA_ID), one(args, "limit", Int(1, 1000), default=100),
                                   one(args, "skip", Int(0, 10**9), default=0))
    return jsonp_or_json({"count": found["count"], "coincidences": [c.as_dict() for c in found["coincidences"]]})


@watch_api.route("/coincidences/<group_id>")
@readable
def coincidence(group_id: str) -> Response:
    found = _db().get_coincidence(UUIDCodec().decode(group_id, "group_id"))
    if found is None:
        raise ResourceNotFound(f"no coincidence {group_id}")
    return jsonp_or_json({"coincidence": found.as_dict()})
