"""Fixtures for the web pages: a served archive open to readers (``public_read``) holding a
small network (``sample``): three cameras, one of them silent for days, a night of events, a
meteor two cameras saw together (linked into a coincidence group by the matcher, as the
notifier beside ``meteorpi serve`` does), an event whose meta and file name are hostile markup,
and a real PNG image so ``<img>`` has something to show.
"""
from __future__ import annotations

import datetime as _dt
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meteorpi_db import MeteorDatabase
from meteorpi_model import Event, Meta, Point, now
from meteorpi_server import create_app
from meteorpi_server.synthetic_night import camera_status

from .server_fixtures import add_users, serve_in_thread

HOSTILE_SCRIPT = "<script>window.__meteorpi_pwned = 1</script>"
HOSTILE_IMG = '"><img src=x onerror="window.__meteorpi_pwned = 2">'
HOSTILE_NAME = '"><img src=x onerror=window.__meteorpi_pwned=3>.txt'


def png_bytes(width: int = 16, height: int = 12) -> bytes:
    """A real PNG (a blue gradient): browsers decode it, so an image error would be ours."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (20, 40 + 10 * y, 120 + 8 * x))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass
class Sample:
    """What ``sample_archive`` recorded, for tests to look for."""
    cameras: list[str]
    silent: str
    events: list[Event] = field(default_factory=list)
    pair: tuple[Event, Event] | None = None
    hostile: Event | None = None
    with_image: Event | None = None


def _status(db: MeteorDatabase, camera_id: str, lat: float, long: float, at: _dt.datetime, **changes):
    status = camera_status(camera_id)
    status.location.lat, status.location.long = lat, long
    status.regions = [[Point(x=40, y=40), Point(x=680, y=60), Point(x=600, y=540), Point(x=80, y=500)]]
    for name, value in changes.items():
        setattr(status, name, value)
    return db.update_camera_status(status, time=at)


def sample_archive(db: MeteorDatabase, workdir: Path) -> Sample:
    """Record the sample network on ``db`` (cameras, statuses, events, files with bytes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    start = now().replace(microsecond=0) - _dt.timedelta(hours=6)
    sample = Sample(cameras=["north-1", "south-2", "quiet-3"], silent="quiet-3")
    _status(db, "north-1", 55.95, -3.19, start - _dt.timedelta(days=3), lens="old lens")
    _status(db, "north-1", 55.95, -3.19, start - _dt.timedelta(hours=1))
    _status(db, "south-2", 54.97, -1.61, start - _dt.timedelta(hours=1))  # 150 km from north-1
    _status(db, "quiet-3", 52.20, 0.12, start - _dt.timedelta(days=5))
    db.register_event("quiet-3", start - _dt.timedelta(days=5) + _dt.timedelta(hours=1), "meteorpi:meteor")
    image_path = workdir / "frame.png"
    image_path.write_bytes(png_bytes())
    for i in range(4):
        for camera in ("north-1", "south-2"):
            offset = _dt.timedelta(minutes=20 * i, seconds=(0 if camera == "north-1" else 40))
            sample.events.append(db.register_event(camera, start + offset, "meteorpi:meteor",
                                                   event_meta=[Meta("meteorpi:duration", 0.5 + i)]))
    # Seen by both cameras, 1.2 s and 150 km apart: a coincidence (once the matcher has linked it).
    at = start + _dt.timedelta(hours=2)
    image = db.register_file(image_path, "image/png", "meteorpi:bright_frame", at, [], "north-1", file_name="frame.png")
    first = db.register_event("north-1", at, "meteorpi:meteor", [image],
                              [Meta("meteorpi:duration", 1.75), Meta("meteorpi:classification", "fireball")])
    second = db.register_event("south-2", at + _dt.timedelta(seconds=1.2), "meteorpi:meteor",
                               event_meta=[Meta("meteorpi:duration", 1.5)])
    sample.pair, sample.with_image = (first, second), first
    log_path = workdir / "hostile.txt"
    log_path.write_text("a log line\n")
    hostile_file = db.register_file(log_path, "text/plain", "meteorpi:log", at + _dt.timedelta(minutes=30), [],
                                    "north-1", file_name=HOSTILE_NAME)
    sample.hostile = db.register_event(
        "north-1", at + _dt.timedelta(minutes=30), "meteorpi:meteor", [hostile_file],
        [Meta("meteorpi:note", HOSTILE_SCRIPT), Meta("meteorpi:comment", HOSTILE_IMG)])
    sample.events += [first, second, sample.hostile]
    return sample


@dataclass
class PageServer:
    url: str
    app: object
    db: MeteorDatabase
    sample: Sample


@pytest.fixture(scope="session")
def page_server(make_database, tmp_path_factory):
    """The import service with pages, open to anonymous readers, over the sample network."""
    db = make_database("meteorpi_pages")
    db.config.server.public_read = True
    add_users(db)
    sample = sample_archive(db, tmp_path_factory.mktemp("page-sample"))
    from .watch_fixtures import drain  # here: a plugin module imported early would not be assert-rewritten
    drain(db)  # the coincidence groups, as the notifier would link them
    app = create_app(db=db)
    url, server = serve_in_thread(app)
    yield PageServer(url, app, db, sample)
    server.shutdown()
    hub = app.extensions["meteorpi"]._feed_hub
    if hub is not None:
        hub.stop()
