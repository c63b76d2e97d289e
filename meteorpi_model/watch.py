"""Watches: "tell me when" — which events, coincidences or silences someone wants to hear of,
and where to tell them (a webhook or an e-mail address).

A watch is declared once here; its wire form, validation, JSON Schema and OpenAPI document come
from these field declarations, as for the entities. Meta filters are written ``key op value``
(``magnitude<=-4``) on the command line and as ``{"key", "op", "value"}`` on the wire; both
become ``WatchMeta``, which tests an event's meta values the way the event search does.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import math
import uuid
from dataclasses import dataclass
from typing import ClassVar, Iterable

from .entities import CAMERA_ID, Meta
from .errors import ValidationError
from .fields import (Bool, Choice, Float, Instant, Int, ListOf, Model, NS, NS_PATTERN, Nested, Scalar, Str, UUIDCodec,
                     field, field_pattern)
from .query import query_parameter
from .values import NSString

WATCH_KINDS = ("event", "coincidence", "absence")
META_OPS = ("<=", ">=", "!=", "<", ">", "=", "~")  # longest first: the parser tries them in order
WATCH_NAME = Str(64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# An address is mailed exactly as written, so only the plain form every mail library reads
# the same way is taken: no quotes, comments, routes, encoded words or control characters,
# which Python's own header parser (smtplib's send_message) and the mail server may each read
# as another address (``x1:target@example.org`` was mailed to target@example.org).
EMAIL_LOCAL_PART = r"[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*"
DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{EMAIL_LOCAL_PART}@{DNS_LABEL}(\.{DNS_LABEL})+$"
EMAIL_MAX_LENGTH = 254
_EMAIL = field_pattern(EMAIL_PATTERN)
_EMAIL_LOCAL_PART = field_pattern(f"^{EMAIL_LOCAL_PART}$")


def email_refusal(address: object) -> str | None:
    """Why ``address`` is not an address this archive mails, or None if it is one.

    Taken: a local part of letters, digits and ``. _ % + -`` (no dot first, last or twice), one
    ``@``, and a domain of two or more dot-separated labels of letters, digits and hyphens (1-63
    characters each, no hyphen first or last), at most 254 characters in all. That is the form
    that means one mailbox to everybody who reads it — the model, Python's e-mail parser (which
    smtplib runs on headers and on every envelope address) and the mail server. The rule is
    checked on input (the Watch's ``email`` field) and again before any mail goes
    (notify.send_mail), so an address stored under an older, looser rule is never mailed."""
    if not isinstance(address, str):
        return "expected a string"
    if len(address) > EMAIL_MAX_LENGTH:
        return f"longer than {EMAIL_MAX_LENGTH} characters"
    if _EMAIL.fullmatch(address):
        return None
    local, at, _domain = address.rpartition("@")
    if not at or "@" in local:
        return "expected one @ between the mailbox and the domain"
    if not _EMAIL_LOCAL_PART.fullmatch(local):
        return "before the @ only letters, digits and . _ % + - are taken (no dot first, last or twice)"
    return ("after the @ a domain of two or more dot-separated labels is expected: letters, digits and "
            "hyphens, 1-63 characters each, no hyphen first or last")


class EmailAddress(Str):
    """An address as ``email_refusal`` takes it; the refusal says what is wrong in words (the
    schema carries the same rule as its pattern)."""

    def __init__(self):
        super().__init__(EMAIL_MAX_LENGTH)

    def decode(self, value, path):
        value = super().decode(value, path)  # a string, its length, no NUL, valid Unicode
        reason = email_refusal(value)
        if reason:
            raise ValidationError(path, f"{value[:60]!r} is not an address this archive mails: {reason}")
        return value

    def schema(self, defs):
        return {**super().schema(defs), "pattern": EMAIL_PATTERN}


EMAIL = EmailAddress()
WEBHOOK_URL = Str(2048, pattern=r"^https?://[^\s/?#@]+(/[^\s]*)?$")
# What an event type may be (fields.NS_PATTERN: printable ASCII, spaces included), with ``*``,
# ``?`` and ``[...]`` read as wildcards: a watch can name any type a camera may send.
EVENT_TYPE_PATTERN = Str(255, pattern=NS_PATTERN)
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km: what "within R km" and "D km apart" mean everywhere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(eq=True)
class WatchMeta(Model):
    """One meta condition: ``key op value``; numbers compare as numbers, ``~`` is "contains"."""
    key: NSString = field(NS())
    op: str = field(Choice(*META_OPS))
    value: str | float = field(Scalar())

    def __post_init__(self):
        if isinstance(self.key, str):
            self.key = NSString.from_string(self.key)

    def _check(self, path):
        if self.op in ("<", "<=", ">", ">=") and isinstance(self.value, str):
            raise ValidationError(f"{path}.value" if path else "value", f"{self.op} needs a number")
        if self.op == "~" and not isinstance(self.value, str):
            raise ValidationError(f"{path}.value" if path else "value", "~ (contains) needs a string")

    @classmethod
    def parse(cls, text: str, path: str = "meta") -> "WatchMeta":
        """``'magnitude<=-4'`` -> WatchMeta; ValidationError naming ``path`` otherwise."""
        if not isinstance(text, str):
            raise ValidationError(path, "expected key<op>value, e.g. magnitude<=-4")
        # The operator is the first one in the text (the longest where two start together): a
        # value may hold operator characters itself (note~a<b), a key never does.
        found = [(text.find(op), -len(op), op) for op in META_OPS if text.find(op) > 0]
        if found:
            at, _, op = min(found)
            key, value = text[:at].strip(), text[at + len(op):].strip()
            if key and not any(c in key for c in "<>=!~"):  # '<=4' is no key '<' and '=4
                # A number only as a query writes one (ASCII digits, no "_"): "١٠" stays text.
                number: str | float = value
                if op != "~":  # "contains" is about text, even text of digits (rms:night~2026)
                    try:
                        number = query_parameter(Float(), [value], path)
                    except ValidationError:
                        number = value
                return cls.from_dict({"key": key, "op": op, "value": number}, path)
        raise ValidationError(path, f"expected key<op>value with op one of {' '.join(META_OPS)}, got {text[:60]!r}")

    def __str__(self) -> str:
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.key}{self.op}{value}"

    def holds(self, metas: Iterable[Meta]) -> bool:
        """Whether any meta of ``metas`` with this key satisfies the condition."""
        for meta in metas:
            if meta.key != self.key:
                continue
            value = meta.value
            if isinstance(value, _dt.datetime):
                value = value.timestamp() * 1000
            if isinstance(self.value, str) != isinstance(value, str):
                continue
            if self.op == "~":
                if self.value in value:
                    return True
            elif _compare(value, self.op, self.value):
                return True
        return False


def _compare(a, op: str, b) -> bool:
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "=": a == b, "!=": a != b}[op]


@dataclass(eq=True)
class Near(Model):
    """Within ``km`` of a point, by the camera's position at the time of the event."""
    lat: float = field(Float(-90.0, 90.0))
    long: float = field(Float(-180.0, 180.0))
    km: float = field(Float(0.0, 20040.0))

    @classmethod
    def parse(cls, text: str, path: str = "near") -> "Near":
        """``'52.2,0.12,100'`` -> Near."""
        parts = text.split(",") if isinstance(text, str) else []
        try:
            if len(parts) != 3:
                raise ValueError
            # Spaces after the commas are the documented form ("52.2, 0.12, 100"); each number
            # is then one as a query writes it (ASCII digits, no "_"), never int()'s "٣".
            lat, long, km = (query_parameter(Float(), [p.strip()], path) for p in parts)
        except ValueError:
            raise ValidationError(path, f"expected LAT,LON,KM, got {str(text)[:60]!r}") from None
        return cls.from_dict({"lat": lat, "long": long, "km": km}, path)

    def holds(self, lat: float, long: float) -> bool:
        return haversine_km(self.lat, self.long, lat, long) <= self.km


@dataclass(eq=True)
class Watch(Model):
    """Who wants to hear of what, and how: a webhook (signed) or an e-mail address.

    The owner is a user of the archive, or — with no user — the e-mail address itself. Every
    e-mail watch, whoever owns it, is ``confirmed`` only once its address opened the link mailed
    to it (or the operator vouched for it): nothing else is sent to an address that did not agree. ``secret`` is the webhook signing secret: it is sent
    back once, when the watch is created, and never again.
    """
    wire_name: ClassVar[str] = "watch"
    name: str = field(WATCH_NAME)
    kind: str = field(Choice(*WATCH_KINDS), default="event")
    webhook: str | None = field(WEBHOOK_URL, optional=True, doc="http(s) URL that receives signed POSTs")
    email: str | None = field(EMAIL, optional=True, doc="address that receives notifications")
    event_types: list[str] = field(ListOf(EVENT_TYPE_PATTERN, 32), default_factory=list,
                                   doc="event types, * wildcards (meteorpi:*); empty: all")
    cameras: list[str] = field(ListOf(CAMERA_ID, 1000), default_factory=list, doc="empty: all cameras")
    meta: list[WatchMeta] = field(ListOf(Nested(WatchMeta), 32), default_factory=list)
    near: Near | None = field(Nested(Near), optional=True)
    silent_hours: float | None = field(Float(0.01, 24 * 365), optional=True,
                                       doc="absence: hours without status, event or file")
    notify_on_join: bool = field(Bool(), default=True,
                                 doc="coincidence: notify again when a further camera joins")
    max_per_hour: int = field(Int(1, 100_000), default=60, doc="then one digest")
    muted_until: _dt.datetime | None = field(Instant(), optional=True)
    digest: bool = field(Bool(), default=False, doc="one nightly digest instead of each notification")
    watch_id: uuid.UUID = field(UUIDCodec(), default_factory=uuid.uuid4)
    owner: str | None = field(Str(254), optional=True, doc="user id, or the e-mail address")
    confirmed: bool = field(Bool(), default=True)
    enabled: bool = field(Bool(), default=True)
    disabled_reason: str | None = field(Str(1024, min_length=0), optional=True)

    def _check(self, path):
        if (self.webhook is None) == (self.email is None):
            raise ValidationError(f"{path}.webhook", "give exactly one channel: webhook or email")
        if self.kind == "absence" and self.silent_hours is None:
            raise ValidationError(f"{path}.silent_hours", "an absence watch needs silent_hours")
        self.event_types = [t if ":" in t else f"meteorpi:{t}" for t in self.event_types]

    @property
    def channel(self) -> str:
        return "webhook" if self.webhook else "email"

    @property
    def target(self) -> str:
        return self.webhook or self.email

    def type_matches(self, event_type: str) -> bool:
        return not self.event_types or any(fnmatch.fnmatchcase(event_type, p) for p in self.event_types)

    def event_matches(self, event_type: str, camera_id: str, lat: float, long: float,
                      metas: Iterable[Meta]) -> bool:
        """Whether one event passes every filter of this watch."""
        if not self.type_matches(event_type):
            return False
        if self.cameras and camera_id not in self.cameras:
            return False
        if self.near is not None and not self.near.holds(lat, long):
            return False
        metas = list(metas)
        return all(m.holds(metas) for m in self.meta)
