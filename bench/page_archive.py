"""A big archive for the page figures and the index checks, written set-wise in SQL.

``fill(db, cameras, events, nights)``: one status per camera (spread over a grid of positions),
``events`` events spread evenly over the last ``nights`` nights round-robin over the cameras,
each with one number meta, ``events // 10`` stand-alone files and ``events // 10`` coincidence
groups (two neighbouring events of two cameras each, as the matcher stores them). Seconds for 100,000 events, where importing them one by one would
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

# Group g: events 10g and 10g + 1 (neighbours in time, on two cameras).
INSERT_GROUPS = """
INSERT INTO coincidence_group (group_id, event_type, first_time, last_time, camera_count, created_at, updated_at)
SELECT md5('group' || g)::uuid, 'meteorpi:meteor', %(start)s + make_interval(secs => 10 * g * %(step)s),
       %(start)s + make_interval(secs => (10 * g + 1) * %(step)s), 2, now(), now()
FROM generate_series(0, %(groups)s - 1) AS g
"""
INSERT_MEMBERS = """
INSERT INTO coincidence_member (event_id, group_id, camera_id, event_time, lat, long)
SELECT e.event_id, md5('group' || g)::uuid, e.camera_id, e.event_time, s.lat, s.long
FROM generate_series(0, %(groups)s - 1) AS g
CROSS JOIN generate_series(0, 1) AS k
JOIN event e ON e.event_id = md5('event' || (10 * g + k))::uuid
JOIN camera_status s ON s.status_id = e.status_id
"""


def fill(db: MeteorDatabase, cameras: int, events: int, nights: int = 100) -> _dt.datetime:
    """Write the archive into an empty ``db`` and ANALYZE it; returns when its first night starts."""
    end = _dt.datetime.now(_dt.timezone.utc)
    start = end - _dt.timedelta(days=nights)
    params = {"cameras": cameras, "events": events, "start": start,
              "step": (end - start).total_seconds() / max(events, 1), "files": events // 10,
              "file_step": (end - start).total_seconds() / max(events // 10, 1),
              "groups": events // 10 if cameras > 1 else 0}
    with db.transaction() as cur:
        cur.execute(INSERT_STATUSES, params)
        cur.execute(INSERT_EVENTS, params)
        cur.execute(INSERT_META, params)
        cur.execute(INSERT_FILES, params)
        cur.execute(INSERT_GROUPS, params)
        cur.execute(INSERT_MEMBERS, params)
    with db.transaction() as cur:
        cur.execute("ANALYZE camera_status, event, event_meta, file_record, feed_log, coincidence_group, "
                    "coincidence_member")
    return start
