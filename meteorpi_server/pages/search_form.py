"""The event search form: its fields, in the URL, to an ``EventSearch`` and back.

Every field of EventSearch has an input. Names are the search's own where a browser can send
the value as the API expects it (``camera_ids``, ``event_type``, ``lat_min``...); times are
``datetime-local`` values read as UTC (integer milliseconds are accepted too, so an API query
pasted into the address bar works), offsets are hours after local noon, meta constraints are
rows ``meta_key_N``/``meta_op_N``/``meta_value_N``. The form's query string is the bookmark.
Every field is read through ``meteorpi_server.params`` (one value, no control characters or
spaces around it, numbers in ASCII digits); problems are ValidationErrors naming the form field.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Mapping

from meteorpi_model import EventSearch, ValidationError
from meteorpi_model.fields import Float, Int
from meteorpi_model.query import is_integer_text
from meteorpi_model.search import CONSTRAINT_TYPES
from meteorpi_model.values import INSTANT_MAX_MS, INSTANT_MIN_MS, instant_to_ms

from .. import params

PAGE_SIZE = 50
META_ROWS = 3
NUMBER_FIELDS = ("lat_min", "lat_max", "long_min", "long_max")
OFFSET_FIELDS = {"after_offset_hours": "after_offset", "before_offset_hours": "before_offset"}
DATE_OPS, NUMBER_OPS = ("before", "after"), ("less", "greater", "number_equals")
OP_LABELS = {"string_equals": "text is", "contains": "text contains", "less": "number <", "greater": "number >",
             "number_equals": "number =", "before": "date before", "after": "date after"}
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,3})?)?", re.ASCII)
MAX_PAGE = 1_000_000


@dataclass
class SearchForm:
    """What the form shows (the values sent, as text) and the search they make."""
    values: dict[str, str]
    search: EventSearch
    page: int


def _text(args: Mapping, name: str) -> str:
    """The one value of field ``name`` as sent ('' when absent or empty: a browser sends every
    input of the form, the empty ones as nothing)."""
    return params.one(args, name, params.Text(), default="", path=f"form.{name}")


def _number(text: str, name: str) -> float:
    return params.value(Float(), text, f"form.{name}")


def _instant_ms(text: str, name: str) -> int:
    if is_integer_text(text):
        return params.value(Int(INSTANT_MIN_MS, INSTANT_MAX_MS), text, f"form.{name}")
    if not _LOCAL_TIME.fullmatch(text):
        raise ValidationError(f"form.{name}", f"expected a date and time like 2026-11-30T21:00 (or integer "
                                              f"milliseconds since 1970), got {text[:40]!r}")
    try:
        moment = _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc)
    except ValueError as e:
        raise ValidationError(f"form.{name}", str(e)) from None
    return instant_to_ms(moment)  # exact: no float on the way


# What a checkbox (or a hand-made link) may say: a browser sends "on", or nothing when unticked.
CHECKBOX_ON = ("true", "1", "on")
CHECKBOX_OFF = ("", "false", "0", "off")


def _meta_constraints(args: Mapping, values: dict) -> list[dict]:
    constraints = []
    for i in range(META_ROWS):
        key, op, value = (_text(args, f"meta_{part}_{i}") for part in ("key", "op", "value"))
        values.update({f"meta_key_{i}": key, f"meta_op_{i}": op, f"meta_value_{i}": value})
        if not key and not value:
            continue
        if op not in CONSTRAINT_TYPES:
            raise ValidationError(f"form.meta_op_{i}", f"choose one of {', '.join(CONSTRAINT_TYPES)}")
        if not key:
            raise ValidationError(f"form.meta_key_{i}", "a meta condition needs a key, e.g. meteorpi:duration")
        if op in DATE_OPS:
            wire = _instant_ms(value, f"meta_value_{i}")
        elif op in NUMBER_OPS:
            wire = _number(value, f"meta_value_{i}")
        else:
            wire = value
        constraints.append({"constraint_type": op, "key": key, "value": wire})
    return constraints


def parse(args: Mapping) -> SearchForm:
    """The search the query parameters ``args`` (``request.args``) ask for; unknown ones are
    ignored (a browser may add its own)."""
    values: dict[str, str] = {}
    wire: dict = {}
    cameras = [c.strip() for c in _text(args, "camera_ids").split(",") if c.strip()]
    values["camera_ids"] = ", ".join(cameras)
    if cameras:
        wire["camera_ids"] = cameras
    values["event_type"] = _text(args, "event_type")
    if values["event_type"]:
        wire["event_type"] = values["event_type"]
    for name in ("after", "before"):
        values[name] = _text(args, name)
        if values[name]:
            wire[name] = _instant_ms(values[name], name)
    for name in NUMBER_FIELDS:
        values[name] = _text(args, name)
        if values[name]:
            wire[name] = _number(values[name], name)
    for name, field_name in OFFSET_FIELDS.items():
        values[name] = _text(args, name)
        if values[name]:
            wire[field_name] = _number(values[name], name) * 3600.0
    wire["meta_constraints"] = _meta_constraints(args, values)
    excluded = _text(args, "exclude_imported")
    if excluded not in CHECKBOX_ON + CHECKBOX_OFF:  # "maybe" read as off searched what nobody asked
        raise ValidationError("form.exclude_imported", f"expected on or off (a checkbox), got {excluded[:40]!r}")
    values["exclude_imported"] = "true" if excluded in CHECKBOX_ON else ""
    if values["exclude_imported"]:
        wire["exclude_imported"] = True
    page_text = _text(args, "page")
    page = params.value(Int(1, MAX_PAGE), page_text, "form.page") if page_text else 1
    wire.update(limit=PAGE_SIZE, skip=(page - 1) * PAGE_SIZE)
    return SearchForm(values=values, search=EventSearch.from_dict(wire, "form"), page=page)


FIELD_NAMES = ("camera_ids", "event_type", "after", "before", *NUMBER_FIELDS, *OFFSET_FIELDS,
               *(f"meta_{part}_{i}" for i in range(META_ROWS) for part in ("key", "op", "value")), "exclude_imported")
MAX_SHOWN_CHARS = 500


def as_sent(args: Mapping) -> SearchForm:
    """The form with what was sent in it (shown as text), for a search that could not be made:
    the person corrects the field the error names instead of typing everything again."""
    values = {name: (args.get(name) or "")[:MAX_SHOWN_CHARS] for name in FIELD_NAMES}  # as typed, to correct
    return SearchForm(values=values, search=EventSearch(), page=1)


def page_query(form: SearchForm, page: int) -> dict[str, str]:
    """The query string of another page of the same search (empty fields left out)."""
    query = {k: v for k, v in form.values.items() if v}
    query["page"] = str(page)
    return query
