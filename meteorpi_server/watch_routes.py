"""Watches and coincidences over HTTP.

* ``POST /watches`` (a user: the watch is theirs), ``GET /watches``, ``GET/DELETE
  /watches/<id>``, ``POST /watches/<id>/test``: a user sees and changes only their own watches;
  ``camera_admin`` sees all. With ``server.public_read``, anyone may ``POST`` an e-mail watch
  without logging in: it is owned by the address.
* Adding needs the role ``user`` or ``camera_admin`` (``WATCH_ROLES``) when signed in: the
  ``import`` role is the cameras' and adds nothing but what they record (403).
* Nothing is mailed to an address that did not agree: every e-mail watch, a signed-in user's
  too, sends only its confirmation link (``GET /watches/<id>/confirm?secret=...``) until that
  is opened, and is removed if it is not within ``notify.confirm_hours``. One link may wait per
  address; at most ``notify.max_pending_anonymous`` may wait for anonymous askers and
  ``notify.max_pending_per_user`` for one user: past those, 429 with the reason
  (meteorpi_db.watches enforces them in the adding transaction). A link that cannot be mailed
  adds nothing: 400 naming the address when the mail server refuses it, 503 otherwise.
  ``/test`` on an unconfirmed watch is 409.
* ``GET /coincidences`` and ``GET /coincidences/<id>``: coincidence groups, with the read API's
  access rules.

Watches are private, so their answers are plain JSON, never JSONP (a padded answer could be
read by any page the user visits). The body of ``POST /watches`` is the Watch wire form (JSON Schema in /openapi.json, derived from
meteorpi_model.watch); the fields the server sets (owner, state, id) are refused if sent.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

from flask import Blueprint, Response, current_app, jsonify, request

from meteorpi_db import Conflict, MeteorDatabase, TooManyPending
from meteorpi_model import User
from meteorpi_model import ValidationError, fields
from meteorpi_model.fields import Instant, Int, Str, UUIDCodec
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.watch import Watch

from .auth import current_user
from .bodies import parse_json_object, read_body
from .errors import ApiError, ResourceNotFound, json_errors
from .jsonp import JSONP_PARAMETERS
from .jsonp import jsonify as jsonp_or_json
from .params import one, refuse_unknown
from .read_routes import readable

log = logging.getLogger("meteorpi.server")
watch_api = Blueprint("meteorpi_watches", __name__)
ADMIN_ROLE = "camera_admin"
SERVER_FIELDS = ("watch_id", "owner", "confirmed", "enabled", "disabled_reason")
MAX_WATCH_BODY = 64 * 1024
COINCIDENCE_PARAMETERS = {"after", "before", "camera", "limit", "skip"}
# Who may add watches when signed in: people. The import role is the cameras' (and an importing
# node's), which have no business subscribing anyone to anything.
WATCH_ROLES = ("user", ADMIN_ROLE)
MAX_SECRET_CHARS = 200


class NameTaken(ApiError):
    status = 409


class NotConfirmed(ApiError):
    status = 409


class MayNotAddWatches(ApiError):
    status = 403


class TooManyConfirmations(ApiError):
    """Confirmation links wait already (for the address, or as many as allowed): HTTP 429."""
    status = 429


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
        return json_errors(wrapper)
    return decorate


def _no_parameters() -> None:
    """A 400 naming any query parameter (a filter that looks applied but is not:
    ``GET /watches?owner=me`` listed every watch the caller may see)."""
    refuse_unknown(request.args, ())


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


def check_may_add(user: User | None) -> None:
    """Refuse a signed-in user without a role that adds watches (anonymous callers got here
    only through ``server.public_read`` and may add e-mail watches, which must confirm)."""
    if user is not None and not any(user.has_role(role) for role in WATCH_ROLES):
        raise MayNotAddWatches(f"{user.user_id} does not hold a role that may add watches "
                               f"({' or '.join(WATCH_ROLES)}; the import role is for cameras)")


def add_and_ask_confirmation(watch: Watch, user: User | None, path: str = "watch") -> tuple[Watch, str | None, str | None]:
    """Store ``watch`` for ``user`` (None: its address) and mail its confirmation link when it
    is an e-mail watch: (stored, webhook secret or None, what to tell the caller about the link
    or None). The JSON API and the watches page both add through here, so they share the rules:
    roles, one waiting link per address and the caps (429), name clashes (409), and no watch
    left behind when the link cannot be mailed (``notify.ask_confirmation`` withdraws it): the
    mail server refusing the address is the caller's to fix (400 naming it and the code), any
    other failure to send is the archive's (503). ``path`` prefixes field names in errors."""
    from .notify import PermanentFailure, RecipientRefused, TargetRefused, ask_confirmation, check_target
    config = _meteor_app().config
    check_may_add(user)
    if user is None and watch.webhook:  # refused before check_target resolves a stranger's host name
        raise ValidationError(f"{path}.webhook", "a webhook watch needs a signed-in user; without login, "
                                                 "only an e-mail watch (owned by its address) may be added")
    if watch.webhook:
        try:
            check_target(watch.webhook, config.notify.allow_private_targets)
        except TargetRefused as e:
            raise ValidationError(f"{path}.webhook", str(e).removeprefix("webhook: ")) from None
    try:
        stored, secret, confirm = _db().create_watch(watch, user.user_id if user else None)
    except Conflict as e:
        raise NameTaken(str(e)) from None
    except TooManyPending as e:
        raise TooManyConfirmations(str(e).replace("watch.", f"{path}.", 1)) from None
    if not confirm:
        return stored, secret, None
    try:
        ask_confirmation(_db(), config.notify, stored, confirm)
    except RecipientRefused as e:
        raise ValidationError(f"{path}.email", f"{e}; the watch was not added") from None
    except (PermanentFailure, OSError) as e:  # the operator's to fix or wait out: the reason goes to the log
        log.warning("watch %s: confirmation mail not sent (%s: %s); the watch was withdrawn",
                    stored.watch_id.hex, type(e).__name__, e)
        raise MailUnavailable("could not send the confirmation e-mail; the watch was not added") from None
    return stored, secret, (f"a link was sent to {stored.email}; nothing is sent to it until the link is opened "
                            f"(within {config.notify.confirm_hours:g} hours, or the watch is removed)")


def add_watch() -> Response:
    user = current_user()
    check_may_add(user)
    body = parse_json_object(read_body(MAX_WATCH_BODY))
    for name in SERVER_FIELDS:
        if name in body:
            raise ValidationError(f"watch.{name}", "is set by the server; leave it out")
    unknown = sorted(set(body) - {f.name for f in fields(Watch)})
    if unknown:
        raise ValidationError(f"watch.{unknown[0]}", "unknown field")
    stored, secret, confirmation = add_and_ask_confirmation(Watch.from_dict(body, "watch"), user)
    answer = {"watch": stored.as_dict()}
    if secret:
        answer["secret"] = secret  # shown this once
    if confirmation:
        answer["confirmation"] = confirmation
    response = jsonify(answer)
    response.status_code = 201
    return response


def list_watches() -> Response:
    _no_parameters()
    user = current_user()
    watches = _db().get_watches(None if user.has_role(ADMIN_ROLE) else user.user_id)
    return jsonify({"watches": [w.as_dict() for w in watches]})


@watch_api.route("/watches/<watch_id>", methods=["GET", "DELETE"])
@_signed_in()
def watch(watch_id: str) -> Response:
    _no_parameters()
    found = own_watch(watch_id)
    if request.method == "GET":
        return jsonify({"watch": found.as_dict()})
    _db().delete_watch(found.watch_id)
    return jsonify({"deleted": found.watch_id.hex})


@watch_api.route("/watches/<watch_id>/test", methods=["POST"])
@_signed_in()
def test_watch(watch_id: str) -> Response:
    try:
        delivery_id = _db().queue_test(own_watch(watch_id))
    except Conflict as e:  # unconfirmed: the address has agreed to nothing but the link
        raise NotConfirmed(str(e)) from None
    response = jsonify({"delivery_id": delivery_id})
    response.status_code = 202
    return response


NO_SUCH_LINK = "no such confirmation link"


@watch_api.route("/watches/<watch_id>/confirm", methods=["GET"])
@json_errors
def confirm_watch(watch_id: str) -> Response:
    """Open the mailed link. The secret is the only credential and is checked every time, so a
    malformed id or secret, an unknown id, a wrong secret and a confirmed watch with a wrong secret
    all answer the same 404 (nobody learns which ids exist); the right secret again is a harmless 200."""
    try:
        uuid = UUIDCodec().decode(watch_id, "watch_id")
        secret = one(request.args, "secret", Str(MAX_SECRET_CHARS, min_length=0), default="")
    except ValidationError:
        raise ResourceNotFound(NO_SUCH_LINK) from None
    if not secret or not _db().confirm_watch(uuid, secret):
        raise ResourceNotFound(NO_SUCH_LINK)
    return jsonify({"confirmed": uuid.hex})


@watch_api.route("/coincidences")
@readable
def coincidences() -> Response:
    args = request.args
    refuse_unknown(args, COINCIDENCE_PARAMETERS, tolerated=JSONP_PARAMETERS)
    after, before = one(args, "after", Instant()), one(args, "before", Instant())
    if after is not None and before is not None and after > before:  # as /events says it
        raise ValidationError("after", "is later than before: no coincidence can lie in between")
    found = _db().get_coincidences(after, before,
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
