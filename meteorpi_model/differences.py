"""Whether two copies of one entity say the same thing, as the wire can tell.

An id names one record for good: a node never changes an event, a file record or a camera status
once registered (a changed status is a new status with an id of its own). So a record sent again
with an id the archive holds must say what the held copy says, or the node would be told its
version arrived while the archive keeps another. "The same" is judged as the wire carries it:
instants to the millisecond, numbers as the 64-bit floats the archive stores them in, and
without what the archive works out itself (when a status stopped being valid).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any

from .entities import CameraStatus
from .fields import Model
from .values import NSString, instant_to_ms

# Fields a copy may differ in and still be the same record: a status's end of validity is set by
# whoever holds it, when a newer status of the camera arrives.
DERIVED_FIELDS: dict[type, frozenset[str]] = {CameraStatus: frozenset({"valid_to"})}


def first_difference(held: Model, sent: Model, path: str = "") -> str | None:
    """The path of the first field (``meta[2].value``) in which ``sent`` says something else than
    ``held``, or None when they are the same record. Values are never quoted: the path is what a
    message may show."""
    if type(held) is not type(sent):
        return path or "type"
    skip = DERIVED_FIELDS.get(type(held), frozenset())
    for f in dataclasses.fields(held):
        if f.name in skip:
            continue
        where = f"{path}.{f.name}" if path else f.name
        found = _value_difference(getattr(held, f.name), getattr(sent, f.name), where)
        if found:
            return found
    return None


def _value_difference(held: Any, sent: Any, path: str) -> str | None:
    if isinstance(held, Model) or isinstance(sent, Model):
        return first_difference(held, sent, path) if isinstance(held, Model) and isinstance(sent, Model) else path
    if isinstance(held, list) or isinstance(sent, list):
        if not (isinstance(held, list) and isinstance(sent, list)) or len(held) != len(sent):
            return path
        for i, (a, b) in enumerate(zip(held, sent)):
            found = _value_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if _same_value(held, sent) else path


def _same_value(held: Any, sent: Any) -> bool:
    if held is None or sent is None:
        return held is None and sent is None
    if isinstance(held, _dt.datetime) or isinstance(sent, _dt.datetime):
        return (isinstance(held, _dt.datetime) and isinstance(sent, _dt.datetime)
                and instant_to_ms(held) == instant_to_ms(sent))
    if isinstance(held, bool) or isinstance(sent, bool):
        return held is sent
    if isinstance(held, (int, float)) and isinstance(sent, (int, float)):
        return float(held) == float(sent)
    if isinstance(held, (str, NSString)) and isinstance(sent, (str, NSString)):
        return str(held) == str(sent)  # "meteor" is "meteorpi:meteor"
    return type(held) is type(sent) and held == sent
