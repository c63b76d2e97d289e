"""meteorpi_model: the entities meteor cameras record, their wire form and its validation.

No I/O here beyond hashing a file: the database and server packages build on this one.
Every entity declares its fields once (``fields(cls)``); ``as_dict``/``from_dict``/``json_schema``
are derived from that declaration.
"""
from .admin import ROLES, ExportConfiguration, User
from .entities import CameraStatus, Event, FileRecord, Location, Meta, Orientation, Point
from .errors import MeteorpiError, ValidationError
from .fields import FieldInfo, Model, fields, json_schema
from .md5 import get_md5_hash
from .query import search_from_query, search_to_query
from .search import EventSearch, FileRecordSearch, MetaConstraint
from .values import NSString, as_uuid, instant_to_ms, ms_to_instant, night_offset_seconds, now

__all__ = [
    "CameraStatus", "Event", "EventSearch", "ExportConfiguration", "FieldInfo", "FileRecord",
    "FileRecordSearch", "Location", "Meta", "MetaConstraint", "MeteorpiError", "Model", "NSString",
    "Orientation", "Point", "ROLES", "User", "ValidationError", "WIRE_ENTITIES", "as_uuid",
    "fields", "get_md5_hash", "instant_to_ms", "json_schema", "ms_to_instant", "night_offset_seconds",
    "now", "search_from_query", "search_to_query", "wire_schema",
]

# The entities that cross the wire, by the body key docs/protocol.md gives them.
WIRE_ENTITIES = {"status": CameraStatus, "file": FileRecord, "event": Event}


def wire_schema() -> dict:
    """JSON Schema of every wire entity, for ``meteorpi schema`` and the OpenAPI document."""
    defs: dict = {}
    for cls in (CameraStatus, FileRecord, Event, EventSearch, FileRecordSearch):
        json_schema(cls, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "meteorpi wire entities (protocol version 1)", "$defs": defs}
