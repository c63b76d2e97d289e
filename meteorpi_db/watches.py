"""Watches: stored "tell me when" subscriptions, their secrets and their owners.

A webhook watch gets a Standard Webhooks signing secret (``whsec_`` + 32 random bytes, base64)
when it is created: the caller is shown it once; it is kept because every delivery is signed
with it.

Nothing is mailed to an address that did not agree. Every e-mail watch — anonymous, a user's,
or the operator's CLI unless it says the address agreed (``confirmed_by_operator``) — starts
unconfirmed: only its confirmation link is mailed, and the matcher, the deliverer and
``queue_test`` ignore it until the link is opened. The link carries a random secret, of which
only the SHA-256 is kept, compared in constant time on every click. Confirmation mail is
bounded at the root, in the transaction that adds the watch:

* one unopened link per address (lower-cased) at a time, whoever asked: the
  ``confirmation_pending`` row keyed by the address; it outlives the deletion of its watch
  until it expires, so delete-and-add again cannot mail the address twice;
* unopened links expire after ``notify.confirm_hours``; expired watches are removed
  (``purge_unconfirmed``: on every add and by the notifier);
* at most ``notify.max_pending_anonymous`` unopened links asked for anonymously, and
  ``notify.max_pending_per_user`` per signed-in user (an advisory lock makes count-then-add
  atomic), so a flood of different addresses is bounded too.

A refusal is ``TooManyPending`` (HTTP 429).

Names are unique per owner (the user; for a watch without one, its e-mail address, without
case), never across the archive: a global namespace told anyone which names others had taken.
A second create with a name its owner already uses is refused by PostgreSQL's unique indexes,
not by a look-then-insert race, and the refusal speaks only of that owner's watches. Several
owners may therefore share a name: ``watches_named`` returns them all, and a caller that needs
one (the CLI) must ask for an owner or an id.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import hmac
import secrets
import uuid
from typing import Iterable

import psycopg2.errors
import psycopg2.extras

from meteorpi_model import ValidationError, as_uuid
from meteorpi_model.watch import Watch, email_refusal

from .errors import Conflict, NotFound, TooManyPending
from .pool import retry_stale

WATCH_COLUMNS = """watch_id, name, owner_user, owner_email, kind, webhook_url, email, filters,
    max_per_hour, muted_until, digest, confirmed_at IS NOT NULL, enabled, disabled_reason"""
INSERT_WATCH = """
INSERT INTO watch (watch_id, name, owner_user, owner_email, kind, webhook_url, webhook_secret, email,
                   filters, max_per_hour, muted_until, digest, confirm_hash, confirmed_at, confirm_expires)
VALUES (%(watch_id)s, %(name)s, %(owner_user)s, %(owner_email)s, %(kind)s, %(webhook_url)s,
        %(webhook_secret)s, %(email)s, %(filters)s, %(max_per_hour)s, %(muted_until)s, %(digest)s,
        %(confirm_hash)s, CASE WHEN %(confirm_hash)s::bytea IS NULL THEN now() END,
        CASE WHEN %(confirm_hash)s::bytea IS NOT NULL THEN now() + %(confirm_within)s END)
"""
# Unopened links past their time: the watches go (with anything queued for them), then the
# per-address rows, including those whose watch was deleted before.
PURGE_UNCONFIRMED = "DELETE FROM watch WHERE confirmed_at IS NULL AND confirm_expires <= now()"
PURGE_PENDING = "DELETE FROM confirmation_pending WHERE expires_at <= now()"
# Serialises count-then-add per class of asker (anonymous, or one user) for the caps.
LOCK_PENDING = "SELECT pg_advisory_xact_lock(hashtext('meteorpi.confirmation_pending'), hashtext(%(who)s))"
COUNT_PENDING = "SELECT count(*) FROM confirmation_pending WHERE owner_user IS NOT DISTINCT FROM %(owner)s"
INSERT_PENDING = """
INSERT INTO confirmation_pending (address, watch_id, owner_user, expires_at)
SELECT lower(email), watch_id, owner_user, confirm_expires FROM watch WHERE watch_id = %(watch_id)s
ON CONFLICT (address) DO NOTHING
RETURNING address
"""
RELEASE_PENDING = "DELETE FROM confirmation_pending WHERE watch_id = %(watch_id)s"
SELECT_WATCHES = f"""SELECT {WATCH_COLUMNS} FROM watch WHERE (%(owner)s::text IS NULL OR owner_user = %(owner)s)
    ORDER BY name, coalesce(owner_user, owner_email)"""
SELECT_WATCH = f"SELECT {WATCH_COLUMNS} FROM watch WHERE watch_id = %(watch_id)s"
# The owner, when given, is a user id or (for address-owned watches) an address, without case.
SELECT_WATCHES_NAMED = f"""SELECT {WATCH_COLUMNS} FROM watch WHERE name = %(name)s
    AND (%(owner)s::text IS NULL OR owner_user = %(owner)s OR lower(owner_email) = lower(%(owner)s))
    ORDER BY coalesce(owner_user, owner_email)"""
# Subscribers are "user:<id>" or "email:<address>": a user id may look like an address.
SELECT_ACTIVE = f"""SELECT {WATCH_COLUMNS}, created_at,
        CASE WHEN owner_user IS NOT NULL THEN 'user:' || owner_user ELSE 'email:' || owner_email END
    FROM watch
    WHERE enabled AND confirmed_at IS NOT NULL AND kind = ANY(%(kinds)s) ORDER BY created_at"""
SELECT_CONFIRM_HASH = """SELECT confirm_hash, confirmed_at, confirm_expires <= now()
    FROM watch WHERE watch_id = %(watch_id)s FOR UPDATE"""
# The hash stays: every later click of the link is checked against it too.
CONFIRM = "UPDATE watch SET confirmed_at = now() WHERE watch_id = %(watch_id)s"
DELETE_WATCH = "DELETE FROM watch WHERE watch_id = %(watch_id)s"
DISABLE_WATCH = """UPDATE watch SET enabled = false, disabled_reason = %(reason)s WHERE watch_id = %(watch_id)s"""
SELECT_SECRET = "SELECT webhook_secret FROM watch WHERE watch_id = %(watch_id)s"
FILTER_FIELDS = ("event_types", "cameras", "meta", "near", "silent_hours", "notify_on_join")


@dataclasses.dataclass(frozen=True)
class ActiveWatch:
    """A watch the matcher applies: since when (earlier imports are not its business), for whom."""
    watch: Watch
    created_at: _dt.datetime
    subscriber: str


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _confirm_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


# Compared against when there is no hash to compare (an unknown id, a watch that never had a
# link), so every answer costs the same comparison.
_NO_HASH = hashlib.sha256(b"meteorpi: no confirmation link").digest()


# What the model is given in place of a stored address that the address rule now refuses (one
# taken before the rule was made strict, meteorpi_model.watch.email_refusal); the stored
# address is put back on the Watch read. Such rows must still be listed, deleted and matched
# without an error: migration 008 disabled their watches, and notify.send_mail never mails an
# address the rule refuses, so the address is only ever shown.
_STAND_IN_ADDRESS = "stored.address@stand-in.invalid"


def watch_from_row(row) -> Watch:
    """The Watch a ``WATCH_COLUMNS`` row holds, read by the model's rules except the address
    rule (see ``_STAND_IN_ADDRESS``): a row stored under older rules is still read."""
    (watch_id, name, owner_user, owner_email, kind, webhook_url, email, filters, max_per_hour,
     muted_until, digest, confirmed, enabled, disabled_reason) = row[:14]
    stand_in = email is not None and email_refusal(email) is not None
    wire = {"name": name, "kind": kind, "webhook": webhook_url, "email": _STAND_IN_ADDRESS if stand_in else email,
            "max_per_hour": max_per_hour, "digest": digest, "watch_id": watch_id.hex,
            "owner": owner_user or owner_email, "confirmed": confirmed, "enabled": enabled,
            "disabled_reason": disabled_reason, **{k: v for k, v in filters.items() if k in FILTER_FIELDS}}
    watch = Watch.from_dict({k: v for k, v in wire.items() if v is not None}, "watch")
    watch.muted_until = muted_until
    watch.email = email
    return watch


class WatchStore:
    """Mixed into MeteorDatabase: creating, reading and removing watches."""

    @retry_stale
    def create_watch(self, watch: Watch, owner_user: str | None, *, confirmed_by_operator: bool = False,
                     limit_pending: bool = True) -> tuple[Watch, str | None, str | None]:
        """Store ``watch`` for ``owner_user`` (None: owned by its e-mail address).

        An e-mail watch starts unconfirmed, whoever owns it, unless ``confirmed_by_operator``
        (the CLI's ``--confirmed``: the operator vouches that the address agreed). One waiting
        link per address is always enforced; ``limit_pending`` adds the caps on links asked for
        anonymously or by one user (False for the operator's CLI). TooManyPending when refused.

        Returns (the stored watch, the webhook signing secret or None, the e-mail confirmation
        secret or None): both secrets are for the caller to hand on once, never logged. The
        caller mails the link; if it cannot, ``withdraw_watch`` undoes this.
        """
        watch = Watch.from_dict(watch.as_dict(), "watch")  # the same rules as wire input
        if owner_user is None and watch.email is None:
            raise ValidationError("watch.email", "a watch without an archive user must be owned by an e-mail address")
        webhook_secret = new_webhook_secret() if watch.webhook else None
        confirm_secret = secrets.token_urlsafe(32) if watch.email and not confirmed_by_operator else None
        notify = self.config.notify
        wire = watch.as_dict()
        params = {"watch_id": watch.watch_id, "name": watch.name, "owner_user": owner_user,
                  "owner_email": watch.email if owner_user is None else None, "kind": watch.kind,
                  "webhook_url": watch.webhook, "webhook_secret": webhook_secret, "email": watch.email,
                  "filters": psycopg2.extras.Json({k: wire[k] for k in FILTER_FIELDS if k in wire}),
                  "max_per_hour": watch.max_per_hour, "muted_until": watch.muted_until,
                  "digest": watch.digest,
                  "confirm_hash": _confirm_hash(confirm_secret) if confirm_secret else None,
                  "confirm_within": _dt.timedelta(hours=notify.confirm_hours)}
        try:
            with self.transaction() as cur:
                self._purge_unconfirmed(cur)
                if confirm_secret and limit_pending:
                    self._check_pending_cap(cur, owner_user)
                cur.execute(INSERT_WATCH, params)
                if confirm_secret:
                    cur.execute(INSERT_PENDING, {"watch_id": watch.watch_id})
                    if cur.fetchone() is None:
                        raise TooManyPending(
                            f"watch.email: a confirmation link mailed to {watch.email} is waiting to be opened; "
                            f"one may wait per address: open it, or try again after it expires "
                            f"(links last {notify.confirm_hours:g} hours)")
                cur.execute(SELECT_WATCH, {"watch_id": watch.watch_id})
                stored = watch_from_row(cur.fetchone())
        except psycopg2.errors.UniqueViolation as e:
            # Only the owner's own names can clash (the indexes are per owner), so this tells
            # the caller nothing about anybody else's watches.
            whose = "you have" if owner_user is not None else f"{watch.email} has"
            raise Conflict(f"watch.name: {whose} a watch named {watch.name!r} already", e) from e
        except psycopg2.errors.ForeignKeyViolation as e:
            raise NotFound(f"no user {owner_user!r}", e) from e
        return stored, webhook_secret, confirm_secret

    def _check_pending_cap(self, cur, owner_user: str | None) -> None:
        """Refuse one more waiting link for this asker (anonymous or one user) over its cap."""
        notify = self.config.notify
        cap = notify.max_pending_anonymous if owner_user is None else notify.max_pending_per_user
        cur.execute(LOCK_PENDING, {"who": "user:" + owner_user if owner_user else "anonymous"})
        cur.execute(COUNT_PENDING, {"owner": owner_user})
        if cur.fetchone()[0] >= cap:
            if owner_user is None:
                raise TooManyPending(f"watch.email: {cap} confirmation links asked for without login are "
                                     f"waiting to be opened, as many as this archive allows; try again later")
            raise TooManyPending(f"watch.email: you have {cap} confirmation links waiting to be opened, as many "
                                 f"as this archive allows; wait until they are opened or expire")

    def _purge_unconfirmed(self, cur) -> int:
        cur.execute(PURGE_UNCONFIRMED)
        removed = cur.rowcount
        cur.execute(PURGE_PENDING)
        return removed

    @retry_stale
    def purge_unconfirmed(self) -> int:
        """Remove watches whose link expired unopened (and the per-address holds past their
        time); how many watches went. The notifier calls this now and then, every add too."""
        with self.transaction() as cur:
            return self._purge_unconfirmed(cur)

    @retry_stale
    def withdraw_watch(self, watch_id) -> None:
        """Undo ``create_watch`` when its confirmation mail could not be sent: the watch and the
        address's hold both go (nothing was mailed, so the address may be asked again)."""
        with self.transaction() as cur:
            cur.execute(RELEASE_PENDING, {"watch_id": as_uuid(watch_id)})
            cur.execute(DELETE_WATCH, {"watch_id": as_uuid(watch_id)})

    @retry_stale
    def confirm_watch(self, watch_id, secret: str) -> bool:
        """Confirm an e-mail watch with the secret of its link; False when the link is not one.

        The secret is compared (in constant time) on every call, also for a watch confirmed
        already: a wrong secret, an unknown id and a confirmed watch with a wrong secret are all
        False, so the answer tells nobody whether an id exists. The right secret a second time
        is True and changes nothing.
        """
        with self.transaction() as cur:
            cur.execute(SELECT_CONFIRM_HASH, {"watch_id": as_uuid(watch_id)})
            row = cur.fetchone()
            stored = bytes(row[0]) if row is not None and row[0] is not None else _NO_HASH
            matches = hmac.compare_digest(stored, _confirm_hash(secret))
            if row is None or row[0] is None or not matches:
                return False
            if row[1] is None:
                if row[2]:
                    return False  # expired unopened: purge_unconfirmed removes it
                cur.execute(CONFIRM, {"watch_id": as_uuid(watch_id)})
                cur.execute(RELEASE_PENDING, {"watch_id": as_uuid(watch_id)})  # the address may be asked again
            return True

    @retry_stale
    def get_watches(self, owner_user: str | None = None) -> list[Watch]:
        """Every watch (of ``owner_user`` when given), by name."""
        with self.transaction() as cur:
            cur.execute(SELECT_WATCHES, {"owner": owner_user})
            return [watch_from_row(row) for row in cur.fetchall()]

    @retry_stale
    def get_watch(self, watch_id) -> Watch | None:
        with self.transaction() as cur:
            cur.execute(SELECT_WATCH, {"watch_id": as_uuid(watch_id)})
            row = cur.fetchone()
        return watch_from_row(row) if row else None

    @retry_stale
    def watches_named(self, name: str, owner: str | None = None) -> list[Watch]:
        """Every watch called ``name`` (of ``owner``, a user id or an address, when given):
        names are unique per owner only, so there may be several."""
        with self.transaction() as cur:
            cur.execute(SELECT_WATCHES_NAMED, {"name": name, "owner": owner})
            return [watch_from_row(row) for row in cur.fetchall()]

    def watch_named(self, name: str, owner: str | None = None) -> Watch:
        """The one watch called ``name`` (of ``owner``); NotFound when there is none, Conflict
        naming the owners when several owners use the name (the caller must say which)."""
        found = self.watches_named(name, owner)
        if not found:
            raise NotFound(f"no watch named {name!r}" + (f" owned by {owner!r}" if owner else ""))
        if len(found) > 1:
            owners = ", ".join(str(w.owner) for w in found)
            raise Conflict(f"{len(found)} watches are named {name!r} (owners: {owners}); "
                           f"give the owner or the watch's id")
        return found[0]

    @retry_stale
    def delete_watch(self, watch_id) -> bool:
        """Remove a watch with its notifications and deliveries; False when there was none."""
        with self.transaction() as cur:
            cur.execute(DELETE_WATCH, {"watch_id": as_uuid(watch_id)})
            return cur.rowcount == 1

    @retry_stale
    def disable_watch(self, watch_id, reason: str) -> None:
        with self.transaction() as cur:
            cur.execute(DISABLE_WATCH, {"watch_id": as_uuid(watch_id), "reason": reason})

    def _active_watches(self, cur, kinds: Iterable[str]) -> list["ActiveWatch"]:
        """Every confirmed, enabled watch of ``kinds``, oldest first."""
        cur.execute(SELECT_ACTIVE, {"kinds": list(kinds)})
        return [ActiveWatch(watch_from_row(row), row[14], row[15]) for row in cur.fetchall()]

    def _webhook_secret(self, cur, watch_id: uuid.UUID) -> str | None:
        cur.execute(SELECT_SECRET, {"watch_id": watch_id})
        row = cur.fetchone()
        return row[0] if row else None
