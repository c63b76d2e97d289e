"""Value types with a wire form of their own: namespaced strings and instants."""
from __future__ import annotations

import datetime as _dt
import re
import uuid

from .errors import ValidationError

DEFAULT_NAMESPACE = "meteorpi"
UTC = _dt.timezone.utc
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
# Instants outside this range are almost certainly a unit mistake (seconds for ms, µs for ms).
INSTANT_MIN_MS = 0
INSTANT_MAX_MS = 4102444800000  # 2100-01-01T00:00:00Z
_NS_RE = re.compile(r"[^:]+")
# A UUID as text: 32 hex digits, or dashed 8-4-4-4-12 (ASCII only: uuid.UUID itself would take
# fullwidth digits, surrounding whitespace, braces and "urn:uuid:").
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", re.ASCII)


class NSString:
    """A value qualified by a namespace, so projects can add their own event types and meta keys.

    ``"ns:value"`` on the wire; a string without ``:`` is in the ``meteorpi`` namespace.
    Immutable and hashable so it can key dicts and sets.
    """

    __slots__ = ("ns", "s")

    def __init__(self, s: str, ns: str = DEFAULT_NAMESPACE):
        if not isinstance(s, str) or not s:
            raise ValidationError("", "namespaced string value must be a non-empty string")
        if not isinstance(ns, str) or not _NS_RE.fullmatch(ns):
            raise ValidationError("", "namespace must be non-empty and contain no ':'")
        object.__setattr__(self, "ns", ns)
        object.__setattr__(self, "s", s)

    def __setattr__(self, key, value):
        raise AttributeError("NSString is immutable")

    def __reduce__(self):
        # copy and pickle rebuild it through __init__: the default way sets attributes, refused above.
        return NSString, (self.s, self.ns)

    @classmethod
    def from_string(cls, text: "str | NSString") -> "NSString":
        """Parse ``ns:value``; the namespace ends at the first ``:``."""
        if isinstance(text, NSString):
            return text
        if not isinstance(text, str):
            raise ValidationError("", "expected a namespaced string")
        ns, sep, value = text.partition(":")
        if not sep:
            return cls(text)
        if not ns:
            raise ValidationError("", f"namespace before ':' is empty in {text!r}")
        if not value:
            raise ValidationError("", f"value after ':' is empty in {text!r}")
        return cls(value, ns)

    def __str__(self) -> str:
        return f"{self.ns}:{self.s}"

    def __repr__(self) -> str:
        return f"NSString({str(self)!r})"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = NSString.from_string(other) if other else None
        return isinstance(other, NSString) and (self.ns, self.s) == (other.ns, other.s)

    def __hash__(self) -> int:
        return hash((self.ns, self.s))


def instant_to_ms(value: _dt.datetime) -> int:
    """Milliseconds since the epoch, exact (no float rounding)."""
    if value.tzinfo is None:
        raise ValidationError("", "datetime must be timezone-aware")
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_instant(ms: int) -> _dt.datetime:
    """The UTC datetime for ``ms`` milliseconds since the epoch."""
    return EPOCH + _dt.timedelta(milliseconds=ms)


def now() -> _dt.datetime:
    """Current UTC time truncated to milliseconds, the resolution of the wire form."""
    t = _dt.datetime.now(UTC)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def as_uuid(value: "uuid.UUID | str") -> uuid.UUID:
    """Accept a UUID or its hex (dashed or not, any case)."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not _UUID_TEXT.fullmatch(value):
        raise ValidationError("", f"not a UUID: {str(value)[:64]!r}")
    return uuid.UUID(hex=value)


def night_offset_seconds(time: _dt.datetime, longitude: float) -> float:
    """Seconds since the previous local mean-solar noon at ``longitude`` (0 <= x < 86400).

    Searches by "time of night" (after_offset/before_offset) compare this, so "between 1 and
    2 hours after local midnight" means the same thing for every camera and every date.
    """
    local = time.astimezone(UTC) + _dt.timedelta(hours=longitude / 15.0)
    since_midnight = (local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6)
    return (since_midnight - 43200.0) % 86400.0
