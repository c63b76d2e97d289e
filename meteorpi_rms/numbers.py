"""Numbers as RMS writes them: ASCII text, read strictly.

RMS writes every number of its files with Python's ``format`` (``{:06.4f}``, ``{:+08.4f}``,
``{:06d}``, ``str(round(x, 1))``...): ASCII digits, an optional sign, an optional decimal point
and, from ``str()`` of a large float, an exponent. A value it could not compute comes out as
``nan`` (or ``inf``), zero-padded to the column's width (``000nan``, ``+0000nan``): RMS's own
reader skips rows holding ``00nan``.

Python's ``float()``/``int()`` accept far more: ``1_0`` (read as 10), other scripts' digits
(``١٢``), surrounding spaces, ``Infinity``. Such text in a number column is damage, not data,
and taking it as a number registered garbled detections as new events; so numbers are matched
by the patterns below first and refused otherwise.
"""
from __future__ import annotations

import re

# Digits, sign, decimal point, exponent: ASCII only ([0-9], never \d, which is any script's digit).
NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# What Python's format writes for a value that is not finite, zero-padded as RMS pads its columns.
NOT_FINITE_RE = re.compile(r"[+-]?0*(?:nan|inf)")


def ascii_number(text: str) -> float | None:
    """The number ``text`` holds as RMS writes numbers (NaN and infinities included), or None
    when it is anything else."""
    if NUMBER_RE.fullmatch(text):
        return float(text)
    if NOT_FINITE_RE.fullmatch(text):
        return float(text.replace("0", ""))  # "+0000nan" -> "+nan": the zeros are padding
    return None
