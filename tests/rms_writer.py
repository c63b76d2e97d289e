"""A small writer of what RMS leaves on disk, so tests build their own nights (no copied data).

Follows the facts of the format (see meteorpi_rms.ftpdetectinfo): an 11-line header whose
first line is the count, then per detection a separator, the FF name, a calibration line, the
parameter line and one row per frame, 9 or 12 columns, padded as RMS pads them or not at all.
"""
from __future__ import annotations

import datetime as _dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

STATION = "XX0001"
NIGHT_START = _dt.datetime(2026, 8, 12, 19, 2, 11, 123456, tzinfo=_dt.timezone.utc)
FF_BLOCK_SECONDS = 256 / 25.0


def night_name(station: str = STATION, start: _dt.datetime = NIGHT_START) -> str:
    return f"{station}_{start:%Y%m%d_%H%M%S}_{start.microsecond:06d}"


def ff_name(station: str, start: _dt.datetime, frame: int = 0, micro: bool = False) -> str:
    fraction = f"{start.microsecond:06d}" if micro else f"{start.microsecond // 1000:03d}"
    return f"FF_{station}_{start:%Y%m%d_%H%M%S}_{fraction}_{frame:07d}.fits"


@dataclass
class Meteor:
    """One detection: which FF block, its frames, and whether its FF (and an FR) is on disk."""
    block: int
    first_frame: float = 30.0
    frames: int = 12
    meteor_number: int = 1
    keep_ff: bool = True
    fr: bool = False
    magnitude0: float = 1.5
    ra0: float = 280.5
    dec0: float = -12.25


@dataclass
class NightSpec:
    station: str = STATION
    start: _dt.datetime = NIGHT_START
    meteors: list[Meteor] = field(default_factory=lambda: [Meteor(3), Meteor(7, keep_ff=False), Meteor(12, fr=True)])
    columns: int = 12
    padded: bool = True
    fps: float = 25.0
    latitude: float = 45.125
    longitude: float = -81.5
    az: float = 123.4
    alt: float = 55.0
    platepar: bool = True
    ff_size: int = 4096
    micro_ff_names: bool = False
    seed: int = 1


def ff_start(spec: NightSpec, block: int) -> _dt.datetime:
    t = spec.start + _dt.timedelta(seconds=2 + block * FF_BLOCK_SECONDS)
    return t if spec.micro_ff_names else t.replace(microsecond=t.microsecond // 1000 * 1000)


def write_config(folder: Path, spec: NightSpec) -> None:
    (folder / ".config").write_text(
        "; RMS config written by a test\n\n[System]\n\n"
        f"stationID: {spec.station}\n"
        f"latitude: {spec.latitude} ; WGS84 +N  (degrees )\n"
        f"longitude: {spec.longitude} ; WGS84 +E (degrees)\n"
        "elevation: 327 ; mean sea level (meters)\ncams_code: 0\n\n[Capture]\n\n"
        "device: rtspsrc location=rtsp://192.168.42.10:554/user=admin&password=&channel=1 ! appsink ; device id\n"
        f"width: 1280\nheight: 720\nfps: {spec.fps} ; frames per second\nfov_w: 87\nfov_h: 45\n\n"
        "[MeteorDetection]\n\nff_min_stars = 20 \nk1: 3.5\n")


def platepar_dict(spec: NightSpec) -> dict:
    return {"station_code": spec.station, "lat": spec.latitude, "lon": spec.longitude, "elev": 327.0,
            "X_res": 1280, "Y_res": 720, "fov_h": 88.2, "fov_v": 46.1, "az_centre": spec.az, "alt_centre": spec.alt,
            "rotation_from_horiz": -3.25, "F_scale": 14.5, "version": 2}


def _row(spec: NightSpec, m: Meteor, i: int) -> str:
    frame, x, y = m.first_frame + i, 640.0 - 7.5 * i, 20.0 + 3.25 * i
    ra, dec, az, alt = m.ra0 + 0.4 * i, m.dec0 - 0.3 * i, 359.5 - 0.5 * i, -0.5 + 0.4 * i
    mag = m.magnitude0 - 0.5 * i if i < m.frames // 2 else m.magnitude0 - 0.5 * (m.frames - i)
    level = 1000 + 10 * i
    if spec.padded:
        row = f"{frame:09.4f} {x:07.2f} {y:07.2f} {ra:010.6f} {dec:+010.6f} {az:010.6f} {alt:+010.6f} {level:09d} {mag:+06.2f}"
        return row + (f" {50 + i:06d} {12.5:05.2f} {0:06d}" if spec.columns == 12 else "")
    row = f"{frame} {x} {y} {ra} {dec} {az} {alt} {level} {mag}"
    return row + (f" {50 + i} 12.5 0" if spec.columns == 12 else "")


def detectinfo_text(spec: NightSpec) -> str:
    name = night_name(spec.station, spec.start)
    header = [f"Meteor Count = {len(spec.meteors):06d}", "-" * 53,
              "Processed with RMS 1.0 20260801_101010 0123abcd on 2026-08-13 06:00:00 UTC", "-" * 53,
              f"FF  folder = /home/rms/RMS_data/CapturedFiles/{name}", f"CAL folder = /home/rms/RMS_data/CapturedFiles/{name}",
              "-" * 53, "FF  file processed", "CAL file processed",
              "Cam# Meteor# #Segments fps hnr mle bin Pix/fm Rho Phi",
              "Per segment:  Frame# Col Row RA Dec Azim Elev Inten Mag" + (" Bcknd SNR NSatPx" if spec.columns == 12 else "")]
    lines = list(header)
    for m in spec.meteors:
        lines += ["-" * 55, ff_name(spec.station, ff_start(spec, m.block), micro=spec.micro_ff_names),
                  "Recalibrated with RMS on: 2026-08-13 06:00:00 UTC",
                  f"   0 {m.meteor_number:04d} {m.frames:04d} {spec.fps:07.2f} 000.0 000.0  00.0 {7.9:>5.1f} -123.4 0045.6"]
        lines += [_row(spec, m, i) for i in range(m.frames)]
    return "\n".join(lines) + "\n"


def write_night(parent: Path, spec: NightSpec | None = None, folder_name: str | None = None) -> Path:
    """A finished night folder under ``parent``; its path."""
    spec = spec or NightSpec()
    name = night_name(spec.station, spec.start)
    folder = parent / (folder_name or name)
    folder.mkdir(parents=True)
    rng = random.Random(spec.seed)
    write_config(folder, spec)
    if spec.platepar:
        (folder / "platepar_cmn2010.cal").write_text(json.dumps(platepar_dict(spec), indent=4))
        (folder / "platepars_all_recalibrated.json").write_text(json.dumps(
            {ff_name(spec.station, ff_start(spec, m.block)): platepar_dict(spec) for m in spec.meteors}))
    for m in spec.meteors:
        start = ff_start(spec, m.block)
        if m.keep_ff:
            (folder / ff_name(spec.station, start, micro=spec.micro_ff_names)).write_bytes(rng.randbytes(spec.ff_size))
        if m.fr:
            fr = f"FR_{spec.station}_{start:%Y%m%d_%H%M%S}_{start.microsecond // 1000:03d}_0000512.bin"
            (folder / fr).write_bytes(rng.randbytes(1024))
    (folder / f"{name}_stack_{len(spec.meteors)}_meteors.jpg").write_bytes(b"\xff\xd8" + rng.randbytes(2000))
    (folder / f"{name}_FF_thumbs.jpg").write_bytes(b"\xff\xd8" + rng.randbytes(1500))
    (folder / f"{name}_timelapse.mp4").write_bytes(rng.randbytes(3000))
    (folder / f"CALSTARS_{name}.txt").write_text("Star list\n")
    (folder / f"FTPdetectinfo_{name}.txt").write_text(detectinfo_text(spec))
    (folder / f"FTPdetectinfo_{name}_unfiltered.txt").write_text(detectinfo_text(spec))
    return folder
