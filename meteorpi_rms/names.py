"""What RMS file names say: station, night and UTC start time.

An FF file ``FF_<STATION>_<YYYYMMDD>_<HHMMSS>_<fraction>_<frame>.fits`` (or ``.bin``) holds 256
frames starting at the time in its name; the fraction has 3 digits (milliseconds) or, in some
RMS versions, 6 (microseconds). ``FR_*.bin`` fireball cut-outs carry the time of their FF. A
night is ``<STATION>_<YYYYMMDD>_<HHMMSS>_<microseconds>``, the name of its folders and of its
``FTPdetectinfo_<night>.txt``. Our ids come from these names, never from where a folder is.
"""
from __future__ import annotations

import datetime as _dt
import functools
import re
from dataclasses import dataclass

STATION = r"[A-Za-z0-9]+"
_STAMP = r"(?P<date>\d{8})_(?P<time>\d{6})_(?P<fraction>\d{3}|\d{6})"
# re.ASCII: \d is [0-9] only; else another script's digits in the fraction were read by int().
NIGHT_RE = re.compile(rf"^(?P<station>{STATION})_(?P<date>\d{{8}})_(?P<time>\d{{6}})_(?P<fraction>\d{{6}})$", re.ASCII)
FF_RE = re.compile(rf"^FF_(?P<station>{STATION})_{_STAMP}_(?P<frame>\d+)\.(?:fits|bin)$", re.ASCII)
FR_RE = re.compile(rf"^FR_(?P<station>{STATION})_{_STAMP}_(?P<frame>\d+)\.bin$", re.ASCII)
FTPDETECTINFO_RE = re.compile(rf"^FTPdetectinfo_(?P<night>{STATION}_\d{{8}}_\d{{6}}_\d{{6}})\.txt$", re.ASCII)


@dataclass(frozen=True)
class Stamped:
    """A name's station and UTC time; ``key`` pairs an FR file with its FF."""
    station: str
    start: _dt.datetime

    @property
    def key(self) -> tuple[str, _dt.datetime]:
        return self.station, self.start


def _stamped(m: re.Match | None) -> Stamped | None:
    """The match's station and time; None when there is no match or no such date."""
    if m is None:
        return None
    fraction = m.group("fraction")
    try:
        base = _dt.datetime.strptime(m.group("date") + m.group("time"), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    micro = int(fraction) * (1000 if len(fraction) == 3 else 1)
    return Stamped(m.group("station"), base.replace(microsecond=micro, tzinfo=_dt.timezone.utc))


@functools.lru_cache(maxsize=8192)  # names are parsed again at every step of a night
def parse_ff_name(name: str) -> Stamped | None:
    """Station and start of an FF file name, or None when ``name`` is not one."""
    return _stamped(FF_RE.match(name))


@functools.lru_cache(maxsize=8192)  # names are parsed again at every step of a night
def parse_fr_name(name: str) -> Stamped | None:
    """Station and time of an FR file name (that of its FF), or None."""
    return _stamped(FR_RE.match(name))


@functools.lru_cache(maxsize=8192)  # names are parsed again at every step of a night
def parse_night_name(name: str) -> Stamped | None:
    """Station and start of a night name ``<STATION>_<YYYYMMDD>_<HHMMSS>_<micro>``, or None."""
    return _stamped(NIGHT_RE.match(name))


def ftpdetectinfo_night(file_name: str) -> str | None:
    """The night an ``FTPdetectinfo_<night>.txt`` belongs to; None for any other name, and for
    the variants RMS keeps beside it (``backup``, ``uncalibrated``, ``unfiltered``)."""
    m = FTPDETECTINFO_RE.match(file_name)
    return m.group("night") if m else None
