"""A synthetic night of one camera, registered on a node as a camera would: for the demo and tests.

One camera status, then events (a meteor each) with several image-like files, and stand-alone
files (time-lapse frames), all at night times within the status' validity, with metadata of
every kind (string, number, date). The bytes are random (as incompressible as real JPEGs) with a
JPEG header, and sizes vary around the one asked for, as real images do.
"""
from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass, field
from pathlib import Path

from meteorpi_db import MeteorDatabase
from meteorpi_model import CameraStatus, Event, FileRecord, Location, Meta, Orientation, Point, now

EVENT_FILE_TYPES = ("meteorpi:triggers/event/maxBrightness/lensCorr", "meteorpi:triggers/event/timeAverage",
                    "meteorpi:triggers/event/previousFrame", "meteorpi:triggers/event/video")
STANDALONE_TYPE = "meteorpi:timelapse/frame/bgrdSub/lensCorr"
JPEG_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
NIGHT_HOURS = 8


@dataclass
class Night:
    """What was registered."""
    status: CameraStatus
    events: list[Event] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)   # stand-alone ones

    @property
    def all_files(self) -> list[FileRecord]:
        return [f for e in self.events for f in e.files] + self.files

    @property
    def total_bytes(self) -> int:
        return sum(f.file_size for f in self.all_files)

    @property
    def entities(self) -> int:
        """Entities an exporter sends: events (with their files) and stand-alone files."""
        return len(self.events) + len(self.files)


def camera_status(camera_id: str) -> CameraStatus:
    """A plausible all-sky camera (its status_id and validity are set when it is recorded)."""
    return CameraStatus(
        camera_id=camera_id, lens="Fujinon YV2.8x2.8SA-2", sensor="Watec 902H2 Ultimate", software_version=2,
        valid_from=now(), inst_name="meteorpi demo observatory", inst_url="https://example.org/meteorpi",
        location=Location(lat=52.2053, long=0.1218, gps=True, error=4.5),
        orientation=Orientation(alt=62.0, az=185.5, rot=1.5, error=0.3, width=84.0),
        regions=[[Point(x=0, y=0), Point(x=719, y=0), Point(x=719, y=575), Point(x=0, y=575)]])


def _image_bytes(rng: random.Random, size: int) -> bytes:
    return (JPEG_HEADER + rng.randbytes(max(0, size - len(JPEG_HEADER) - 2)) + b"\xff\xd9")[:size]


def _register(db: MeteorDatabase, incoming: Path, rng: random.Random, name: str, size: int, semantic_type: str,
              time: _dt.datetime, camera_id: str, extra_meta: list[Meta]) -> FileRecord:
    path = incoming / name
    path.write_bytes(_image_bytes(rng, size))
    try:
        return db.register_file(path, "image/jpeg", semantic_type, time,
                                [Meta("meteorpi:exposure_time", 0.04), *extra_meta], camera_id, file_name=name)
    finally:
        path.unlink()


def generate_night(db: MeteorDatabase, incoming: Path, camera_id: str = "demo-cam-1", events: int = 20,
                   files_per_event: int = 3, file_size: int = 256 * 1024, standalone: int = 5,
                   seed: int | None = None, start: _dt.datetime | None = None, exact_size: bool = False) -> Night:
    """Register a night of ``camera_id`` on ``db`` (source files are written to ``incoming``
    and removed once copied into the store); returns what was registered. Sizes vary by up
    to a quarter around ``file_size`` unless ``exact_size`` (the benchmark counts bytes)."""
    rng = random.Random(seed)
    incoming.mkdir(parents=True, exist_ok=True)
    start = start or (now() - _dt.timedelta(hours=NIGHT_HOURS + 2))
    status = db.update_camera_status(camera_status(camera_id), time=start - _dt.timedelta(minutes=30))
    night = Night(status)
    step = _dt.timedelta(hours=NIGHT_HOURS) / max(1, events + standalone)

    def size() -> int:
        return file_size if exact_size else max(1, int(file_size * rng.uniform(0.75, 1.25)))

    for i in range(events):
        time = start + step * i + _dt.timedelta(milliseconds=rng.randrange(1000))
        files = [_register(db, incoming, rng, f"event-{i:04d}-{k}.jpg", size(), EVENT_FILE_TYPES[k % 4],
                           time + _dt.timedelta(milliseconds=40 * k), camera_id,
                           [Meta("meteorpi:frame_index", k)])
                 for k in range(files_per_event)]
        meta = [Meta("meteorpi:duration", round(rng.uniform(0.2, 2.5), 3)),
                Meta("meteorpi:peak_time", time + _dt.timedelta(milliseconds=rng.randrange(500))),
                Meta("meteorpi:classification", rng.choice(["meteor", "satellite", "plane"]))]
        night.events.append(db.register_event(camera_id, time, "meteorpi:meteor", files, meta))
    for i in range(standalone):
        time = start + step * (events + i)
        night.files.append(_register(db, incoming, rng, f"timelapse-{i:04d}.jpg", size(), STANDALONE_TYPE,
                                     time, camera_id, [Meta("meteorpi:sky_clarity", rng.uniform(0, 100))]))
    return night
