"""Searches over events and files: what the read API, the CLI and export configurations ask for."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, ClassVar

from .entities import CAMERA_ID
from .errors import ValidationError
from .fields import Bool, Choice, Float, Instant, Int, ListOf, Model, NS, Nested, Scalar, Str, field
from .values import NSString

CONSTRAINT_TYPES = ("before", "after", "less", "greater", "number_equals", "string_equals", "contains")
# Seconds since the previous local mean-solar noon at the camera: "time of night", whatever the date.
SECONDS_PER_DAY = 86400.0


@dataclass(eq=True)
class MetaConstraint(Model):
    """A condition on one meta key: dates before/after, numbers less/greater/equal, strings."""
    constraint_type: str = field(Choice(*CONSTRAINT_TYPES))
    key: NSString = field(NS())
    value: str | float | _dt.datetime = field(Scalar())

    def __post_init__(self):
        if isinstance(self.key, str):
            self.key = NSString.from_string(self.key)

    def _check(self, path):
        where = f"{path}.value"
        if self.constraint_type in ("before", "after"):
            if not isinstance(self.value, _dt.datetime):
                self.value = Instant().decode(self.value, where)
        elif self.constraint_type in ("string_equals", "contains"):
            if not isinstance(self.value, str):
                raise ValidationError(where, f"{self.constraint_type} needs a string")
        elif isinstance(self.value, str):
            raise ValidationError(where, f"{self.constraint_type} needs a number")


def _check_ranges(search, path):
    for low, high in (("lat_min", "lat_max"), ("long_min", "long_max"), ("after", "before")):
        a, b = getattr(search, low), getattr(search, high)
        if a is not None and b is not None and a > b:
            raise ValidationError(f"{path}.{low}", f"is greater than {high}")


def _where_and_when(time: str) -> dict[str, tuple[str, Any]]:
    """The fields every search starts with: cameras, place, time and time of night of ``time``."""
    return {
        "camera_ids": ("list[str] | None", field(ListOf(CAMERA_ID, 1000), optional=True)),
        "lat_min": ("float | None", field(Float(-90, 90), optional=True)),
        "lat_max": ("float | None", field(Float(-90, 90), optional=True)),
        "long_min": ("float | None", field(Float(-180, 180), optional=True)),
        "long_max": ("float | None", field(Float(-180, 180), optional=True)),
        "after": ("_dt.datetime | None", field(Instant(), optional=True, doc=f"{time} >= after")),
        "before": ("_dt.datetime | None", field(Instant(), optional=True, doc=f"{time} < before")),
        "after_offset": ("float | None", field(Float(0, SECONDS_PER_DAY), optional=True,
                                               doc="seconds after local noon, at least")),
        "before_offset": ("float | None", field(Float(0, SECONDS_PER_DAY), optional=True,
                                                doc="seconds after local noon, less than")),
    }


def _metadata() -> dict[str, tuple[str, Any]]:
    return {"meta_constraints": ("list[MetaConstraint]",
                                 field(ListOf(Nested(MetaConstraint), 32), default_factory=list))}


def _origin_and_paging(noun: str) -> dict[str, tuple[str, Any]]:
    """The fields every search ends with: what this node imported, and the page asked for."""
    return {
        "exclude_imported": ("bool | None", field(Bool(), optional=True,
                                                  doc=f"leave out {noun} this node imported from elsewhere")),
        "limit": ("int", field(Int(0, 10_000), default=100, doc="0 means no limit")),
        "skip": ("int", field(Int(0), default=0)),
    }


def _search(time: str, noun: str, after_metadata: tuple[str, ...] = ()):
    """Declare a search class: the fields every search has, declared once above, around the
    class's own, in one fixed order (the wire form, the query string and the OpenAPI document
    list them in it): where and when, the class's own fields, metadata, the class's own fields
    named in ``after_metadata``, origin and paging. ``time`` names the time field the search
    narrows and ``noun`` what it finds, for the fields' docs."""
    def declare(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        later = {name: own.pop(name) for name in after_metadata}
        first, metadata, last = _where_and_when(time), _metadata(), _origin_and_paging(noun)
        for name, (_, declared) in {**first, **metadata, **last}.items():
            setattr(cls, name, declared)
        kinds = {name: kind for name, (kind, _) in first.items()}
        kinds.update(own)
        kinds.update((name, kind) for name, (kind, _) in metadata.items())
        kinds.update(later)
        kinds.update((name, kind) for name, (kind, _) in last.items())
        cls.__annotations__ = kinds  # dataclass takes the fields in this order
        return dataclass(eq=True)(cls)
    return declare


@_search(time="event_time", noun="events")
class EventSearch(Model):
    """Which events to find; every field narrows the result, None means no constraint."""
    wire_name: ClassVar[str] = "search"
    event_type: NSString | None = field(NS(), optional=True)

    def __post_init__(self):
        if isinstance(self.event_type, str):
            self.event_type = NSString.from_string(self.event_type)

    def _check(self, path):
        _check_ranges(self, path)


@_search(time="file_time", noun="files", after_metadata=("exclude_events",))
class FileRecordSearch(Model):
    """Which files to find; ``exclude_events`` keeps only files that belong to no event."""
    wire_name: ClassVar[str] = "search"
    mime_type: str | None = field(Str(255), optional=True)
    semantic_type: NSString | None = field(NS(), optional=True)
    exclude_events: bool | None = field(Bool(), optional=True, doc="only files that are part of no event")

    def __post_init__(self):
        if isinstance(self.semantic_type, str):
            self.semantic_type = NSString.from_string(self.semantic_type)

    def _check(self, path):
        _check_ranges(self, path)
