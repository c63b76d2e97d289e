"""The watches page: a signed-in user's watches, listed, added, tested and deleted with forms.

The forms post to the watches API's own URLs, and a browser (asking for HTML first) gets pages
back where a script gets JSON:

* ``GET /watches`` — the list (camera_admin: everyone's) with each watch's newest delivery, and
  the form to add one;
* ``POST /watches`` — add; the page again with the webhook's signing secret, shown this once,
  or for an e-mail watch the notice that its confirmation link was mailed (201); or with the
  form as typed and the problem naming its field (400: the mail server refusing the address
  too), the user's own name clash (409), a confirmation link already waiting for that address
  or too many waiting (429), a role that may not add watches (403), or the link not sent
  otherwise (503: the mail server unreachable, deferring or refusing the message); whenever
  the link is not sent, nothing is stored;
* ``POST /watches/<id>/test`` — queue a test notification, then back to the list (303);
* ``POST /watches/<id>/delete`` — HTML forms cannot send DELETE; then back to the list (303).

Access is the watches API's: a signed-in user (HTTP Basic), their own watches only; adding
goes through the API's ``add_and_ask_confirmation``, so the page has exactly its rules (roles,
e-mail confirmation and its limits). A page on another site cannot make a signed-in browser
post these forms: cross_site.py refuses it.
"""
from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from meteorpi_db import Conflict
from meteorpi_model import ValidationError
from meteorpi_model.fields import Codec, UUIDCodec
from meteorpi_model.watch import WATCH_NAME

from .. import params
from ..auth import current_user
from ..errors import ApiError
from ..watch_routes import ADMIN_ROLE, MAX_WATCH_BODY, NameTaken, add_and_ask_confirmation, check_may_add, own_watch
from . import watch_form
from .views import archive_db, pages, signed_in_page


def _render(status: int = 200, values: dict | None = None, error: str | None = None, **shown):
    user = current_user()
    admin = user.has_role(ADMIN_ROLE)
    db = archive_db()
    watches = db.get_watches(None if admin else user.user_id)
    return render_template(
        "watches.html", watches=watches, deliveries=db.latest_deliveries([w.watch_id for w in watches]),
        admin=admin, user=user, values=values or watch_form.blank(), error=error,
        kind_labels=watch_form.KIND_LABELS, **shown), status


def _notice(name: str, codec: Codec) -> Any:
    """What the redirect after a test or a delete says (``?tested=<id>``, ``?deleted=<name>``),
    read by the strict reader and ``codec``; anything else is not shown: a notice is no reason
    for a 400, and a hand-made URL must not put its text on the page."""
    try:
        return params.one(request.args, name, codec)
    except ValidationError:
        return None


def watches_page():
    """The list and the add form; after a test or a delete, what was done."""
    tested = _notice("tested", UUIDCodec())
    return _render(deleted=_notice("deleted", WATCH_NAME), tested=tested.hex if tested else "")


def add_watch_page():
    """Add the watch the form describes, owned by the signed-in user (the API's rules)."""
    request.max_content_length = MAX_WATCH_BODY
    try:
        form = request.form
    except RequestEntityTooLarge:
        return _render(413, error=f"form: more than {MAX_WATCH_BODY // 1024} KiB was sent; nothing was added")
    values = watch_form.as_sent(form)
    try:
        check_may_add(current_user())
        stored, secret, confirmation = add_and_ask_confirmation(watch_form.parse(form), current_user(), "form")
    except ValidationError as e:  # the form's fields, and an address the mail server refused
        return _render(400, values, str(e))
    except NameTaken:
        # Names are unique per owner: only the user's own watches can clash, so this names none of anybody else's.
        return _render(409, values, f"form.name: you have a watch named {values['name']!r} already; choose another name")
    except ApiError as e:  # 403 role, 429 confirmations waiting, 503 no mail server
        return _render(e.status, values, e.message)
    return _render(201, added=stored, secret=secret, confirmation=confirmation)


def test_watch_page(watch_id: str):
    """Queue a test notification; the list then shows its delivery."""
    watch = own_watch(watch_id)
    try:
        archive_db().queue_test(watch)
    except Conflict as e:  # unconfirmed: its address has agreed to nothing but the link
        return _render(409, error=str(e))
    return redirect(f"/watches?tested={watch.watch_id.hex}", 303)


@pages.route("/watches/<watch_id>/delete", methods=["POST"])
@signed_in_page
def delete_watch_page(watch_id: str):
    """Delete a watch with its notifications and deliveries."""
    watch = own_watch(watch_id)
    archive_db().delete_watch(watch.watch_id)
    return redirect(f"/watches?deleted={watch.name}", 303)


# The watches API's endpoints a browser gets a page from instead: GET ones, then form posts.
WATCH_PAGES = {"meteorpi_watches.watches": signed_in_page(watches_page)}
WATCH_FORMS = {"meteorpi_watches.watches": signed_in_page(add_watch_page),
               "meteorpi_watches.test_watch": signed_in_page(test_watch_page)}
