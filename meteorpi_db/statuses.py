"""Camera statuses: where a camera is and points, from valid_from until valid_to."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid

from psycopg2.extras import execute_values

from meteorpi_model import CameraStatus, Location, Orientation, Point, as_uuid, now

from .errors import Conflict
from .pool import retry_stale
from .records import content_contradiction

STATUS_COLUMNS = """status_id, camera_id, lens, sensor, inst_name, inst_url, software_version,
    valid_from, valid_to, lat, long, gps, location_error, alt, az, rot, orientation_error, width"""

INSERT_STATUS = f"""
INSERT INTO camera_status ({STATUS_COLUMNS})
VALUES (%(status_id)s, %(camera_id)s, %(lens)s, %(sensor)s, %(inst_name)s, %(inst_url)s,
        %(software_version)s, %(valid_from)s, %(valid_to)s, %(lat)s, %(long)s, %(gps)s,
        %(location_error)s, %(alt)s, %(az)s, %(rot)s, %(orientation_error)s, %(width)s)
ON CONFLICT (status_id) DO NOTHING
"""
INSERT_REGION_POINTS = """
INSERT INTO status_region (status_id, region_index, point_index, x, y) VALUES %s
"""
# A newer status of the same camera ends the validity of the one open before it.
CLOSE_OPEN_STATUS = """
UPDATE camera_status SET valid_to = %(time)s
WHERE camera_id = %(camera_id)s AND valid_to IS NULL AND valid_from <= %(time)s
  AND status_id <> %(status_id)s
"""
# ...and a status arriving after a newer one of its camera ends where that one begins.
CLOSE_BEFORE_NEWER = """
UPDATE camera_status SET valid_to = later.valid_from
FROM (SELECT min(valid_from) AS valid_from FROM camera_status
      WHERE camera_id = %(camera_id)s AND valid_from > %(time)s) AS later
WHERE status_id = %(status_id)s AND later.valid_from IS NOT NULL
  AND (camera_status.valid_to IS NULL OR camera_status.valid_to > later.valid_from)
"""
SELECT_STATUS_BY_ID = f"SELECT {STATUS_COLUMNS} FROM camera_status WHERE status_id = %(status_id)s"
SELECT_STATUS_AT = f"""
SELECT {STATUS_COLUMNS} FROM camera_status
WHERE camera_id = %(camera_id)s AND valid_from <= %(time)s AND (valid_to IS NULL OR valid_to > %(time)s)
ORDER BY valid_from DESC LIMIT 1
"""
SELECT_REGIONS = """
SELECT region_index, x, y FROM status_region WHERE status_id = %(status_id)s
ORDER BY region_index, point_index
"""
SELECT_CAMERAS = "SELECT DISTINCT camera_id FROM camera_status ORDER BY camera_id"
HAS_STATUS = "SELECT 1 FROM camera_status WHERE status_id = %(status_id)s"
HELD_STATUSES = "SELECT status_id FROM camera_status WHERE status_id = ANY(%(ids)s)"
# What a record is checked against: its status' camera and validity (and longitude, for offsets).
SELECT_STATUS_VALIDITY = """
SELECT status_id, camera_id, valid_from, valid_to, long FROM camera_status WHERE status_id = ANY(%(ids)s)
"""
LOCK_CAMERA = "SELECT pg_advisory_xact_lock(hashtext(%(camera_id)s))"


def _status_params(status: CameraStatus) -> dict:
    loc, ori = status.location, status.orientation
    return {"status_id": status.status_id, "camera_id": status.camera_id, "lens": status.lens,
            "sensor": status.sensor, "inst_name": status.inst_name, "inst_url": status.inst_url,
            "software_version": status.software_version, "valid_from": status.valid_from,
            "valid_to": status.valid_to, "lat": loc.lat, "long": loc.long, "gps": loc.gps,
            "location_error": loc.error, "alt": ori.alt, "az": ori.az, "rot": ori.rot,
            "orientation_error": ori.error, "width": ori.width}


def _status_from_row(row, regions) -> CameraStatus:
    (status_id, camera_id, lens, sensor, inst_name, inst_url, software_version, valid_from, valid_to,
     lat, long, gps, location_error, alt, az, rot, orientation_error, width) = row
    return CameraStatus(
        status_id=status_id, camera_id=camera_id, lens=lens, sensor=sensor, inst_name=inst_name,
        inst_url=inst_url, software_version=software_version, valid_from=_utc(valid_from),
        valid_to=_utc(valid_to), location=Location(lat=lat, long=long, gps=gps, error=location_error),
        orientation=Orientation(alt=alt, az=az, rot=rot, error=orientation_error, width=width),
        regions=regions)


def _utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return value.astimezone(_dt.timezone.utc) if value is not None else None


class StatusStore:
    """Mixed into MeteorDatabase: camera statuses and their visible regions."""

    def _insert_status(self, cur, status: CameraStatus) -> bool:
        """Store a status with its regions unless held; a newer one closes the camera's open one.
        Conflict when the held status of this id says something else (its end of validity
        aside: the archive sets that itself): the node would think its version arrived."""
        cur.execute(LOCK_CAMERA, {"camera_id": status.camera_id})
        cur.execute(INSERT_STATUS, _status_params(status))
        if cur.rowcount == 0:
            held = self._load_status(cur, status.status_id)
            problem = content_contradiction(held, status) if held is not None else None
            if problem:
                raise Conflict(problem)
            return False
        params = {"time": status.valid_from, "camera_id": status.camera_id, "status_id": status.status_id}
        cur.execute(CLOSE_OPEN_STATUS, params)
        cur.execute(CLOSE_BEFORE_NEWER, params)
        points = [(status.status_id, r, p, pt.x, pt.y)
                  for r, region in enumerate(status.regions) for p, pt in enumerate(region)]
        if points:  # one statement per thousand points, not one round trip per point
            execute_values(cur, INSERT_REGION_POINTS, points, page_size=1000)
        return True

    def _load_status(self, cur, status_id: uuid.UUID) -> CameraStatus | None:
        cur.execute(SELECT_STATUS_BY_ID, {"status_id": status_id})
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(SELECT_REGIONS, {"status_id": status_id})
        regions: list[list[Point]] = []
        for region_index, x, y in cur.fetchall():
            while len(regions) <= region_index:
                regions.append([])
            regions[region_index].append(Point(x=x, y=y))
        return _status_from_row(row, regions)

    def _status_rows(self, cur, status_ids) -> dict:
        """status_id -> (status_id, camera_id, valid_from, valid_to, long) for those held."""
        ids = list(status_ids)
        if not ids:
            return {}
        cur.execute(SELECT_STATUS_VALIDITY, {"ids": ids})
        return {row[0]: row for row in cur.fetchall()}

    def _held_status_ids(self, cur, status_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not status_ids:
            return set()
        cur.execute(HELD_STATUSES, {"ids": list(status_ids)})
        return {row[0] for row in cur.fetchall()}

    def _status_at(self, cur, camera_id: str, time: _dt.datetime) -> CameraStatus:
        """The status of ``camera_id`` valid at ``time``; Conflict when it has none."""
        cur.execute(SELECT_STATUS_AT, {"camera_id": camera_id, "time": time})
        row = cur.fetchone()
        if row is None:
            raise Conflict(f"camera {camera_id!r} has no status at {time.isoformat()}: "
                           f"record one with update_camera_status first")
        return self._load_status(cur, row[0])

    @retry_stale
    def update_camera_status(self, status: CameraStatus, time: _dt.datetime | None = None,
                             camera_id: str | None = None) -> CameraStatus:
        """Record a camera's new state from ``time`` (now by default), closing the previous one.

        Returns the stored status, with a fresh status_id so an earlier status object passed
        in again never overwrites history.
        """
        time = time or now()
        status = _fresh_status(status, time, camera_id)
        with self.transaction() as cur:
            self._insert_status(cur, status)
        return status

    @retry_stale
    def import_camera_status(self, status: CameraStatus) -> bool:
        """Hold a status received from a node as it is; True if it was new."""
        with self.transaction() as cur:
            return self._insert_status(cur, status)

    @retry_stale
    def get_camera_status(self, time: _dt.datetime | None = None, camera_id: str | None = None) -> CameraStatus | None:
        """The status of ``camera_id`` valid at ``time`` (now by default)."""
        if camera_id is None:
            cameras = self.get_cameras()
            if len(cameras) != 1:
                return None
            camera_id = cameras[0]
        with self.transaction() as cur:
            cur.execute(SELECT_STATUS_AT, {"camera_id": camera_id, "time": time or now()})
            row = cur.fetchone()
            return self._load_status(cur, row[0]) if row else None

    @retry_stale
    def get_camera_status_by_id(self, status_id) -> CameraStatus | None:
        """The status with this id, or None."""
        with self.transaction() as cur:
            return self._load_status(cur, as_uuid(status_id))

    @retry_stale
    def get_cameras(self) -> list[str]:
        """Every camera id that has a status."""
        with self.transaction() as cur:
            cur.execute(SELECT_CAMERAS)
            return [r[0] for r in cur.fetchall()]

    @retry_stale
    def has_status_id(self, status_id) -> bool:
        """Whether this status is held."""
        with self.transaction() as cur:
            cur.execute(HAS_STATUS, {"status_id": as_uuid(status_id)})
            return cur.fetchone() is not None


def _fresh_status(status: CameraStatus, time: _dt.datetime, camera_id: str | None) -> CameraStatus:
    fresh = dataclasses.replace(status, status_id=uuid.uuid4(), valid_from=time, valid_to=None,
                                camera_id=camera_id or status.camera_id)
    return fresh.validate()
