"""Searches over events and files: what the read API, the CLI and export configurations ask for."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import ClassVar

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


@dataclass(eq=True)
class EventSearch(Model):
    """Which events to find; every field narrows the result, None means no constraint."""
    wire_name: ClassVar[str] = "search"
    camera_ids: list[str] | None = field(ListOf(CAMERA_ID, 1000), optional=True)
    lat_min: float | None = field(Float(-90, 90), optional=True)
    lat_max: float | None = field(Float(-90, 90), optional=True)
    long_min: float | None = field(Float(-180, 180), optional=True)
    long_max: float | None = field(Float(-180, 180), optional=True)
    after: _dt.datetime | None = field(Instant(), optional=True, doc="event_time >= after")
    before: _dt.datetime | None = field(Instant(), optional=True, doc="event_time < before")
    after_offset: float | None = field(Float(0, SECONDS_PER_DAY), optional=True,
                                       doc="seconds after local noon, at least")
    before_offset: float | None = field(Float(0, SECONDS_PER_DAY), optional=True,
                                        doc="seconds after local noon, less than")
    event_type: NSString | None = field(NS(), optional=True)
    meta_constraints: list[MetaConstraint] = field(ListOf(Nested(MetaConstraint), 32), default_factory=list)
    exclude_imported: bool | None = field(Bool(), optional=True,
                                          doc="leave out events this node imported from elsewhere")
    limit: int = field(Int(0, 10_000), default=100, doc="0 means no limit")
    skip: int = field(Int(0), default=0)

    def __post_init__(self):
        if isinstance(self.event_type, str):
            self.event_type = NSString.from_string(self.event_type)

    def _check(self, path):
        _check_ranges(self, path)


@dataclass(eq=True)
class FileRecordSearch(Model):
    """Which files to find; ``exclude_events`` keeps only files that belong to no event."""
    wire_name: ClassVar[str] = "search"
    camera_ids: list[str] | None = field(ListOf(CAMERA_ID, 1000), optional=True)
    lat_min: float | None = field(Float(-90, 90), optional=True)
    lat_max: float | None = field(Float(-90, 90), optional=True)
    long_min: float | None = field(Float(-180, 180), optional=True)
    long_max: float | None = field(Float(-180, 180), optional=True)
    after: _dt.datetime | None = field(Instant(), optional=True, doc="file_time >= after")
    before: _dt.datetime | None = field(Instant(), optional=True, doc="file_time < before")
    after_offset: float | None = field(Float(0, SECONDS_PER_DAY), optional=True,
                                       doc="seconds after local noon, at least")
    before_offset: float | None = field(Float(0, SECONDS_PER_DAY), optional=True,
                                        doc="seconds after local noon, less than")
    mime_type: str | None = field(Str(255), optional=True)
    semantic_type: NSString | None = field(NS(), optional=True)
    meta_constraints: list[MetaConstraint] = field(ListOf(Nested(MetaConstraint), 32), default_factory=list)
    exclude_events: bool | None = field(Bool(), optional=True,
                                        doc="only files that are part of no event")
    exclude_imported: bool | None = field(Bool(), optional=True,
                                          doc="leave out files this node imported from elsewhere")
    limit: int = field(Int(0, 10_000), default=100, doc="0 means no limit")
    skip: int = field(Int(0), default=0)

    def __post_init__(self):
        if isinstance(self.semantic_type, str):
            self.semantic_type = NSString.from_string(self.semantic_type)

    def _check(self, path):
        _check_ranges(self, path)
