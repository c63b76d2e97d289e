"""Notifications and their delivery queue, in PostgreSQL.

A notification is written at most once per subscriber and group key (``UNIQUE(subscriber,
group_key)``, insert-or-nothing), in the matcher's transaction. Each gets a delivery row; a
watch over its hourly rate (or one that wants a digest) gets its deliveries ``held`` instead,
and one ``digest`` delivery per watch gathers them later.

Deliverers claim due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, in a short transaction
— no transaction stays open while a webhook answers (an open transaction would hold back every
feed reader's snapshot) — and record the outcome with every attempt. Several processes may
deliver: a claimed row is not due to anyone else until its lease ends, so none is sent twice
unless a deliverer dies between sending and recording (then the receiver sees the same
``webhook-id`` again, as Standard Webhooks expects).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from typing import Any

import psycopg2.extras

from meteorpi_model import as_uuid, instant_to_ms
from meteorpi_model.watch import Watch

from .errors import Conflict, NotFound
from .pool import retry_stale
from .watches import ActiveWatch

INSERT_NOTIFICATION = """
INSERT INTO notification (notification_id, subscriber, group_key, watch_id, kind, payload)
VALUES (%(notification_id)s, %(subscriber)s, %(group_key)s, %(watch_id)s, %(kind)s, %(payload)s)
ON CONFLICT (subscriber, group_key) DO NOTHING
RETURNING notification_id
"""
COUNT_RECENT = """
SELECT count(*) FROM delivery
WHERE watch_id = %(watch_id)s AND kind = 'notification' AND state NOT IN ('held', 'digested', 'cancelled')
  AND created_at > now() - %(window)s
"""
INSERT_DELIVERY = """
INSERT INTO delivery (watch_id, notification_id, kind, state, due_at)
VALUES (%(watch_id)s, %(notification_id)s, %(kind)s, %(state)s, coalesce(%(due_at)s, now()))
RETURNING delivery_id
"""
INSERT_DIGEST = """
INSERT INTO delivery (watch_id, kind, due_at) VALUES (%(watch_id)s, 'digest', %(due_at)s)
ON CONFLICT (watch_id) WHERE kind = 'digest' AND state = 'pending' DO NOTHING
"""
CLAIM = """
UPDATE delivery d SET lease_until = now() + %(lease)s, attempts = d.attempts + 1
FROM (SELECT delivery_id FROM delivery
      WHERE state = 'pending' AND due_at <= now() AND (lease_until IS NULL OR lease_until < now())
      ORDER BY due_at, delivery_id
      FOR UPDATE SKIP LOCKED
      LIMIT %(limit)s) due, watch w
WHERE d.delivery_id = due.delivery_id AND w.watch_id = d.watch_id
RETURNING d.delivery_id, d.kind, d.attempts, d.notification_id, w.watch_id, w.name, w.kind,
          w.webhook_url, w.webhook_secret, w.email, w.enabled AND w.confirmed_at IS NOT NULL
"""
SELECT_PAYLOAD = "SELECT payload, created_at FROM notification WHERE notification_id = %(notification_id)s"
SELECT_HELD = """
SELECT d.delivery_id, n.notification_id, n.kind, n.payload->'data'
FROM delivery d JOIN notification n USING (notification_id)
WHERE d.watch_id = %(watch_id)s AND d.state = 'held'
ORDER BY d.delivery_id
"""
LOG_ATTEMPT = """
INSERT INTO delivery_attempt (delivery_id, status_code, error, duration_ms)
VALUES (%(delivery_id)s, %(status_code)s, %(error)s, %(duration_ms)s)
"""
DELIVERED = """
UPDATE delivery SET state = 'delivered', delivered_at = now(), lease_until = NULL, last_error = NULL
WHERE delivery_id = %(delivery_id)s
"""
DIGESTED = """
UPDATE delivery SET state = 'digested' WHERE watch_id = %(watch_id)s AND state = 'held'
  AND delivery_id <= %(upto)s
"""
RETRY = """
UPDATE delivery SET due_at = now() + %(delay)s, lease_until = NULL, last_error = %(error)s
WHERE delivery_id = %(delivery_id)s
"""
GIVE_UP = """
UPDATE delivery SET state = %(state)s, lease_until = NULL, last_error = %(error)s WHERE delivery_id = %(delivery_id)s
"""
CANCEL_WATCH = """
UPDATE delivery SET state = 'cancelled', last_error = %(error)s
WHERE watch_id = %(watch_id)s AND state IN ('pending', 'held')
"""
SELECT_LOG = """
SELECT d.delivery_id, w.name, d.kind, d.state, d.attempts, d.created_at, d.delivered_at, d.due_at,
       d.last_error, d.notification_id,
       (SELECT a.status_code FROM delivery_attempt a WHERE a.delivery_id = d.delivery_id
        ORDER BY a.attempt_id DESC LIMIT 1)
FROM delivery d JOIN watch w USING (watch_id)
WHERE (%(watch_id)s::uuid IS NULL OR d.watch_id = %(watch_id)s)
ORDER BY d.delivery_id DESC
LIMIT %(limit)s
"""
# The newest delivery of each of some watches: one step of delivery_watch_created per watch.
SELECT_LATEST_PER_WATCH = """
SELECT w.watch_id, d.delivery_id, w.name, d.kind, d.state, d.attempts, d.created_at, d.delivered_at, d.due_at,
       d.last_error, d.notification_id,
       (SELECT a.status_code FROM delivery_attempt a WHERE a.delivery_id = d.delivery_id
        ORDER BY a.attempt_id DESC LIMIT 1)
FROM watch w
CROSS JOIN LATERAL (
    SELECT * FROM delivery d WHERE d.watch_id = w.watch_id
    ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT 1) d
WHERE w.watch_id = ANY(%(ids)s)
"""
SELECT_DELIVERY = "SELECT watch_id, notification_id, kind FROM delivery WHERE delivery_id = %(delivery_id)s"
PAYLOAD_ITEMS = 50  # a digest lists this many notifications, then a count: payloads stay < 20 kB


@dataclasses.dataclass
class Claimed:
    """A delivery a deliverer holds the lease of, with what it needs to send it."""
    delivery_id: int
    kind: str
    attempts: int
    notification_id: uuid.UUID | None
    watch_id: uuid.UUID
    watch_name: str
    watch_kind: str
    webhook_url: str | None
    webhook_secret: str | None
    email: str | None
    enabled: bool  # and confirmed: a delivery for a disabled or unconfirmed watch is cancelled
    message_id: str = ""
    payload: dict = dataclasses.field(default_factory=dict)
    held_upto: int | None = None  # a digest: the held deliveries it covers


@dataclasses.dataclass
class DeliveryLogEntry:
    delivery_id: int
    watch: str
    kind: str
    state: str
    attempts: int
    created_at: _dt.datetime
    delivered_at: _dt.datetime | None
    due_at: _dt.datetime
    last_error: str | None
    notification_id: uuid.UUID | None
    last_status: int | None

    def as_dict(self) -> dict:
        return {"delivery_id": self.delivery_id, "watch": self.watch, "kind": self.kind, "state": self.state,
                "attempts": self.attempts, "created_at": instant_to_ms(self.created_at),
                "delivered_at": instant_to_ms(self.delivered_at) if self.delivered_at else None,
                "due_at": instant_to_ms(self.due_at), "last_error": self.last_error,
                "last_status": self.last_status,
                "notification_id": self.notification_id.hex if self.notification_id else None}


def next_noon(now: _dt.datetime) -> _dt.datetime:
    """When a nightly digest goes: the next 12:00 UTC, after the night is over."""
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    return noon if noon > now else noon + _dt.timedelta(days=1)


class NotificationStore:
    """Mixed into MeteorDatabase: writing notifications, and the delivery queue."""

    def _notify(self, cur, active: "ActiveWatch", group_key: str, kind: str, data: dict, rate: "RateBook") -> bool:
        """One notification for the watch's subscriber about ``group_key``, unless they have
        one already; queued, or held for a digest when over the rate. Whether one was written."""
        watch, now = active.watch, rate.now
        if watch.muted_until is not None and watch.muted_until > now:
            return False
        notification_id = uuid.uuid4()
        payload = {"type": f"meteorpi.{kind}", "timestamp": now.isoformat(),
                   "data": {"watch": {"id": watch.watch_id.hex, "name": watch.name}, **data}}
        cur.execute(INSERT_NOTIFICATION, {"notification_id": notification_id, "subscriber": active.subscriber,
                                          "group_key": group_key, "watch_id": watch.watch_id, "kind": kind,
                                          "payload": psycopg2.extras.Json(payload)})
        if cur.fetchone() is None:
            return False
        held = watch.digest or not rate.take(cur, watch)
        cur.execute(INSERT_DELIVERY, {"watch_id": watch.watch_id, "notification_id": notification_id,
                                      "kind": "notification", "state": "held" if held else "pending",
                                      "due_at": None})
        if held:
            due = next_noon(now) if watch.digest else now + rate.window
            cur.execute(INSERT_DIGEST, {"watch_id": watch.watch_id, "due_at": due})
        return True

    @retry_stale
    def claim_deliveries(self, limit: int = 10, lease_seconds: float = 60.0) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for ``lease_seconds``; none is given to two callers."""
        with self.transaction() as cur:
            cur.execute(CLAIM, {"limit": limit, "lease": _dt.timedelta(seconds=lease_seconds)})
            claimed = [Claimed(*row) for row in cur.fetchall()]
            for c in claimed:
                self._fill_payload(cur, c)
        return claimed

    def _fill_payload(self, cur, c: Claimed) -> None:
        if c.notification_id is not None:
            cur.execute(SELECT_PAYLOAD, {"notification_id": c.notification_id})
            c.payload = cur.fetchone()[0]
            c.message_id = f"msg_{c.notification_id.hex}"
            return
        c.message_id = f"msg_digest_{c.delivery_id}"
        cur.execute(SELECT_HELD, {"watch_id": c.watch_id})
        rows = cur.fetchall()
        c.held_upto = rows[-1][0] if rows else 0
        c.payload = {"type": "meteorpi.digest", "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                     "data": {"watch": {"id": c.watch_id.hex, "name": c.watch_name}, "count": len(rows),
                              "notifications": [{"id": r[1].hex, "kind": r[2], "data": _brief(r[3])}
                                                for r in rows[:PAYLOAD_ITEMS]],
                              "more": max(0, len(rows) - PAYLOAD_ITEMS)}}

    @retry_stale
    def finish_delivery(self, claimed: Claimed, outcome: str, status_code: int | None, error: str | None,
                        duration_ms: int, retry_in: float | None = None) -> None:
        """Record one attempt and what follows: ``delivered``, ``retry`` (in ``retry_in`` s),
        ``failed`` (given up) or ``gone`` (410: the endpoint is disabled, its queue cancelled)."""
        params = {"delivery_id": claimed.delivery_id, "status_code": status_code,
                  "error": error[:1000] if error else None, "duration_ms": duration_ms}
        with self.transaction() as cur:
            cur.execute("SELECT 1 FROM delivery WHERE delivery_id = %(delivery_id)s FOR UPDATE", params)
            if cur.fetchone() is None:
                return  # the watch was deleted while this was being sent: nothing left to record
            cur.execute(LOG_ATTEMPT, params)
            if outcome == "delivered":
                cur.execute(DELIVERED, params)
                if claimed.held_upto:
                    cur.execute(DIGESTED, {"watch_id": claimed.watch_id, "upto": claimed.held_upto})
            elif outcome == "retry":
                cur.execute(RETRY, {**params, "delay": _dt.timedelta(seconds=retry_in or 0)})
            else:
                cur.execute(GIVE_UP, {**params, "state": "failed" if outcome == "failed" else "cancelled"})
                if outcome == "gone":
                    reason = f"endpoint answered {status_code} Gone: disabled"
                    cur.execute("UPDATE watch SET enabled = false, disabled_reason = %(reason)s "
                                "WHERE watch_id = %(watch_id)s", {"reason": reason, "watch_id": claimed.watch_id})
                    cur.execute(CANCEL_WATCH, {"watch_id": claimed.watch_id, "error": reason})

    @retry_stale
    def delivery_log(self, watch_id=None, limit: int = 100) -> list[DeliveryLogEntry]:
        """The newest deliveries (of one watch when given) with their state and last status."""
        with self.transaction() as cur:
            cur.execute(SELECT_LOG, {"watch_id": as_uuid(watch_id) if watch_id else None, "limit": limit})
            return [DeliveryLogEntry(*row) for row in cur.fetchall()]

    @retry_stale
    def latest_deliveries(self, watch_ids: list[uuid.UUID]) -> dict[uuid.UUID, DeliveryLogEntry]:
        """The newest delivery of each of ``watch_ids`` that has one (the watches page shows
        whether a test or a notification got through)."""
        if not watch_ids:
            return {}
        with self.transaction() as cur:
            cur.execute(SELECT_LATEST_PER_WATCH, {"ids": [as_uuid(w) for w in watch_ids]})
            return {row[0]: DeliveryLogEntry(*row[1:]) for row in cur.fetchall()}

    @retry_stale
    def delivery_attempts(self, delivery_id: int) -> list[tuple[_dt.datetime, int | None, str | None, int]]:
        """(when, HTTP status, error, ms) of every attempt at one delivery."""
        with self.transaction() as cur:
            cur.execute("SELECT attempted_at, status_code, error, duration_ms FROM delivery_attempt "
                        "WHERE delivery_id = %(d)s ORDER BY attempt_id", {"d": delivery_id})
            return cur.fetchall()

    @retry_stale
    def replay_delivery(self, delivery_id: int) -> int:
        """Queue what delivery ``delivery_id`` sent (same notification, same webhook-id) again;
        the new delivery's id."""
        with self.transaction() as cur:
            cur.execute(SELECT_DELIVERY, {"delivery_id": delivery_id})
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"no delivery {delivery_id}")
            watch_id, notification_id, kind = row
            if notification_id is None:
                raise NotFound(f"delivery {delivery_id} is a digest: its notifications were each delivered in it")
            cur.execute(INSERT_DELIVERY, {"watch_id": watch_id, "notification_id": notification_id,
                                          "kind": kind, "state": "pending", "due_at": None})
            return cur.fetchone()[0]

    @retry_stale
    def queue_test(self, watch: Watch) -> int:
        """A test notification for ``watch``, delivered like any other; the delivery's id.
        Conflict for an unconfirmed watch: its address has not agreed to any mail but the link."""
        if not watch.confirmed:
            raise Conflict(f"watch {watch.name} is not confirmed yet: nothing is sent to {watch.target} "
                           f"until the link mailed to it is opened")
        now = _dt.datetime.now(_dt.timezone.utc)
        notification_id = uuid.uuid4()
        payload = {"type": "meteorpi.test", "timestamp": now.isoformat(),
                   "data": {"watch": {"id": watch.watch_id.hex, "name": watch.name},
                            "message": "a test notification: this watch reaches you"}}
        with self.transaction() as cur:
            cur.execute(INSERT_NOTIFICATION, {"notification_id": notification_id, "subscriber": watch.owner,
                                              "group_key": f"test:{notification_id.hex}", "watch_id": watch.watch_id,
                                              "kind": "test", "payload": psycopg2.extras.Json(payload)})
            cur.execute(INSERT_DELIVERY, {"watch_id": watch.watch_id, "notification_id": notification_id,
                                          "kind": "test", "state": "pending", "due_at": None})
            return cur.fetchone()[0]


def _brief(data: Any) -> Any:
    """What a digest says of one notification: its ids and links, not its member lists."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k not in ("members", "watch", "meta")}


class RateBook:
    """Per-watch counts of notifications sent within the rate window, for one matcher
    transaction (the matcher is one at a time: the counts it keeps are exact)."""

    def __init__(self, window: _dt.timedelta, now: _dt.datetime):
        self.window, self.now = window, now
        self._counts: dict[uuid.UUID, int] = {}

    def take(self, cur, watch: Watch) -> bool:
        """Count one more for ``watch``; False when that would pass its ``max_per_hour``."""
        if watch.watch_id not in self._counts:
            cur.execute(COUNT_RECENT, {"watch_id": watch.watch_id, "window": self.window})
            self._counts[watch.watch_id] = cur.fetchone()[0]
        if self._counts[watch.watch_id] >= watch.max_per_hour:
            return False
        self._counts[watch.watch_id] += 1
        return True
