"""Turning a finished RMS night into meteorpi entities and registering them all or nothing.

What becomes what:

- ``.config`` (+ the platepar when present) -> the camera status of camera ``stationID``;
  a new status only when position or pointing (rounded: 1e-5 deg, 0.1 deg) changes.
- each detection of ``FTPdetectinfo`` -> one ``meteorpi:meteor`` event at FF start + first
  frame / fps, with its FF file and the FR files of the same time, when they are present.
- night products (FTPdetectinfo, .config, platepars, stacks, thumbnails, timelapse,
  CALSTARS, logs, FR files of no detection) -> stand-alone files with ``rms:*`` types.

Steps: read and check everything (a FormatError refuses the night before anything is
written), copy the bytes into the file store (content-addressed, temp + fsync + rename), check
that RMS did not delete a source meanwhile, then register statuses, events and files in one
transaction (``MeteorDatabase.register_recorded``).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from meteorpi_db import Conflict, MeteorDatabase, SourceNotRegular
from meteorpi_db.registrations import Registered
from meteorpi_model import CameraStatus, Event, FileRecord, Location, Meta, Orientation

from . import ids
from .config import PLATEPAR_NAME, RECALIBRATED_NAME, Platepar, StationConfig, read_config, read_platepar, read_recalibrated
from .errors import FormatError, NightInProgress, NightVanished, NotRegularFile
from .ftpdetectinfo import DetectInfo, Detection, parse
from .names import parse_ff_name, parse_fr_name, parse_night_name
from .night import NightFolder, find_nights, in_progress_elsewhere, mime_type, scan_night

EVENT_TYPE = "meteorpi:meteor"  # the same for every camera software, so coincidences match
SOFTWARE_VERSION = 1


@dataclass
class NightPlan:
    """Everything read from a night folder, checked, before anything is written."""
    folder: NightFolder
    station: str
    night: str
    night_start: _dt.datetime
    config: StationConfig
    platepar: Platepar | None
    info: DetectInfo
    sources: list[Path]                      # every file to store
    file_types: dict[Path, str]              # semantic type of stand-alone files
    event_files: list[list[Path]]            # per detection, its files

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.sources if p.exists())


@dataclass
class NightResult:
    """What happened to one night folder: ``state`` is ingested, skipped or failed."""
    folder: Path
    state: str
    night: str | None = None
    registered: Registered | None = None
    detections: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    message: str = ""


def _ms_floor(t: _dt.datetime) -> _dt.datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def plan_night(root: Path, settle_seconds: float = 0.0) -> NightPlan:
    """Read and check a night folder; raises NightInProgress, NightVanished or FormatError.

    ``settle_seconds``: a night with a file changed more recently is still being written
    (RMS copying it to ArchivedFiles, say), and is left for later."""
    folder = scan_night(root)
    folder.require_finished()
    elsewhere = in_progress_elsewhere(folder.root)
    if elsewhere:
        raise NightInProgress(elsewhere)
    folder.require_regular()
    if settle_seconds > 0:
        if _quiet_seconds(folder.root) < settle_seconds:
            raise NightInProgress(f"{folder.root}: still being written (files changed within "
                                  f"the last {settle_seconds:g} s)")
    try:
        return _plan(folder)
    except FileNotFoundError as e:
        raise NightVanished(f"{folder.root}: {Path(e.filename).name} disappeared while read "
                            f"(RMS housekeeping?); will retry") from None


def _quiet_seconds(root: Path) -> float:
    """Seconds since the last change of any file in the folder."""
    newest = 0.0
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat().st_mtime)
            except FileNotFoundError:
                continue
    return time.time() - newest


def _plan(folder: NightFolder) -> NightPlan:
    ftp_path = folder.root / folder.ftpdetectinfo
    night_stamp = parse_night_name(folder.night)
    if night_stamp is None:
        raise FormatError(ftp_path, None, f"the night {folder.night!r} in the name has no valid date and time")
    config_path = folder.root / ".config"
    if not config_path.is_file():
        raise FormatError(config_path, None, "missing: the night folder has no .config (station, position)")
    config = read_config(config_path)
    if config.station_id != night_stamp.station:
        raise FormatError(config_path, None, f"stationID {config.station_id} differs from the night's station "
                                             f"{night_stamp.station} ({folder.ftpdetectinfo})")
    platepar = None
    if (folder.root / PLATEPAR_NAME).is_file():
        platepar = read_platepar(folder.root / PLATEPAR_NAME)
    elif (folder.root / RECALIBRATED_NAME).is_file():
        recalibrated = read_recalibrated(folder.root / RECALIBRATED_NAME)
        platepar = next(iter(recalibrated.values()), None)
    info = parse(ftp_path)
    for d in info.detections:
        if parse_ff_name(d.ff_name).station != config.station_id:
            raise FormatError(ftp_path, d.line + 1, f"{d.ff_name} is not of station {config.station_id}")
    frs: dict[tuple, list[Path]] = {}
    for fr in folder.fr:
        frs.setdefault(parse_fr_name(fr.name).key, []).append(fr)
    event_files, used = [], set()
    for d in info.detections:
        files = [folder.ff[d.ff_name]] if d.ff_name in folder.ff else []
        files += frs.get(parse_ff_name(d.ff_name).key, [])
        event_files.append(files)
        used.update(files)
    file_types = {p: kind for p, kind in folder.night_files}
    file_types.update({fr: "rms:fr" for fr in folder.fr if fr not in used})
    sources = list(file_types) + sorted(used)
    return NightPlan(folder=folder, station=config.station_id, night=folder.night, night_start=_ms_floor(night_stamp.start),
                     config=config, platepar=platepar, info=info, sources=sources, file_types=file_types,
                     event_files=event_files)


def status_content(config: StationConfig, platepar: Platepar | None) -> dict:
    """What defines a status: position and pointing, rounded so a nightly recalibration's
    drift of a few arc seconds does not make a new one."""
    content = {"lat": round(config.latitude, 5), "lon": round(config.longitude, 5),
               "elevation": round(config.elevation), "width": config.width, "height": config.height,
               "fps": round(config.fps, 3)}
    if platepar is not None:
        content.update(az=round(platepar.az, 1), alt=round(platepar.alt, 1), rot=round(platepar.rotation, 1),
                       fov_h=round(platepar.fov_h, 1), fov_v=round(platepar.fov_v, 1))
    else:
        content.update(fov_h=config.fov_w, fov_v=config.fov_h)
    return content


def camera_status(plan: NightPlan, valid_from: _dt.datetime, night: str | None = None) -> CameraStatus:
    """The status a night's configuration describes (``night`` set: its variant for that night).
    Built from the rounded content alone, so one status id always carries the same values."""
    content = status_content(plan.config, plan.platepar)
    key = json.dumps(content, sort_keys=True)
    if plan.platepar is not None:
        orientation = Orientation(alt=content["alt"], az=content["az"], rot=content["rot"], error=0.1,
                                  width=content["fov_h"])
        lens = f"{content['fov_h']:.1f} x {content['fov_v']:.1f} deg field (platepar)"
    else:  # no calibration yet: pointing unknown
        orientation = Orientation(alt=90.0, az=0.0, rot=0.0, error=90.0, width=content["fov_h"] or 0.0)
        lens = (f"{content['fov_h']:g} x {content['fov_v']:g} deg field (approximate, uncalibrated)"
                if content["fov_h"] and content["fov_v"] else "uncalibrated")
    return CameraStatus(
        status_id=ids.status_id(plan.station, key, night), camera_id=plan.station, lens=lens,
        sensor=f"{content['width']}x{content['height']} px, {content['fps']:g} fps", software_version=SOFTWARE_VERSION,
        valid_from=valid_from, location=Location(lat=content["lat"], long=content["lon"], gps=False, error=0.0),
        orientation=orientation, inst_name=f"RMS station {plan.station}, elevation {content['elevation']} m")


def choose_status(db: MeteorDatabase, plan: NightPlan, first: _dt.datetime, last: _dt.datetime) -> CameraStatus:
    """The configuration's status when held and valid over the whole night, or new from the
    night's start; if held but not valid then (the night is older than the status, or the
    camera was pointed elsewhere in between), a status of its own for this night."""
    status = camera_status(plan, first)
    held = db.get_camera_status_by_id(status.status_id)
    if held is None:
        return status
    if held.valid_from <= first and (held.valid_to is None or held.valid_to > last):
        return held
    variant = camera_status(plan, first, plan.night)
    return db.get_camera_status_by_id(variant.status_id) or variant


def _detection_meta(d: Detection, plan: NightPlan) -> list[Meta]:
    first, last = d.rows[0], d.rows[-1]
    meta = [Meta("meteorpi:duration", round(d.duration, 4)), Meta("rms:frames", len(d.rows)),
            Meta("rms:fps", d.fps), Meta("meteorpi:start_ra", first.ra), Meta("meteorpi:start_dec", first.dec),
            Meta("meteorpi:end_ra", last.ra), Meta("meteorpi:end_dec", last.dec),
            Meta("meteorpi:start_az", first.az), Meta("meteorpi:start_alt", first.alt),
            Meta("meteorpi:end_az", last.az), Meta("meteorpi:end_alt", last.alt),
            Meta("rms:angular_speed_px_per_frame", d.angular_speed), Meta("rms:meteor_number", d.meteor_number),
            Meta("rms:ff_name", d.ff_name), Meta("rms:night", plan.night)]
    if d.peak_magnitude is not None:
        meta.insert(0, Meta("meteorpi:peak_magnitude", d.peak_magnitude))
    if plan.info.rms_version:
        meta.append(Meta("rms:version", plan.info.rms_version))
    return meta


def _file_time(path: Path, plan: NightPlan) -> _dt.datetime:
    stamped = parse_ff_name(path.name) or parse_fr_name(path.name)
    return _ms_floor(stamped.start) if stamped else plan.night_start


def build_entities(plan: NightPlan, stored: dict[Path, tuple[uuid.UUID, int, str]], status: CameraStatus,
                   held_events: set[uuid.UUID] = frozenset()) -> list[Event | FileRecord]:
    """Events (with their files) and stand-alone files of the night, on ``status``. The files
    of an event already held (``held_events``) come as stand-alone files: a new version of
    a detection's FF (RMS re-ran) is kept beside the one the event holds."""
    def record(path: Path, semantic_type: str) -> FileRecord:
        file_id, size, md5 = stored[path]
        return FileRecord(file_id=file_id, camera_id=plan.station, status_id=status.status_id,
                          file_time=_file_time(path, plan), mime_type=mime_type(path.name),
                          semantic_type=semantic_type, file_name=path.name, file_size=size, md5=md5,
                          meta=[Meta("rms:night", plan.night)])
    entities: list[Event | FileRecord] = [record(p, kind) for p, kind in plan.file_types.items()]
    for d, paths in zip(plan.info.detections, plan.event_files):
        files = [record(p, "rms:ff" if parse_ff_name(p.name) else "rms:fr") for p in paths]
        event_id = detection_id(plan, d)
        if event_id in held_events:
            entities += files  # held ones are no-ops; a changed one is kept beside the old
            continue
        entities.append(Event(event_id=event_id, camera_id=plan.station, status_id=status.status_id,
                              event_time=d.start_time, event_type=EVENT_TYPE, files=files,
                              meta=_detection_meta(d, plan)))
    return entities


def detection_id(plan: NightPlan, d: Detection) -> uuid.UUID:
    return ids.event_id(plan.station, d.ff_name, d.meteor_number, d.content_hash)


def _span(plan: NightPlan) -> tuple[_dt.datetime, _dt.datetime]:
    times = [plan.night_start] + [d.start_time for d in plan.info.detections] + \
            [_file_time(p, plan) for p in plan.sources]
    return min(times), max(times)


def ingest_night(db: MeteorDatabase, root: Path, on_plan: Callable[[NightPlan], None] | None = None,
                 on_stored: Callable[[Path, int], None] | None = None, settle_seconds: float = 0.0) -> NightResult:
    """Ingest one night folder, all or nothing. RmsError (format, in progress, vanished) and
    the store's or database's errors propagate; nothing of the night is registered then."""
    started = time.monotonic()
    plan = plan_night(Path(root), settle_seconds)
    if on_plan is not None:
        on_plan(plan)
    try:
        # No links followed: a file swapped for one since the listing is refused at open.
        stored_list = db.file_store.store_files(
            plan.sources, lambda path, md5: ids.file_id(plan.station, plan.night, path.name, md5), on_stored,
            follow_symlinks=False)
    except SourceNotRegular as e:
        raise NotRegularFile(Path(e.filename), e.kind) from None
    except FileNotFoundError as e:
        raise NightVanished(f"{plan.folder.root}: {Path(e.filename).name} disappeared while read "
                            f"(RMS housekeeping?); will retry") from None
    gone = [p.name for p in plan.sources if not p.exists()]
    if gone:  # deleted while we read it: the copy may be of a night RMS is removing
        raise NightVanished(f"{plan.folder.root}: {gone[0]} disappeared while read (RMS housekeeping?); will retry")
    stored = dict(zip(plan.sources, stored_list))
    first, last = _span(plan)
    status = choose_status(db, plan, first, last)
    event_ids = [detection_id(plan, d) for d in plan.info.detections]
    held_events = set(event_ids) - set(db.missing_ids(event_ids=event_ids)[1])
    registered = db.register_recorded([status], build_entities(plan, stored, status, held_events))
    return NightResult(plan.folder.root, "ingested", plan.night, registered, len(plan.info.detections),
                       len(plan.sources), sum(size for _, size, _ in stored_list), time.monotonic() - started)


def ingest_paths(db: MeteorDatabase, paths: list[Path], on_plan=None, on_stored=None,
                 skip: Callable[[Path], bool] | None = None, settle_seconds: float = 0.0) -> Iterator[NightResult]:
    """Each night under ``paths`` in turn; a night that cannot be taken yields a skipped or
    failed result and the others go on. Store and database errors stop the run (they would
    fail every night the same way). An empty path (``''``: the current folder, from an unset
    variable, say) is refused, not read; ``settle_seconds`` must be finite (ValueError: with
    NaN no night ever looked unsettled)."""
    if not (math.isfinite(settle_seconds) and settle_seconds >= 0):
        raise ValueError(f"settle_seconds {settle_seconds!r}: must be a finite number of seconds, 0 or more")
    for path in paths:
        if isinstance(path, str) and path == "":
            yield NightResult(Path(path), "failed", message="an empty path (it would mean the current folder): "
                                                            "give a night folder or RMS's data folder")
            continue
        try:
            nights = find_nights(Path(path))
        except OSError as e:
            yield NightResult(Path(path), "failed", message=_unreadable(Path(path), e))
            continue
        if not nights:
            yield NightResult(Path(path), "skipped", message=f"{path}: no RMS night folders found")
        for root in nights:
            if skip is not None and skip(root):
                continue
            try:
                yield ingest_night(db, root, on_plan, on_stored, settle_seconds)
            except (NightInProgress, NightVanished) as e:
                yield NightResult(root, "skipped", message=str(e))
            except (FormatError, Conflict) as e:  # Conflict: contradicts what is held (say, another status)
                yield NightResult(root, "failed", message=f"{root.name}: {e}")
            except OSError as e:  # the store's own disk errors are StoreWriteFailed, never here
                yield NightResult(root, "failed", message=f"{root.name}: {_unreadable(root, e)}")


def _unreadable(root: Path, e: OSError) -> str:
    """A source we cannot read (permissions, I/O error), as one line."""
    if e.filename is None:
        return str(e)
    return f"cannot read {e.filename}: {e.strerror or e}"
