"""The event search form: its fields, in the URL, to an ``EventSearch`` and back.

Every field of EventSearch has an input. Names are the search's own where a browser can send
the value as the API expects it (``camera_ids``, ``event_type``, ``lat_min``...); times are
``datetime-local`` values read as UTC (integer milliseconds are accepted too, so an API query
pasted into the address bar works), offsets are hours after local noon, meta constraints are
rows ``meta_key_N``/``meta_op_N``/``meta_value_N``. The form's query string is the bookmark.
Problems are ValidationErrors naming the form field.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Mapping

from meteorpi_model import EventSearch, ValidationError
from meteorpi_model.search import CONSTRAINT_TYPES

PAGE_SIZE = 50
META_ROWS = 3
NUMBER_FIELDS = ("lat_min", "lat_max", "long_min", "long_max")
OFFSET_FIELDS = {"after_offset_hours": "after_offset", "before_offset_hours": "before_offset"}
DATE_OPS, NUMBER_OPS = ("before", "after"), ("less", "greater", "number_equals")
OP_LABELS = {"string_equals": "text is", "contains": "text contains", "less": "number <", "greater": "number >",
             "number_equals": "number =", "before": "date before", "after": "date after"}
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$")
MAX_PAGE = 1_000_000


@dataclass
class SearchForm:
    """What the form shows (the values sent, as text) and the search they make."""
    values: dict[str, str]
    search: EventSearch
    page: int


def _text(args: Mapping, name: str) -> str:
    return (args.get(name) or "").strip()


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"form.{name}", f"expected a number, got {text[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValidationError(f"form.{name}", "expected a finite number")
    return value


def _instant_ms(text: str, name: str) -> int:
    if text.isdigit():
        return int(text)
    if not _LOCAL_TIME.match(text):
        raise ValidationError(f"form.{name}", f"expected a date and time like 2026-11-30T21:00, got {text[:40]!r}")
    try:
        moment = _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc)
    except ValueError as e:
        raise ValidationError(f"form.{name}", str(e)) from None
    return int(moment.timestamp() * 1000)


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
    values["exclude_imported"] = "true" if _text(args, "exclude_imported") in ("true", "1", "on") else ""
    if values["exclude_imported"]:
        wire["exclude_imported"] = True
    page_text = _text(args, "page") or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
        raise ValidationError("form.page", f"expected a page number from 1 to {MAX_PAGE}, got {page_text[:20]!r}")
    page = int(page_text)
    wire.update(limit=PAGE_SIZE, skip=(page - 1) * PAGE_SIZE)
    return SearchForm(values=values, search=EventSearch.from_dict(wire, "form"), page=page)


FIELD_NAMES = ("camera_ids", "event_type", "after", "before", *NUMBER_FIELDS, *OFFSET_FIELDS,
               *(f"meta_{part}_{i}" for i in range(META_ROWS) for part in ("key", "op", "value")), "exclude_imported")
MAX_SHOWN_CHARS = 500


def as_sent(args: Mapping) -> SearchForm:
    """The form with what was sent in it (shown as text), for a search that could not be made:
    the person corrects the field the error names instead of typing everything again."""
    values = {name: _text(args, name)[:MAX_SHOWN_CHARS] for name in FIELD_NAMES}
    return SearchForm(values=values, search=EventSearch(), page=1)


def page_query(form: SearchForm, page: int) -> dict[str, str]:
    """The query string of another page of the same search (empty fields left out)."""
    query = {k: v for k, v in form.values.items() if v}
    query["page"] = str(page)
    return query
