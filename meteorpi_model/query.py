"""Searches in a URL's query string, both ways, derived from the searches' field declarations.

Each field is one parameter named like the field:

* a number, an instant (integer milliseconds) or a string: one value;
* a boolean: ``true``/``false``/``1``/``0``;
* a list of plain values (``camera_ids``): repeat the parameter and/or separate with commas
  (an empty value is an empty list);
* structured values (``meta_constraints``): JSON of the wire form, e.g.
  ``meta_constraints=[{"constraint_type":"less","key":"meteorpi:x","value":3}]``.

``callback`` and ``_`` belong to JSONP and are ignored. The text becomes the wire form and the
model's own ``from_dict`` validates it, so the rules are those of a JSON body; every problem is
a ``ValidationError`` whose path is ``query.<parameter>``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from .errors import ValidationError
from .fields import Bool, Codec, Float, Instant, Int, ListOf, Nested, fields
from .search import EventSearch, FileRecordSearch

IGNORED_PARAMETERS = frozenset({"callback", "_"})
_INTEGER = re.compile(r"[-+]?[0-9]{1,20}", re.ASCII)
_NUMBER = re.compile(r"[-+]?([0-9]{1,400}(\.[0-9]{0,400})?|\.[0-9]{1,400})([eE][-+]?[0-9]{1,4})?", re.ASCII)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
MAX_JSON_CHARS = 100_000


def is_structured(codec: Codec) -> bool:
    """A parameter sent as JSON (nested entities, lists of them): the OpenAPI document says so too."""
    return isinstance(codec, Nested) or isinstance(codec, ListOf) and not is_plain_list(codec)


def is_plain_list(codec: Codec) -> bool:
    """A list of scalars: repeated or comma-separated parameters."""
    return isinstance(codec, ListOf) and not isinstance(codec.item, (Nested, ListOf))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _parse_json(text: str) -> Any:
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"longer than {MAX_JSON_CHARS} characters")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at character {e.pos})") from None


def is_integer_text(text: str) -> bool:
    """Whether ``text`` is an integer as a query writes one (ASCII digits, an optional sign): for
    fields that take either an integer or another form (a date), to tell which was meant."""
    return isinstance(text, str) and _INTEGER.fullmatch(text) is not None


def _parse(codec: Codec, text: str) -> Any:
    """One parameter value -> its wire value; ValueError says what is wrong."""
    if isinstance(codec, (Int, Instant)):
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"expected an integer, got {text[:40]!r}")
        return int(text)
    if isinstance(codec, Float):
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"expected a number, got {text[:40]!r}")
        return float(text)
    if isinstance(codec, Bool):
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"expected true, false, 1 or 0, got {text[:40]!r}")
        return _BOOLEANS[text.lower()]
    if is_structured(codec):
        return _parse_json(text)
    return text


def _wire_value(codec: Codec, texts: list[str]) -> Any:
    if is_plain_list(codec):
        return [_parse(codec.item, piece) for text in texts if text for piece in text.split(",")]
    if len(texts) != 1:
        raise ValueError(f"given {len(texts)} times; give it once")
    return _parse(codec, texts[0])


def _values(args: Mapping, name: str) -> list[str]:
    """Every value of ``name``: from a werkzeug MultiDict (``request.args``) or a plain dict."""
    texts = args.getlist(name) if hasattr(args, "getlist") else args[name]
    return [texts] if isinstance(texts, str) else list(texts)


def query_parameter(codec: Codec, texts: list[str], name: str) -> Any:
    """The value of one query parameter outside a search (e.g. ``time=``), by ``codec``'s rules;
    any problem is a ValidationError naming ``name``."""
    try:
        return codec.decode(_wire_value(codec, texts), name)
    except ValidationError:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError) as e:
        raise ValidationError(name, str(e)) from None


def search_from_query(cls: type[EventSearch] | type[FileRecordSearch],
                      args: Mapping[str, list[str]]) -> EventSearch | FileRecordSearch:
    """The search that query parameters ``args`` ask for: name -> list of values, as
    ``urllib.parse.parse_qs`` gives, or a werkzeug MultiDict such as ``request.args``."""
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(args) - set(declared) - IGNORED_PARAMETERS)
    if unknown:
        raise ValidationError(f"query.{unknown[0]}", f"unknown parameter (unknown: {', '.join(unknown)}; "
                              f"known: {', '.join(declared)})")
    wire = {}
    for name in args:
        if name in declared:
            codec = declared[name].codec
            try:
                wire[name] = _wire_value(codec, _values(args, name))
                codec.decode(wire[name], f"query.{name}")  # so a slip below names its parameter
            except ValidationError:
                raise
            except (ValueError, TypeError, ArithmeticError, RecursionError) as e:
                raise ValidationError(f"query.{name}", str(e)) from None
    try:
        return cls.from_dict(wire, "query")
    except ValidationError:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError) as e:
        # The model's codecs should only raise ValidationError; never let a slip become a 500.
        raise ValidationError("query", f"invalid search: {type(e).__name__}: {e}") from None


def _text(codec: Codec, wire: Any, name: str) -> str:
    if is_plain_list(codec):
        items = [_text(codec.item, item, name) for item in wire]
        if any("," in item or not item for item in items):
            raise ValidationError(name, "a list item that is empty or holds ',' cannot go in a query")
        return ",".join(items)
    if is_structured(codec):
        return json.dumps(wire, separators=(",", ":"), allow_nan=False)
    if isinstance(wire, bool):
        return "true" if wire else "false"
    if isinstance(wire, float):
        return repr(wire)
    return str(wire)


def search_to_query(search: EventSearch | FileRecordSearch) -> dict[str, str]:
    """Query parameters for ``search``, one value each; fields at their default are left out."""
    wire, defaults = search.as_dict(), type(search)().as_dict()
    codecs = {f.name: f.codec for f in fields(type(search))}
    return {name: _text(codecs[name], value, name) for name, value in wire.items()
            if value is not None and (name not in defaults or value != defaults[name])}
