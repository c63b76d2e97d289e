"""A synthetic night on a camera node: one camera status, events with their files, stand-alone files.

Built through the node's own API (``update_camera_status``, ``register_file``,
``register_event``) so the store looks exactly like a real node's, and from a fixed seed so
every run replicates the same bytes. File bytes are random: they neither compress nor
deduplicate, so neither side gains from that.
"""
from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass
from pathlib import Path

from meteorpi_db import MeteorDatabase
from meteorpi_model import CameraStatus, Location, Meta, Orientation, Point

NIGHT_START = _dt.datetime(2026, 1, 15, 18, 0, tzinfo=_dt.timezone.utc)
NIGHT_SECONDS = 12 * 3600


@dataclass(frozen=True)
class NightSpec:
    """How big a night is: ``events`` x ``files_per_event`` files of ``file_size`` bytes, plus
    ``standalone_files`` of the same size."""
    events: int
    files_per_event: int
    file_size: int
    standalone_files: int

    @property
    def files(self) -> int:
        return self.events * self.files_per_event + self.standalone_files

    @property
    def entities(self) -> int:
        """Events plus file records (those in events included): what replication moves."""
        return self.events + self.files

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_size

    def describe(self) -> str:
        return (f"{self.events} events x {self.files_per_event} files x {_size(self.file_size)} + "
                f"{self.standalone_files} files ({_size(self.total_bytes)})")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            value = n / scale
            return f"{value:g} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} B"


def camera_status(camera_id: str, rng: random.Random) -> CameraStatus:
    """A plausible status: a site in the UK pointing up, one visible-sky polygon."""
    return CameraStatus(
        camera_id=camera_id, lens="Fujinon 2.7mm", sensor="Watec 902H2", software_version=2,
        valid_from=NIGHT_START, inst_name="bench observatory", inst_url="https://example.org/bench",
        location=Location(lat=52.2 + rng.random(), long=-0.1 - rng.random(), gps=True, error=5.0),
        orientation=Orientation(alt=90.0, az=0.0, rot=0.0, error=1.0, width=120.0),
        regions=[[Point(x=0, y=0), Point(x=720, y=0), Point(x=720, y=576), Point(x=0, y=576)]])


def build_night(db: MeteorDatabase, spec: NightSpec, seed: int, scratch: Path,
                camera_id: str = "bench-cam") -> None:
    """Register ``spec``'s night on ``db`` for ``camera_id``; ``scratch`` holds one temp file."""
    rng = random.Random(seed)
    db.update_camera_status(camera_status(camera_id, rng), time=NIGHT_START, camera_id=camera_id)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"night-{camera_id}.bin"
    try:
        step = NIGHT_SECONDS / max(spec.events + spec.standalone_files, 1)
        for i in range(spec.events):
            when = NIGHT_START + _dt.timedelta(seconds=1 + i * step)
            files = [_register(db, rng, tmp, spec.file_size, when, camera_id, j)
                     for j in range(spec.files_per_event)]
            db.register_event(camera_id, when, "meteorpi:meteor", files, [
                Meta(key="meteorpi:duration", value=round(rng.uniform(0.2, 3.0), 3)),
                Meta(key="meteorpi:peak_magnitude", value=round(rng.uniform(-4.0, 3.0), 2)),
                Meta(key="meteorpi:classification", value=rng.choice(["meteor", "plane", "satellite"])),
            ])
        for i in range(spec.standalone_files):
            when = NIGHT_START + _dt.timedelta(seconds=1 + (spec.events + i) * step)
            _register(db, rng, tmp, spec.file_size, when, camera_id, i, semantic="meteorpi:sky_clarity")
    finally:
        tmp.unlink(missing_ok=True)


def _register(db: MeteorDatabase, rng: random.Random, tmp: Path, size: int, when: _dt.datetime,
              camera_id: str, index: int, semantic: str = "meteorpi:triggers/event/video"):
    tmp.write_bytes(rng.randbytes(size))
    return db.register_file(tmp, "video/mp4", semantic, when,
                            [Meta(key="meteorpi:frame_count", value=rng.randint(10, 500))],
                            camera_id, file_name=f"{when:%Y%m%d%H%M%S}_{index}.mp4")
