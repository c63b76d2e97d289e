"""A synthetic night on a camera node: one camera status, events with their files, stand-alone files.

Built by the demo's generator (meteorpi_server.synthetic_night) through the node's own API,
so the store looks exactly like a real node's, from a fixed seed so every run replicates the
same bytes, with exact sizes so bytes can be counted. File bytes are random: they neither compress nor
deduplicate, so neither side gains from that.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from meteorpi_db import MeteorDatabase
from meteorpi_model import CameraStatus
from meteorpi_server import synthetic_night

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


def camera_status(camera_id: str) -> CameraStatus:
    """The demo's plausible camera, valid from the start of the bench's night."""
    return dataclasses.replace(synthetic_night.camera_status(camera_id), valid_from=NIGHT_START)


def build_night(db: MeteorDatabase, spec: NightSpec, seed: int, scratch: Path,
                camera_id: str = "bench-cam") -> None:
    """Register ``spec``'s night on ``db`` for ``camera_id`` (the demo's generator, exact sizes)."""
    synthetic_night.generate_night(db, scratch / f"night-{camera_id}", camera_id=camera_id, events=spec.events,
                                   files_per_event=spec.files_per_event, file_size=spec.file_size,
                                   standalone=spec.standalone_files, seed=seed, start=NIGHT_START,
                                   exact_size=True)
