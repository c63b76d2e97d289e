"""Command-line values checked as the model checks the same values on the wire.

Shared by ``meteorpi export`` and ``meteorpi feed``, so a camera id or a type means the same
to both and a typo is refused with one line instead of stored (or sent) as a filter that never
matches. Each check raises the model's ValidationError naming the option; callers turn it into
their usual click error.
"""
from __future__ import annotations

from meteorpi_model import ValidationError
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.fields import NS
from meteorpi_model.watch import EVENT_TYPE_PATTERN


def printable(text: str) -> str:
    """``text`` with anything that would drive a terminal escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def check_camera(text: str, option: str = "--camera") -> str:
    """A camera id, by the model's CAMERA_ID codec."""
    return CAMERA_ID.decode(text, option)


def check_type(text: str, option: str) -> str:
    """An event or semantic type (``*`` wildcards allowed where the caller matches patterns):
    the model's ``NS`` codec (printable ASCII, a namespace before the first ':') and its codec
    for types a filter names (``EVENT_TYPE_PATTERN``: no spaces); a bare type means
    ``meteorpi:``'s, as on the wire."""
    if text and not text.isspace() and any(c.isspace() for c in text) and text.isprintable():
        raise ValidationError(option, f"{ascii(text)} contains a space; types are identifiers such as "
                                      f"meteorpi:meteor")
    EVENT_TYPE_PATTERN.decode(text, option)
    return str(NS().decode(text, option))
