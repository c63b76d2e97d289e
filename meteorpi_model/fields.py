"""The field layer: each entity declares its fields once; everything else is derived.

An entity is a stdlib dataclass whose fields carry a *codec* in their metadata (see ``field``).
``fields(cls)`` returns the immutable, cached tuple of ``FieldInfo`` that drives:

* ``Model.as_dict()``   — Python value -> wire form (docs/protocol.md),
* ``Model.from_dict()`` — wire form -> Python value, validating as it goes,
* ``json_schema(cls)``  — the JSON Schema of the wire form (and from it, the OpenAPI document).

Keeping the three in one table is what stops them drifting apart: a bound added to a codec is
enforced on input, documented in the schema and exercised by the property tests at once.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import math
import re
import typing
import uuid
from typing import Any, Callable, ClassVar

from .errors import ValidationError
from .values import (INSTANT_MAX_MS, INSTANT_MIN_MS, NSString, instant_to_ms, ms_to_instant)

HEX32_PATTERN = "^[0-9a-fA-F]{32}$"


def field_pattern(source: str) -> re.Pattern:
    """A declared pattern, written ``^...$`` as JSON Schema (ECMA regex) reads it.

    Checked with ``fullmatch`` and ``re.ASCII``, so Python means what the schema says: ``$``
    alone would also match before a final newline (``"<32 hex>\\n"`` would pass), and without
    ``re.ASCII`` a ``\\d`` or ``\\w`` would let fullwidth digits and other scripts in.
    """
    if not (source.startswith("^") and source.endswith("$")):
        raise ValueError(f"field pattern {source!r} must be anchored as ^...$")
    return re.compile(source, re.ASCII)


_HEX32 = field_pattern(HEX32_PATTERN)
# A namespaced string (``ns:value``, or a bare value): printable ASCII, no ':' in the namespace.
# Keys and types are identifiers that end up in URLs, logs and headers, not free text.
NS_PATTERN = "^[ -9;-~]+(:[ -~]+)?$"
_NS = field_pattern(NS_PATTERN)


# What a slip in decoding untrusted input raises; anything else (MemoryError, a bug such as an
# AttributeError) stays a fault of ours.
_INPUT_FAULTS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError)


def _slip(path: str, e: BaseException) -> ValidationError:
    """Decoding wire input, a bare error is the input's fault: it names ``path``."""
    return ValidationError(path, f"cannot be read: {type(e).__name__}: {_short(str(e))}")


def _guarded(decode: Callable[[Any, Any, str], Any]) -> Callable[[Any, Any, str], Any]:
    @functools.wraps(decode)
    def guarded(self, value: Any, path: str) -> Any:
        try:
            return decode(self, value, path)
        except ValidationError:
            raise
        except _INPUT_FAULTS as e:
            raise _slip(path, e) from None
    return guarded


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Codec:
    """Converts one field between its wire form and its Python value.

    ``decode`` reads untrusted wire input: it raises ValidationError naming ``path``. Every
    subclass's ``decode`` is wrapped (``__init_subclass__``) so that a slip inside one — a bare
    ValueError from a conversion, a TypeError — still names the field instead of reaching the
    server as a 500; callers that decode one codec directly (route ids) get the same guarantee.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "decode" in cls.__dict__:
            cls.decode = _guarded(cls.__dict__["decode"])

    def decode(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        return value

    def schema(self, defs: dict) -> dict:
        raise NotImplementedError


class Str(Codec):
    def __init__(self, max_length: int = 255, min_length: int = 1, pattern: str | None = None):
        self.max_length, self.min_length = max_length, min_length
        self.pattern = field_pattern(pattern) if pattern else None

    def decode(self, value, path):
        if not isinstance(value, str):
            raise ValidationError(path, f"expected a string, got {type(value).__name__}")
        if len(value) < self.min_length:
            raise ValidationError(path, "must not be empty" if self.min_length == 1
                                  else f"shorter than {self.min_length} characters")
        if len(value) > self.max_length:
            raise ValidationError(path, f"longer than {self.max_length} characters")
        if "\x00" in value:
            raise ValidationError(path, "contains a NUL character")
        if not value.isascii():
            try:  # JSON's "\ud800" escape gives a lone surrogate: no UTF-8, no PostgreSQL text
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValidationError(path, f"contains a lone surrogate (\\u{ord(value[e.start]):04x}) at "
                                            f"character {e.start}: not valid Unicode") from None
        if self.pattern and not self.pattern.fullmatch(value):
            raise ValidationError(path, f"{_short(value)} does not match {self.pattern.pattern}")
        return value

    def schema(self, defs):
        s = {"type": "string", "minLength": self.min_length, "maxLength": self.max_length}
        if self.pattern:
            s["pattern"] = self.pattern.pattern
        return s


class Choice(Codec):
    def __init__(self, *choices: str):
        self.choices = choices

    def decode(self, value, path):
        if value not in self.choices or not isinstance(value, str):
            raise ValidationError(path, f"expected one of {', '.join(self.choices)}, got {_short(value)}")
        return value

    def schema(self, defs):
        return {"type": "string", "enum": list(self.choices)}


class Int(Codec):
    def __init__(self, minimum: int = -(2 ** 31), maximum: int = 2 ** 31 - 1):
        self.minimum, self.maximum = minimum, maximum

    def decode(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(path, f"expected an integer, got {type(value).__name__}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValidationError(path, f"expected an integer, got {_short(value)}")
            value = int(value)
        if not self.minimum <= value <= self.maximum:
            raise ValidationError(path, f"{value} is outside [{self.minimum}, {self.maximum}]")
        return value

    def schema(self, defs):
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


class Float(Codec):
    def __init__(self, minimum: float = -1e300, maximum: float = 1e300):
        self.minimum, self.maximum = minimum, maximum

    def decode(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(path, f"expected a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > 1e308:
            raise ValidationError(path, "is too large for a number")
        if not math.isfinite(value):
            raise ValidationError(path, "must be a finite number")
        if not self.minimum <= value <= self.maximum:
            raise ValidationError(path, f"{value} is outside [{self.minimum}, {self.maximum}]")
        return value

    def schema(self, defs):
        return {"type": "number", "minimum": self.minimum, "maximum": self.maximum}


class Bool(Codec):
    def decode(self, value, path):
        if not isinstance(value, bool):
            raise ValidationError(path, f"expected true or false, got {_short(value)}")
        return value

    def schema(self, defs):
        return {"type": "boolean"}


class UUIDCodec(Codec):
    """32 hex digits, no dashes; any case accepted, lower case sent."""

    def decode(self, value, path):
        if not isinstance(value, str) or not _HEX32.fullmatch(value):
            raise ValidationError(path, f"expected 32 hex digits, got {_short(value)}")
        return uuid.UUID(hex=value)

    def encode(self, value):
        return value.hex

    def schema(self, defs):
        return {"type": "string", "pattern": HEX32_PATTERN}


class MD5(Codec):
    """An MD5 digest as 32 hex digits, kept lower case."""

    def decode(self, value, path):
        if not isinstance(value, str) or not _HEX32.fullmatch(value):
            raise ValidationError(path, f"expected 32 hex digits, got {_short(value)}")
        return value.lower()

    def schema(self, defs):
        return {"type": "string", "pattern": HEX32_PATTERN}


class Instant(Codec):
    """Integer milliseconds since the epoch <-> timezone-aware UTC datetime."""

    def decode(self, value, path):
        ms = Int(INSTANT_MIN_MS, INSTANT_MAX_MS).decode(value, path)
        return ms_to_instant(ms)

    def encode(self, value):
        return instant_to_ms(value)

    def schema(self, defs):
        return {"type": "integer", "minimum": INSTANT_MIN_MS, "maximum": INSTANT_MAX_MS,
                "description": "milliseconds since 1970-01-01T00:00:00Z"}


class NS(Codec):
    """Namespaced string: ``ns:value``, a bare value means namespace ``meteorpi``."""

    def __init__(self, max_length: int = 255):
        self.max_length = max_length

    def decode(self, value, path):
        text = Str(self.max_length).decode(value, path)
        try:
            parsed = NSString.from_string(text)
        except ValidationError as e:
            raise ValidationError(path, e.problem) from None
        if not _NS.fullmatch(text):  # after from_string, whose messages say more about the ':'
            raise ValidationError(path, f"{_short(text)} may hold printable ASCII only "
                                        "(no line breaks, control or non-ASCII characters)")
        return parsed

    def encode(self, value):
        return str(value)

    def schema(self, defs):
        return {"type": "string", "minLength": 1, "maxLength": self.max_length, "pattern": NS_PATTERN}


class Nested(Codec):
    def __init__(self, cls: type):
        self.cls = cls

    def decode(self, value, path):
        return self.cls._decode(value, path)

    def encode(self, value):
        return value.as_dict()

    def schema(self, defs):
        name = self.cls.__name__
        if name not in defs:
            defs[name] = {}  # placeholder stops recursion
            defs[name] = _object_schema(self.cls, defs)
        return {"$ref": f"#/$defs/{name}"}


class ListOf(Codec):
    def __init__(self, item: Codec, max_items: int = 1000):
        self.item, self.max_items = item, max_items

    def decode(self, value, path):
        if not isinstance(value, list):
            raise ValidationError(path, f"expected a list, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise ValidationError(path, f"more than {self.max_items} items")
        return [self.item.decode(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def encode(self, value):
        if not isinstance(value, (list, tuple)):  # a str would silently split into characters
            raise ValidationError("", f"expected a list, got {type(value).__name__}")
        return [self.item.encode(v) for v in value]

    def schema(self, defs):
        return {"type": "array", "items": self.item.schema(defs), "maxItems": self.max_items}


class Scalar(Codec):
    """A string or a number: the raw value of a Meta before its ``type`` says which."""

    def decode(self, value, path):
        if isinstance(value, str):
            return Str(4096, min_length=0).decode(value, path)
        return Float().decode(value, path)

    def encode(self, value):
        if isinstance(value, _dt.datetime):
            return instant_to_ms(value)
        return value

    def schema(self, defs):
        return {"type": ["string", "number"]}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One declared field: its Python/wire name, how it is coded, whether it may be absent."""
    name: str
    codec: Codec
    optional: bool
    doc: str
    required: bool


_MISSING = dataclasses.MISSING


def field(codec: Codec, *, optional: bool = False, default: Any = _MISSING,
          default_factory: Any = _MISSING, doc: str = "", required: bool | None = None) -> Any:
    """Declare an entity field.

    Optional fields may be absent or null and default to None. A field with a default is
    filled from it when absent from the wire, unless ``required=True`` (ids: Python callers
    get a fresh one, the wire must always say which).
    """
    if required is None:
        required = not optional and default is _MISSING and default_factory is _MISSING
    if optional and default is _MISSING and default_factory is _MISSING:
        default = None
    kw = {}
    if default is not _MISSING:
        kw["default"] = default
    if default_factory is not _MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(metadata={"codec": codec, "optional": optional, "doc": doc,
                                       "required": required}, **kw)


@functools.cache
def fields(cls: type) -> tuple[FieldInfo, ...]:
    """The declared fields of an entity class, in declaration order (immutable and cached)."""
    return tuple(FieldInfo(f.name, f.metadata["codec"], f.metadata["optional"], f.metadata["doc"],
                           f.metadata["required"])
                 for f in dataclasses.fields(cls) if "codec" in f.metadata)


class Model:
    """Base of every entity: wire form and validation come from ``fields(cls)``."""

    wire_name: ClassVar[str] = ""

    def as_dict(self) -> dict:
        """The wire form (docs/protocol.md): optional fields with no value are left out."""
        out = {}
        for f in fields(type(self)):
            value = getattr(self, f.name)
            if value is None:
                if f.optional:
                    continue
            out[f.name] = f.codec.encode(value) if value is not None else None
        return out

    @classmethod
    def from_dict(cls, value: Any, path: str | None = None) -> "typing.Self":
        """Parse and validate a wire-form dict; any problem raises ``ValidationError``."""
        return cls._decode(value, cls.wire_name if path is None else path)

    @classmethod
    def _decode(cls, value: Any, path: str):
        if not isinstance(value, dict):
            raise ValidationError(path, f"expected an object, got {type(value).__name__}")
        kwargs = {}
        for f in fields(cls):
            raw = value.get(f.name)
            fpath = _join(path, f.name)
            if raw is None:
                if f.required or (not f.optional and f.name in value):
                    raise ValidationError(fpath, "required" if f.name not in value else "must not be null")
                continue
            kwargs[f.name] = f.codec.decode(raw, fpath)
        try:  # __post_init__ and the cross-field rules read input too
            obj = cls(**kwargs)
            obj._check(path)
        except ValidationError:
            raise
        except _INPUT_FAULTS as e:
            raise _slip(path, e) from None
        return obj

    def _check(self, path: str) -> None:
        """Cross-field rules (e.g. valid_to after valid_from); override where needed."""

    def validate(self) -> "typing.Self":
        """Check a Python-built entity against the same rules as wire input."""
        type(self).from_dict(self.as_dict())
        return self




def _object_schema(cls: type, defs: dict) -> dict:
    props, required = {}, []
    for f in fields(cls):
        s = dict(f.codec.schema(defs))
        if f.doc:
            s["description"] = f.doc
        if f.optional:
            s = {"anyOf": [s, {"type": "null"}]} if "$ref" in s else {**s, "type": _nullable(s)}
        if f.required:
            required.append(f.name)
        props[f.name] = s
    out = {"type": "object", "properties": props, "required": required}
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().splitlines()[0]
    return out


def _nullable(s: dict):
    t = s.get("type")
    if t is None:
        return None
    return (t if isinstance(t, list) else [t]) + ["null"]


def json_schema(cls: type, defs: dict | None = None) -> dict:
    """JSON Schema (2020-12) of ``cls``'s wire form; nested entities land in ``$defs``."""
    own = defs is None
    defs = {} if defs is None else defs
    ref = Nested(cls).schema(defs)
    if own:
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **ref, "$defs": defs}
    return ref
