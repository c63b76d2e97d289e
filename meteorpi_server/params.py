"""Query parameters and form fields, read one way on every route and page.

Python's own conversions are too kind for text from a URL: ``int("²")`` raises although
``"²".isdigit()`` is true (a 500), ``int("٣")``, ``int("１")`` and ``int("1_0")`` quietly give
3, 1 and 10, ``int(" 3 ")`` ignores the spaces, and ``request.args.get`` lets the first of two
values win. So no route converts request text itself: each reads it here, and the value goes
through ``meteorpi_model.query.query_parameter`` (ASCII digits only, no ``_``, no spaces, "given
N times; give it once") and the codec of the field it fills (ranges, id patterns, control
characters). Every problem is a ValidationError naming the parameter, which the JSON routes
answer as a 400 ``{"message": "<name>: ..."}`` and the pages show on the page with status 400.
"""
from __future__ import annotations

import re
from typing import Any, Collection, Mapping

from meteorpi_model import ValidationError
from meteorpi_model.fields import Codec, Str
from meteorpi_model.query import query_parameter

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_TEXT_CHARS = 4096


class Text(Codec):
    """One line of text a person typed (a search value, a key): not a number or an id, so no
    pattern of its own, but never control characters (a newline in a form field is a pasted
    mistake or an attack) and never spaces around it (they would search for something else
    than what the page shows)."""

    def __init__(self, max_length: int = MAX_TEXT_CHARS):
        self.max_length = max_length

    def decode(self, value: Any, path: str) -> str:
        text = Str(self.max_length, min_length=0).decode(value, path)
        control = _CONTROL.search(text)
        if control:
            raise ValidationError(path, f"contains a control character ({control.group()!r}) at character "
                                        f"{control.start()}")
        if text != text.strip():
            raise ValidationError(path, "has spaces around it; leave them out")
        return text

    def schema(self, defs: dict) -> dict:
        return {"type": "string", "maxLength": self.max_length}


def refuse_unknown(args: Mapping, known: Collection[str], prefix: str = "",
                   tolerated: Collection[str] = ()) -> None:
    """A ValidationError naming the first parameter of ``args`` that is neither ``known`` nor
    ``tolerated`` (JSONP's own, say): a misspelt filter (``?tme=``, ``?owner=``) silently
    ignored answers as if nothing had been asked. ``prefix`` is how the route names its fields."""
    unknown = sorted(set(args) - set(known) - set(tolerated))
    if unknown:
        takes = f"known: {', '.join(sorted(known))}" if known else "this route takes none"
        raise ValidationError(f"{prefix}{unknown[0][:40]}", f"unknown parameter ({takes})")


def _values(args: Mapping, name: str) -> list[str]:
    """Every value sent for ``name``: a werkzeug MultiDict (``request.args``, ``request.form``)
    keeps them all, where ``.get`` would silently take the first."""
    return list(args.getlist(name)) if hasattr(args, "getlist") else ([args[name]] if name in args else [])


def single(args: Mapping, name: str, path: str | None = None) -> str | None:
    """The one value of ``name`` as sent, or None when it is absent; a second value is refused
    (naming ``path``, default ``name``) rather than one of the two silently winning."""
    texts = _values(args, name)
    if not texts:
        return None
    if len(texts) != 1:
        raise ValidationError(path or name, f"given {len(texts)} times; give it once")
    return texts[0]


def value(codec: Codec, text: str, path: str) -> Any:
    """``text`` decoded by ``codec`` under the query rules (see the module's docstring)."""
    return query_parameter(codec, [text], path)


def one(args: Mapping, name: str, codec: Codec, default: Any = None, path: str | None = None) -> Any:
    """The value of a single-valued parameter ``name`` by ``codec``, or ``default`` when it is absent."""
    text = single(args, name, path)
    return default if text is None else value(codec, text, path or name)


def each(args: Mapping, name: str, codec: Codec, path: str | None = None) -> list:
    """Every value of a parameter documented as a list (repeat it: ``camera=a&camera=b``), each
    by ``codec``; an empty list when it is absent."""
    return [value(codec, text, path or name) for text in _values(args, name)]
