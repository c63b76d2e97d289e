"""The notifier: matching (feed -> notifications) and delivery (queue -> webhooks and e-mail),
off the request path. No Flask here: ``meteorpi notify`` runs it alone, ``meteorpi serve`` in
one background process beside the web workers.

One thread does both, woken by NOTIFY on ``meteorpi_feed`` (something was imported) and
``meteorpi_delivery`` (something was queued), and every ``notify.poll_seconds`` regardless.
Correctness never depends on there being one notifier: the matcher's cursor is locked while it
works and the queue hands each delivery to one deliverer (meteorpi_db.notifications).

Webhooks are signed as Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) with the endpoint's
secret, by the ``standardwebhooks`` package. Requests have bounded timeouts, follow no
redirects and, unless ``notify.allow_private_targets``, go only to public addresses and through
no proxy: checked when a watch is added and again on the address each connection is made to
(outbound.py).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import select
import signal
import smtplib
import socket
import threading
import time
import urllib.parse
from email.headerregistry import Address
from email.message import EmailMessage

import psycopg2
import requests
from standardwebhooks import Webhook

from meteorpi_db import Config, MeteorDatabase
from meteorpi_db.config import NotifyConfig
from meteorpi_db.matcher import MatchSettings
from meteorpi_db.notifications import Claimed
from meteorpi_model import MeteorpiError
from meteorpi_model.logtext import escape_log_text
from meteorpi_model.watch import Watch, email_refusal

from .outbound import TargetRefused, check_host_name, resolve_checked, webhook_session

log = logging.getLogger("meteorpi.notify")
# When attempt n+1 goes after attempt n failed (attempt 1 goes at once): 5 s, 5 min, 30 min,
# 2 h, 5 h, 10 h, then a day.
RETRY_SECONDS = (5, 300, 1800, 7200, 18000, 36000, 86400)
JITTER = 0.2
CHANNELS = ("meteorpi_feed", "meteorpi_delivery")
MAX_PAYLOAD_BYTES = 20_000
USER_AGENT = "meteorpi-notify/1"


def retry_delay(attempts: int, scale: float = 1.0) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones, with jitter."""
    base = RETRY_SECONDS[min(attempts, len(RETRY_SECONDS)) - 1]
    return base * scale * random.uniform(1 - JITTER, 1 + JITTER)


def check_target(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s), whose host is of a form no resolver takes
    (``outbound.host_name_refusal``: checked before anything resolves it, private targets
    allowed or not), or whose host resolves to an address the rule refuses
    (``outbound.address_refusal``). This is the early answer (a watch being added, a delivery
    about to go); each delivery's connection is held to the same rule again, on the address it
    connects to, since a name can answer differently the second time (``outbound.webhook_session``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port out of range
    except ValueError as e:
        raise TargetRefused(f"webhook: not a usable URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"webhook: expected an http(s) URL, got {url[:80]!r}")
    check_host_name(parts.hostname)
    if allow_private:
        return
    try:
        resolve_checked(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError, ValueError) as e:
        raise TargetRefused(f"webhook: cannot resolve {parts.hostname!r} ({e})") from None


def match_settings(config: NotifyConfig) -> MatchSettings:
    return MatchSettings(window_seconds=config.coincidence_seconds, max_km=config.coincidence_km,
                         rate_window_seconds=config.rate_window_seconds, base_url=config.base_url.rstrip("/"))


def signed_request(claimed: Claimed, body: str, now: _dt.datetime | None = None) -> dict[str, str]:
    """The headers of a Standard Webhooks request for ``body``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    signature = Webhook(claimed.webhook_secret).sign(claimed.message_id, now, body)
    return {"webhook-id": claimed.message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature, "Content-Type": "application/json", "User-Agent": USER_AGENT}


def payload_body(payload: dict) -> str:
    """The JSON body; a payload that would pass 20 kB loses its member lists (ids and links stay)."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    if len(body.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        data = payload.get("data", {})
        for value in data.values():
            if isinstance(value, dict):
                value.pop("members", None)
        if data.pop("notifications", None) is not None:
            data["more"] = data.get("count", 0)
        data["truncated"] = True
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    return body


class Notifier:
    """Matching and delivery for one process; ``run(stop)`` until ``stop`` is set."""

    def __init__(self, db: MeteorDatabase, config: NotifyConfig):
        self.db, self.config = db, config
        self.settings = match_settings(config)
        self.http: requests.Session | None = None  # made by _session, for the current allow_private_targets
        self._http_allows_private = False
        self._listen = None
        self._next_absence = 0.0

    # -- one pass ------------------------------------------------------------------------------
    def step(self) -> tuple[int, int]:
        """Match everything new, then deliver everything due: (notifications, deliveries)."""
        notified = 0
        for _ in range(1000):
            result = self.db.match_round(self.settings)
            notified += result.notifications
            if not result.more:
                break
        if time.monotonic() >= self._next_absence:
            notified += self.db.match_absences(self.settings)
            self.db.purge_unconfirmed()  # links that expired unopened: their watches go
            self._next_absence = time.monotonic() + self.config.absence_check_seconds
        delivered = 0
        while True:
            claimed = self.db.claim_deliveries(limit=10, lease_seconds=self._lease_seconds())
            if not claimed:
                return notified, delivered
            for c in claimed:
                self.deliver(c)
                delivered += 1

    def _lease_seconds(self) -> float:
        # Long enough for ten sends at their longest, plus the SMTP session's own waits.
        return 10 * (self.config.connect_timeout_seconds + self.config.read_timeout_seconds) + 30

    def deliver(self, c: Claimed) -> None:
        """Send one claimed delivery and record the attempt."""
        started = time.monotonic()
        if not c.enabled:
            self.db.finish_delivery(c, "cancelled", None, "the watch is disabled or not confirmed", 0)
            return
        if c.kind == "digest" and not c.payload["data"]["count"]:
            self.db.finish_delivery(c, "delivered", None, None, 0)
            return
        try:
            if c.webhook_url:
                status = self._post(c)
            else:
                status = self._mail(c)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except TargetRefused as e:
            self.db.finish_delivery(c, "failed", None, str(e), _ms(started))
            return
        except PermanentFailure as e:  # a 5xx answer, or an address the rule refuses: no retry can help
            log.warning("watch %s: delivery %d not sent, given up: %s", c.watch_name, c.delivery_id, e)
            self.db.finish_delivery(c, "failed", e.status, str(e), _ms(started))
            return
        except (requests.RequestException, OSError, smtplib.SMTPException) as e:
            status, error = None, f"{type(e).__name__}: {e}"
        elapsed = _ms(started)
        if error is None:
            self.db.finish_delivery(c, "delivered", status, None, elapsed)
        elif status == 410:
            log.warning("watch %s: endpoint answered 410 Gone; disabled", c.watch_name)
            self.db.finish_delivery(c, "gone", status, error, elapsed)
        elif c.attempts >= self.config.max_attempts:
            # The error quotes the watch's URL, which its owner wrote: escaped.
            log.warning("watch %s: delivery %d failed %d times; given up (%s)", c.watch_name,
                        c.delivery_id, c.attempts, escape_log_text(error))
            self.db.finish_delivery(c, "failed", status, error, elapsed)
        else:
            self.db.finish_delivery(c, "retry", status, error, elapsed,
                                    retry_in=retry_delay(c.attempts, self.config.retry_scale))

    def _post(self, c: Claimed) -> int:
        check_target(c.webhook_url, self.config.allow_private_targets)
        body = payload_body(c.payload)
        response = self._session().post(
            c.webhook_url, data=body.encode("utf-8"), headers=signed_request(c, body),
            timeout=(self.config.connect_timeout_seconds, self.config.read_timeout_seconds),
            allow_redirects=False, stream=True)
        response.close()  # the answer's body is not ours to read
        return response.status_code

    def _session(self) -> requests.Session:
        """The webhook session (``outbound.webhook_session``): its connections hold the address
        rule unless notify.allow_private_targets, which is read per delivery as before, so the
        session is remade when that setting changes."""
        allow = self.config.allow_private_targets
        if self.http is None or self._http_allows_private != allow:
            if self.http is not None:
                self.http.close()
            self.http, self._http_allows_private = webhook_session(allow), allow
        return self.http

    def _mail(self, c: Claimed) -> int:
        data = c.payload.get("data", {})
        message = mail_to(self.config, c.email,
                          f"[meteorpi] {c.watch_name}: {c.payload.get('type', 'notification').split('.')[-1]}")
        message["Message-ID"] = f"<{c.message_id}@meteorpi>"
        message.set_content(_mail_text(c.payload, data))
        send_mail(self.config, message, c.email)
        return 250

    # -- running -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; database outages are waited out, never fatal."""
        while not stop.is_set():
            try:
                self._ensure_listening()
                self.step()
            except MeteorpiError as e:
                log.warning("notifier: %s; trying again shortly", e)
                self._close_listen()
                stop.wait(min(self.config.poll_seconds, 5.0))
                continue
            except Exception:  # noqa: BLE001 - a background service logs and carries on
                log.exception("notifier: unexpected error; trying again shortly")
                self._close_listen()
                stop.wait(min(self.config.poll_seconds, 5.0))
                continue
            self._wait(stop)
        self._close_listen()

    def _ensure_listening(self) -> None:
        if self._listen is not None and not self._listen.closed:
            return
        try:
            conn = psycopg2.connect(self.db.url, connect_timeout=10, application_name="meteorpi-notify")
        except psycopg2.OperationalError as e:
            raise StorageUnreachable(f"database unreachable: {str(e).strip().splitlines()[0]}") from e
        conn.autocommit = True
        with conn.cursor() as cur:
            for channel in CHANNELS:
                cur.execute(f"LISTEN {channel}")
        self._listen = conn

    def _wait(self, stop: threading.Event) -> None:
        conn = self._listen
        deadline = time.monotonic() + self.config.poll_seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                ready, _, _ = select.select([conn], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
                if ready:
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        return
            except (psycopg2.Error, OSError, ValueError):
                self._close_listen()
                return

    def _close_listen(self) -> None:
        if self._listen is not None:
            try:
                self._listen.close()
            except psycopg2.Error:
                pass
            self._listen = None


class StorageUnreachable(MeteorpiError):
    """The LISTEN connection could not be opened."""


class PermanentFailure(MeteorpiError):
    """A delivery that no retry can fix: the mail server answered 5xx (to the address, the
    sender, the login or the message).

    Sending mail fails in two ways, and every caller of ``send_mail`` handles both:
    ``PermanentFailure`` (this, and ``RecipientRefused`` for the address itself), and OSError
    for whatever may pass (``smtplib.SMTPException`` is an OSError: a 4xx answer, a dropped
    connection; and so are a refused connection, an unknown host and a timeout)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RecipientRefused(PermanentFailure):
    """The mail server refused the address itself (a 5xx answer to ``RCPT TO``): the person
    who gave it is told so, since only another address can help."""

    def __init__(self, address: str, status: int):
        super().__init__(f"the mail server refused {address} ({status})", status)
        self.address = address


def mailable(address: str) -> str:
    """``address``, if the model's address rule takes it; PermanentFailure otherwise.

    Every mail goes through here (``mail_to`` and ``send_mail``), so an address the rule
    refuses — one stored before the rule was made strict, whose watch migration 008 disabled,
    or one put in the database by hand — is never mailed, even with an explicit envelope:
    smtplib reads each envelope address with the e-mail parser too (``smtplib.quoteaddr``), so
    ``a(target@example.org`` would still go to ``<a>``. Refused, not sent: the delivery fails
    for good with this reason (``meteorpi watch log``) and the notifier logs it."""
    reason = email_refusal(address)
    if reason:
        raise PermanentFailure(f"not mailed: {address[:80]!r} is not an address this archive mails ({reason})")
    return address


def mail_to(config: NotifyConfig, address: str, subject: str) -> EmailMessage:
    """A message from ``notify.smtp_from`` to ``address`` alone. The To header is built from
    the address as an ``Address`` object, never pasted in as text: a header is parsed again by
    whoever reads it (smtplib's ``send_message`` included), and text could say another address."""
    message = EmailMessage()
    message["From"] = config.smtp_from
    message["To"] = Address(addr_spec=mailable(address))
    message["Subject"] = subject
    return message


def send_mail(config: NotifyConfig, message: EmailMessage, recipient: str) -> None:
    """Send ``message`` to ``recipient`` through the configured SMTP server: PermanentFailure
    (RecipientRefused when it is the address) for 5xx answers, OSError for what may pass.

    The envelope's one recipient is ``recipient``, given explicitly: without it smtplib takes
    the recipients from the To, Cc and Bcc headers as its parser reads them, which is how
    ``x1:target@example.org`` once reached target@example.org. It must be an address the rule
    takes (``mailable``)."""
    mailable(recipient)
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port,
                          timeout=config.connect_timeout_seconds + config.read_timeout_seconds) as smtp:
            if config.smtp_starttls:
                smtp.starttls()
            if config.smtp_user:
                smtp.login(config.smtp_user, config.smtp_password or "")
            smtp.send_message(message, to_addrs=[recipient])
    except smtplib.SMTPRecipientsRefused as e:
        address, (code, _text) = next(iter(e.recipients.items()))
        if code >= 500:
            raise RecipientRefused(address, code) from None
        raise
    except smtplib.SMTPResponseException as e:
        if e.smtp_code >= 500:
            raise PermanentFailure(f"the mail server refused the message ({e.smtp_code})", e.smtp_code) from None
        raise


def confirm_link(base_url: str, watch, secret: str) -> str:
    """The link an e-mail owner opens to confirm ``watch`` (it carries the secret)."""
    return f"{base_url.rstrip('/')}/watches/{watch.watch_id.hex}/confirm?secret={secret}"


def send_confirmation(config: NotifyConfig, address: str, watch_name: str, link: str) -> None:
    """The e-mail that asks an address to confirm a watch (the link carries the secret).

    It is the only mail an address gets before it agrees, whoever added the watch; the callers
    go through ``MeteorDatabase.create_watch``, which allows one waiting link per address and
    caps how many wait, so this cannot be used to flood anybody."""
    message = mail_to(config, address, f"[meteorpi] confirm your watch {watch_name}")
    message.set_content(f"Someone asked to be told of meteors at this address (watch {watch_name}).\n"
                        f"To confirm, open within {config.confirm_hours:g} hours:\n\n  {link}\n\n"
                        f"If it was not you, ignore this message: nothing is sent until the link is "
                        f"opened, and the watch is removed if it is not.\n")
    send_mail(config, message, address)


def ask_confirmation(db: MeteorDatabase, config: NotifyConfig, stored: Watch, secret: str) -> None:
    """Mail the confirmation link of ``stored``, which ``create_watch`` has just added with
    ``secret``; if the link does not go, for whatever reason, withdraw the watch before the
    error goes on.

    An e-mail watch is only worth keeping once its link is on its way: left stored, it would
    wait unconfirmed and hold its address (one link may wait per address) for
    ``notify.confirm_hours`` although nobody was asked. So any failure — a lasting refusal
    (RecipientRefused, PermanentFailure), a passing one or an unreachable server (OSError), or
    anything else, an interrupt included — removes the watch and the address's hold first. The
    callers (the API, the watches page, ``meteorpi watch add``) then say why in their own way
    (the server logs what only the operator can fix)."""
    try:
        send_confirmation(config, stored.email, stored.name, confirm_link(config.base_url, stored, secret))
    except BaseException:
        db.withdraw_watch(stored.watch_id)
        raise


def _mail_text(payload: dict, data: dict) -> str:
    lines = [f"{payload.get('type')} at {payload.get('timestamp')}", ""]
    for value in data.values():
        if isinstance(value, dict) and "url" in value:
            lines.append(f"  {value['url']}")
    lines += ["", json.dumps(payload, indent=2, sort_keys=True)]
    return "\n".join(lines)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def run_forever(config: Config, watch_parent: bool = False) -> None:
    """The notifier's process: until SIGTERM/SIGINT (or, with ``watch_parent``, until the
    process that started it is gone)."""
    logging.basicConfig(level=config.logging.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    parent = os.getppid()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if watch_parent:
        def orphaned():
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    stop.set()
        threading.Thread(target=orphaned, daemon=True).start()
    db = None
    while db is None and not stop.is_set():
        try:
            db = MeteorDatabase(config=config)
        except MeteorpiError as e:  # the database is not up yet: wait for it
            log.warning("notifier: %s; trying again in 5 s", e)
            stop.wait(5.0)
    if db is None:
        return
    try:
        log.info("notifier running (matching and delivery)")
        Notifier(db, config.notify).run(stop)
    finally:
        db.close()


if __name__ == "__main__":  # started by `meteorpi serve` (serving.start_notifier)
    import sys

    from meteorpi_db.config import config_from_dict
    run_forever(config_from_dict(json.loads(sys.stdin.read())), watch_parent=True)
