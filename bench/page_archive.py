"""A big archive for the page figures and the index checks, written set-wise in SQL.

``fill(db, cameras, events, nights)``: one status per camera (spread over a grid of positions),
``events`` events spread evenly over the last ``nights`` nights round-robin over the cameras,
each with one number meta, and ``events // 10`` stand-alone files. Seconds for 100,000 events, where importing them one by one would
take minutes; the rows are what an import would write (the feed triggers fire too).
"""
from __future__ import annotations

import datetime as _dt

from meteorpi_db import MeteorDatabase

INSERT_STATUSES = """
INSERT INTO camera_status (status_id, camera_id, lens, sensor, software_version, valid_from, lat, long, gps,
                           location_error, alt, az, rot, orientation_error, width)
SELECT md5('status' || i)::uuid, 'bench-' || lpad(i::text, 4, '0'), 'lens', 'sensor', 2, %(start)s,
       45 + (i %% 10) * 1.1, -8 + (i / 10) * 1.3, true, 5, 60, (i * 37) %% 360, 0, 0.5, 80
FROM generate_series(0, %(cameras)s - 1) AS i
"""
INSERT_EVENTS = """
INSERT INTO event (event_id, camera_id, status_id, event_time, event_offset, event_type)
SELECT md5('event' || i)::uuid, 'bench-' || lpad((i %% %(cameras)s)::text, 4, '0'),
       md5('status' || (i %% %(cameras)s))::uuid,
       %(start)s + make_interval(secs => i * %(step)s), 43200.0 * (i %% 7) / 7 + 21600, 'meteorpi:meteor'
FROM generate_series(0, %(events)s - 1) AS i
"""
INSERT_FILES = """
INSERT INTO file_record (file_id, camera_id, status_id, file_time, file_offset, mime_type, semantic_type,
                         file_name, file_size, md5)
SELECT md5('file' || i)::uuid, 'bench-' || lpad((i %% %(cameras)s)::text, 4, '0'),
       md5('status' || (i %% %(cameras)s))::uuid, %(start)s + make_interval(secs => i * %(file_step)s),
       43200.0 * (i %% 5) / 5 + 21600, 'image/jpeg', 'meteorpi:timelapse', 'frame.jpg', 1000, md5('file' || i)
FROM generate_series(0, %(files)s - 1) AS i
"""
INSERT_META = """
INSERT INTO event_meta (event_id, meta_index, meta_key, number_value)
SELECT md5('event' || i)::uuid, 0, 'meteorpi:duration', (i %% 50) / 10.0
FROM generate_series(0, %(events)s - 1) AS i
"""


def fill(db: MeteorDatabase, cameras: int, events: int, nights: int = 100) -> _dt.datetime:
    """Write the archive into an empty ``db`` and ANALYZE it; returns when its first night starts."""
    end = _dt.datetime.now(_dt.timezone.utc)
    start = end - _dt.timedelta(days=nights)
    params = {"cameras": cameras, "events": events, "start": start,
              "step": (end - start).total_seconds() / max(events, 1), "files": events // 10,
              "file_step": (end - start).total_seconds() / max(events // 10, 1)}
    with db.transaction() as cur:
        cur.execute(INSERT_STATUSES, params)
        cur.execute(INSERT_EVENTS, params)
        cur.execute(INSERT_META, params)
        cur.execute(INSERT_FILES, params)
    with db.transaction() as cur:
        cur.execute("ANALYZE camera_status, event, event_meta, file_record, feed_log")
    return start
