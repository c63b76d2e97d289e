"""What a camera records: its status, its files, and the events that interpret them."""
from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass
from typing import ClassVar

from .errors import ValidationError
from .fields import (Bool, Choice, Float, Instant, Int, ListOf, MD5, Model, NS, Nested, Scalar,
                     Str, UUIDCodec, field)
from .values import INSTANT_MAX_MS, INSTANT_MIN_MS, NSString, ms_to_instant

CAMERA_ID = Str(64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
MIME_TYPE = Str(255, pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
# Printable ASCII but '/' and '\': a name to offer on download (a header), never a path.
FILE_NAME = Str(255, pattern=r"^[ -.0-\[\]-~]+$")
META_TYPES = ("string", "number", "date")


@dataclass(eq=True)
class Meta(Model):
    """One searchable key/value on a file or an event; ``type`` says which kind of value."""
    key: NSString = field(NS())
    value: str | float | _dt.datetime = field(Scalar())
    type: str | None = field(Choice(*META_TYPES), default=None, required=True)

    def __post_init__(self):
        if isinstance(self.key, str):
            self.key = NSString.from_string(self.key)
        if self.type is None:
            if isinstance(self.value, _dt.datetime):
                self.type = "date"
            elif isinstance(self.value, str):
                self.type = "string"
            else:
                self.type = "number"

    def _check(self, path):
        where = f"{path}.value" if path else "value"
        if self.type == "string" and not isinstance(self.value, str):
            raise ValidationError(where, "type is string but value is not a string")
        if self.type in ("number", "date") and isinstance(self.value, str):
            raise ValidationError(where, f"type is {self.type} but value is a string")
        if self.type == "date" and not isinstance(self.value, _dt.datetime):
            ms = self.value
            if isinstance(ms, float) and not ms.is_integer() or not INSTANT_MIN_MS <= ms <= INSTANT_MAX_MS:
                raise ValidationError(where, "a date must be whole milliseconds in [1970, 2100)")
            self.value = ms_to_instant(int(ms))


@dataclass(eq=True)
class Location(Model):
    """Where the camera is (WGS84), and how sure we are (metres)."""
    lat: float = field(Float(-90.0, 90.0))
    long: float = field(Float(-180.0, 180.0))
    gps: bool = field(Bool())
    error: float = field(Float(0.0, 1e7))


@dataclass(eq=True)
class Orientation(Model):
    """Where the camera points (degrees): altitude, azimuth, rotation, field width."""
    alt: float = field(Float(-90.0, 90.0))
    az: float = field(Float(-360.0, 360.0))
    rot: float = field(Float(-360.0, 360.0))
    error: float = field(Float(0.0, 360.0))
    width: float = field(Float(0.0, 360.0))


@dataclass(eq=True)
class Point(Model):
    """A pixel position on the sensor; regions are polygons of these."""
    x: int = field(Int(0, 100_000))
    y: int = field(Int(0, 100_000))


@dataclass(eq=True)
class CameraStatus(Model):
    """The state of one camera from ``valid_from`` until ``valid_to`` (open when None)."""
    wire_name: ClassVar[str] = "status"
    camera_id: str = field(CAMERA_ID)
    lens: str = field(Str(255, min_length=0))
    sensor: str = field(Str(255, min_length=0))
    software_version: int = field(Int(0))
    valid_from: _dt.datetime = field(Instant())
    location: Location = field(Nested(Location))
    orientation: Orientation = field(Nested(Orientation))
    status_id: uuid.UUID = field(UUIDCodec(), default_factory=uuid.uuid4, required=True)
    inst_name: str | None = field(Str(255, min_length=0), optional=True)
    inst_url: str | None = field(Str(1024, min_length=0), optional=True)
    valid_to: _dt.datetime | None = field(Instant(), optional=True)
    regions: list[list[Point]] = field(ListOf(ListOf(Nested(Point), 1000), 100), default_factory=list)

    def _check(self, path):
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValidationError(f"{path}.valid_to", "is before valid_from")

    def is_valid_at(self, time: _dt.datetime) -> bool:
        """Whether ``time`` lies in this status' validity (valid_from inclusive)."""
        return self.valid_from <= time and (self.valid_to is None or time < self.valid_to)

    @property
    def entity_id(self) -> uuid.UUID:
        """The id the protocol and the import log know this entity by: its ``status_id``."""
        return self.status_id


@dataclass(eq=True)
class FileRecord(Model):
    """One data file (image, video, log) and what is known about it; bytes checked by MD5."""
    wire_name: ClassVar[str] = "file"
    camera_id: str = field(CAMERA_ID)
    status_id: uuid.UUID = field(UUIDCodec())
    file_time: _dt.datetime = field(Instant())
    mime_type: str = field(MIME_TYPE)
    semantic_type: NSString = field(NS())
    file_size: int = field(Int(0, 2 ** 53))
    md5: str = field(MD5())
    file_id: uuid.UUID = field(UUIDCodec(), default_factory=uuid.uuid4, required=True)
    file_name: str | None = field(FILE_NAME, optional=True)
    meta: list[Meta] = field(ListOf(Nested(Meta), 256), default_factory=list)

    def __post_init__(self):
        if isinstance(self.semantic_type, str):
            self.semantic_type = NSString.from_string(self.semantic_type)
        if isinstance(self.md5, str):  # as the wire keeps it: one spelling of each digest everywhere
            self.md5 = self.md5.lower()

    def meta_value(self, key: NSString | str, default=None):
        """The value of the first meta with ``key``, else ``default``."""
        key = NSString.from_string(key)
        return next((m.value for m in self.meta if m.key == key), default)

    @property
    def entity_id(self) -> uuid.UUID:
        """The id the protocol and the import log know this entity by: its ``file_id``."""
        return self.file_id

    @property
    def status_ids(self) -> frozenset[uuid.UUID]:
        """The camera statuses that must be held before this file can be: the one it names."""
        return frozenset((self.status_id,))


@dataclass(eq=True)
class Event(Model):
    """An interpretation of one or more files, e.g. "this is a meteor"; file order matters."""
    wire_name: ClassVar[str] = "event"
    camera_id: str = field(CAMERA_ID)
    status_id: uuid.UUID = field(UUIDCodec())
    event_time: _dt.datetime = field(Instant())
    event_type: NSString = field(NS())
    event_id: uuid.UUID = field(UUIDCodec(), default_factory=uuid.uuid4, required=True)
    files: list[FileRecord] = field(ListOf(Nested(FileRecord), 256), default_factory=list)
    meta: list[Meta] = field(ListOf(Nested(Meta), 256), default_factory=list)

    def __post_init__(self):
        if isinstance(self.event_type, str):
            self.event_type = NSString.from_string(self.event_type)

    def _check(self, path):
        seen = set()
        for i, f in enumerate(self.files):
            if f.file_id in seen:
                raise ValidationError(f"{path}.files[{i}].file_id", "appears twice in this event")
            seen.add(f.file_id)
            if f.camera_id != self.camera_id:
                raise ValidationError(f"{path}.files[{i}].camera_id", "differs from the event's camera_id")

    def meta_value(self, key: NSString | str, default=None):
        """The value of the first meta with ``key``, else ``default``."""
        key = NSString.from_string(key)
        return next((m.value for m in self.meta if m.key == key), default)

    @property
    def entity_id(self) -> uuid.UUID:
        """The id the protocol and the import log know this entity by: its ``event_id``."""
        return self.event_id

    @property
    def status_ids(self) -> frozenset[uuid.UUID]:
        """The camera statuses that must be held before this event can be: its own and its
        files' (a file may have been recorded under an earlier status)."""
        return frozenset({self.status_id, *(f.status_id for f in self.files)})
