"""Our reader of RMS's ``FTPdetectinfo_<night>.txt``: the night's detections.

Layout (facts from RMS's writer; the code is ours):

- 11 header lines; the first is ``Meteor Count = NNNNNN``, the third ``Processed with RMS
  <version> ...``.
- per detection: a separator line of dashes, the FF file name, a calibration line, then
  ``cam meteor_no rows fps hnr mle bin px/frame rho phi``, then one row per frame:
  ``frame x y ra dec az alt intensity [mag [background snr saturated]]`` (8, 9 or 12
  fields; numbers may be unpadded or negative, so rows are split on whitespace).

RMS drops rows whose centroid is NaN when writing, so a detection may hold fewer rows than it
announces; it never holds more. A row with another NaN (``000nan``: RA, say) is skipped, as
RMS's own reader does. Numbers are ASCII as RMS formats them (see numbers.py). Frames are the
frame numbers of the FF block: never negative (RMS formats them unsigned, so ``-0`` is damage),
written in the order of the frames (equal frames may repeat; going back may not), and within a
day of the FF's start at the detection's fps (a larger offset made the event time overflow).
Anything else that does not fit — a missing field, text where a number belongs, fewer
detections than the count, a file cut mid-line — is a FormatError naming the file and the
line, and the whole night is refused.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError
from .files import read_night_file
from .numbers import ascii_number
from .names import parse_ff_name

HEADER_LINES = 11
COUNT_RE = re.compile(r"^\s*Meteor Count\s*=\s*([0-9]+)\s*$")  # [0-9]: \d is any script's digit
VERSION_RE = re.compile(r"Processed with (RMS [^\s]+)")
SEPARATOR_RE = re.compile(r"^-{20,}\s*$")
ROW_FIELDS = (8, 9, 12)
# A detection's frames lie within its FF block (256 frames); a day at its fps is far past any.
MAX_FRAME_SECONDS = 86400.0


@dataclass(frozen=True)
class Row:
    """One frame of a detection."""
    frame: float
    x: float
    y: float
    ra: float
    dec: float
    az: float
    alt: float
    intensity: float
    magnitude: float | None = None
    background: float | None = None
    snr: float | None = None
    saturated: float | None = None


@dataclass(frozen=True)
class Detection:
    """One meteor as RMS recorded it; ``line`` is where its block starts in the file."""
    ff_name: str
    ff_start: _dt.datetime
    camera_code: str
    meteor_number: int
    fps: float
    angular_speed: float  # pixels per frame
    rho: float
    phi: float
    rows: tuple[Row, ...]
    line: int
    content_hash: str  # of the block's fields, whitespace-normalised

    @property
    def start_time(self) -> _dt.datetime:
        """FF start + first frame / fps, to the millisecond (the wire's resolution)."""
        return _to_ms(self.ff_start + _dt.timedelta(seconds=self.rows[0].frame / self.fps))

    @property
    def duration(self) -> float:
        return (self.rows[-1].frame - self.rows[0].frame) / self.fps

    @property
    def peak_magnitude(self) -> float | None:
        mags = [r.magnitude for r in self.rows if r.magnitude is not None]
        return min(mags) if mags else None


@dataclass(frozen=True)
class DetectInfo:
    """A parsed FTPdetectinfo file."""
    path: Path
    count: int
    rms_version: str | None
    detections: tuple[Detection, ...]


def _to_ms(t: _dt.datetime) -> _dt.datetime:
    return t.replace(microsecond=0) + _dt.timedelta(milliseconds=round(t.microsecond / 1000))


def _floats(path: Path, line_no: int, fields: list[str], what: str) -> list[float]:
    """The fields as numbers, each as RMS writes them (ASCII: see numbers.py); a FormatError
    names the first that is not one."""
    out = []
    for text in fields:
        number = ascii_number(text)
        if number is None:
            raise FormatError(path, line_no, f"{what}: {text[:40]!r} is not a number")
        out.append(number)
    return out


class _Lines:
    """Numbered lines of the file, knowing whether the last one was cut short."""

    def __init__(self, path: Path):
        self.path = path
        data = read_night_file(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise FormatError(path, line, "not text (bytes that are not UTF-8)") from None
        self.cut_short = bool(text) and not text.endswith("\n")
        self.lines = text.splitlines()
        self.pos = 0

    def next(self) -> tuple[int, str] | None:
        if self.pos >= len(self.lines):
            return None
        self.pos += 1
        return self.pos, self.lines[self.pos - 1].rstrip("\r")

    def peek(self) -> str | None:
        return self.lines[self.pos] if self.pos < len(self.lines) else None


def parse(path: str | Path) -> DetectInfo:
    """Read one FTPdetectinfo file; FormatError (file and line) when it does not fit."""
    path = Path(path)
    lines = _Lines(path)
    if lines.cut_short:
        raise FormatError(path, len(lines.lines), "truncated: the last line is cut short (no line end)")
    header = [lines.next() for _ in range(HEADER_LINES)]
    if header[0] is None or not COUNT_RE.match(header[0][1]):
        raise FormatError(path, 1, "not an FTPdetectinfo file: the first line is not 'Meteor Count = N'")
    if header[-1] is None:
        raise FormatError(path, len(lines.lines), f"truncated: the header has {len(lines.lines)} of {HEADER_LINES} lines")
    count = int(COUNT_RE.match(header[0][1]).group(1))
    version = VERSION_RE.search(header[2][1])
    detections = []
    while (item := lines.next()) is not None:
        line_no, text = item
        if not text.strip():
            continue
        if not SEPARATOR_RE.match(text):
            raise FormatError(path, line_no, f"expected a separator line of dashes, found {text[:40]!r}")
        detections.append(_detection(path, lines, line_no))
    if len(detections) != count:
        raise FormatError(path, len(lines.lines), f"truncated: {len(detections)} detection(s) found, "
                                                  f"the header announces {count}")
    return DetectInfo(path, count, version.group(1) if version else None, tuple(detections))


def _detection(path: Path, lines: _Lines, start: int) -> Detection:
    def need(what: str) -> tuple[int, str]:
        item = lines.next()
        if item is None:
            raise FormatError(path, len(lines.lines), f"truncated: the detection starting at line {start} "
                                                      f"ends before its {what}")
        return item

    ff_line, ff_name = need("FF file name")
    ff_name = ff_name.strip()
    stamped = parse_ff_name(ff_name)
    if stamped is None:
        raise FormatError(path, ff_line, f"{ff_name[:60]!r} is not an FF file name (FF_<station>_<date>_<time>_..)")
    need("calibration line")
    params_line, params = need("parameter line")
    fields = params.split()
    if len(fields) != 10:
        raise FormatError(path, params_line, f"expected 10 fields (camera, meteor number, rows, fps, ...), "
                                             f"found {len(fields)}")
    numbers = _floats(path, params_line, fields[1:], "parameter line")
    meteor_no, n_rows, fps, _hnr, _mle, _bin, speed, rho, phi = numbers
    if not all(math.isfinite(v) for v in numbers):
        raise FormatError(path, params_line, "parameter line: every value must be a finite number")
    if not fps > 0:
        raise FormatError(path, params_line, f"fps {fields[3]!r} must be a positive number")
    if not (n_rows.is_integer() and meteor_no.is_integer() and n_rows >= 1 and meteor_no >= 0):
        raise FormatError(path, params_line, "meteor number and row count must be whole numbers, "
                                             "the meteor number not negative, rows at least 1")
    rows: list[Row] = []
    content = [" ".join(fields), ff_name]
    while (peek := lines.peek()) is not None and not SEPARATOR_RE.match(peek):
        row_line, text = lines.next()
        if not text.strip():
            continue
        values = text.split()
        if len(values) not in ROW_FIELDS:
            raise FormatError(path, row_line, f"a row has {len(values)} fields, expected 9 or 12 "
                                              f"(frame x y ra dec az alt intensity mag [background snr saturated])")
        numbers = _floats(path, row_line, values, "row")
        if values[0].startswith("-"):
            raise FormatError(path, row_line, f"frame {values[0][:40]!r} is negative: RMS writes frame numbers "
                                              f"of the FF block, 0 and up")
        content.append(" ".join(values))
        if any(math.isnan(v) for v in numbers):
            continue  # a NaN centroid or magnitude: RMS's own reader skips the row too
        if any(math.isinf(v) for v in numbers):
            raise FormatError(path, row_line, "a row holds an infinite value")
        frame = numbers[0]
        if rows and frame < rows[-1].frame:
            raise FormatError(path, row_line, f"frame {values[0]} comes before the previous row's "
                                              f"{rows[-1].frame:g}: RMS writes rows in frame order")
        if frame / fps > MAX_FRAME_SECONDS:
            raise FormatError(path, row_line, f"frame {values[0][:40]} at {fps:g} fps is more than a day "
                                              f"after the FF file's start")
        rows.append(Row(*numbers))
    if not rows:
        raise FormatError(path, params_line, "the detection has no rows")
    if len(rows) > n_rows:
        raise FormatError(path, params_line, f"the detection announces {int(n_rows)} rows but holds {len(rows)}")
    digest = hashlib.sha256("\n".join(content).encode()).hexdigest()
    return Detection(ff_name=ff_name, ff_start=stamped.start, camera_code=fields[0], meteor_number=int(meteor_no),
                     fps=fps, angular_speed=speed, rho=rho, phi=phi, rows=tuple(rows), line=start,
                     content_hash=digest)
