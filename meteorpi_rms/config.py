"""A station's ``.config`` (INI-style) and its platepar (JSON): where the camera is and points.

RMS's ``.config`` separates keys from values by ``:`` or ``=`` and allows a ``;`` comment after
a value (preceded by whitespace), so the standard library's configparser reads it with those
settings and without interpolation (values such as GStreamer pipelines hold ``%`` and ``=``).
The platepar (``platepar_cmn2010.cal``, or one per FF file in
``platepars_all_recalibrated.json``) is the astrometric calibration: pointing azimuth and
altitude, rotation from the horizon, field of view, resolution and plate scale.
"""
from __future__ import annotations

import configparser
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError
from .files import read_night_file
from .numbers import ascii_number

PLATEPAR_NAME = "platepar_cmn2010.cal"
RECALIBRATED_NAME = "platepars_all_recalibrated.json"


@dataclass(frozen=True)
class StationConfig:
    """What meteorpi uses of ``.config``."""
    station_id: str
    latitude: float
    longitude: float
    elevation: float
    fps: float
    width: int
    height: int
    fov_w: float | None
    fov_h: float | None


@dataclass(frozen=True)
class Platepar:
    """What meteorpi uses of a platepar: the camera's pointing and lens."""
    az: float
    alt: float
    rotation: float
    fov_h: float
    fov_v: float
    x_res: int
    y_res: int
    scale: float  # pixels per degree


def _number(path: Path, section: str, key: str, value: str | None, kind=float, low=None, high=None):
    if value is None:
        raise FormatError(path, None, f"[{section}] {key} is missing")
    parsed = ascii_number(value.strip())  # ASCII as RMS writes it: never 1_0 (10) or other scripts' digits
    if parsed is None or (kind is int and math.isfinite(parsed) and not parsed.is_integer()):
        raise FormatError(path, None, f"[{section}] {key}: {value!r} is not a{' whole' if kind is int else ''} number")
    number = kind(parsed) if math.isfinite(parsed) else parsed
    if isinstance(number, float) and not math.isfinite(number) or \
            (low is not None and number < low) or (high is not None and number > high):
        raise FormatError(path, None, f"[{section}] {key}: {value!r} is out of range [{low}, {high}]")
    return number


def read_config(path: Path) -> StationConfig:
    """Parse ``.config``; a FormatError names the key that is missing or wrong."""
    parser = configparser.ConfigParser(delimiters=(":", "="), inline_comment_prefixes=(";",),
                                       interpolation=None, strict=False)
    text = read_night_file(path).decode("utf-8", errors="replace")
    try:
        parser.read_string(text, str(path))
    except configparser.Error as e:
        line = getattr(e, "lineno", None)
        raise FormatError(path, line, f"not an RMS .config: {e.message.splitlines()[0]}") from None
    system = parser["System"] if parser.has_section("System") else {}
    capture = parser["Capture"] if parser.has_section("Capture") else {}
    station = (system.get("stationID") or "").strip()
    if not station or not (station.isascii() and station.isalnum()):
        raise FormatError(path, None, f"[System] stationID: {station!r} is not a station id (letters and digits)")
    fov_w, fov_h = capture.get("fov_w"), capture.get("fov_h")
    return StationConfig(
        station_id=station,
        latitude=_number(path, "System", "latitude", system.get("latitude"), low=-90, high=90),
        longitude=_number(path, "System", "longitude", system.get("longitude"), low=-180, high=180),
        elevation=_number(path, "System", "elevation", system.get("elevation", "0"), low=-1000, high=10000),
        fps=_number(path, "Capture", "fps", capture.get("fps"), low=0.1, high=10000),
        width=_number(path, "Capture", "width", capture.get("width"), int, 1, 100_000),
        height=_number(path, "Capture", "height", capture.get("height"), int, 1, 100_000),
        fov_w=_number(path, "Capture", "fov_w", fov_w, low=0, high=360) if fov_w else None,
        fov_h=_number(path, "Capture", "fov_h", fov_h, low=0, high=360) if fov_h else None)


def _platepar(path: Path, data, where: str = "") -> Platepar:
    if not isinstance(data, dict):
        raise FormatError(path, None, f"{where}not a platepar (expected a JSON object)")

    def value(key, kind=float, low=None, high=None):
        raw = data.get(key)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise FormatError(path, None, f"{where}{key}: {raw!r} is not a number")
        return _number(path, "platepar", f"{where}{key}", str(raw), kind, low, high)

    return Platepar(az=value("az_centre", low=-360, high=360), alt=value("alt_centre", low=-90, high=90),
                    rotation=value("rotation_from_horiz", low=-360, high=360),
                    fov_h=value("fov_h", low=0, high=360), fov_v=value("fov_v", low=0, high=360),
                    x_res=value("X_res", int, 1, 100_000), y_res=value("Y_res", int, 1, 100_000),
                    scale=value("F_scale", low=0))


def _load_json(path: Path):
    data = read_night_file(path)
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(path, e.lineno, f"not JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise FormatError(path, None, "not JSON: not UTF-8 text") from None


def read_platepar(path: Path) -> Platepar:
    """Parse ``platepar_cmn2010.cal``."""
    return _platepar(path, _load_json(path))


def read_recalibrated(path: Path) -> dict[str, Platepar]:
    """Parse ``platepars_all_recalibrated.json``: FF file name -> its platepar. An entry RMS
    could not fill (a failed recalibration) is left out; none usable is a FormatError."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, None, "not a set of platepars (expected a JSON object keyed by FF name)")
    out, first_problem = {}, None
    for name, entry in sorted(data.items()):
        try:
            out[name] = _platepar(path, entry, f"{name}: ")
        except FormatError as e:
            first_problem = first_problem or e
    if data and not out:
        raise first_problem
    return out
