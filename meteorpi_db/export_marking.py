"""Marking: every entity that matches an export configuration's search becomes a task.

``mark_entities_to_export`` turns every entity matching the search that appeared since the last
marking (the ``seq`` columns above ``export_config.high_water_seq``) into a pending row of
``export_task``, in SQL alone; the queue (export_queue.py) takes it from there.
"""
from __future__ import annotations

import dataclasses
import uuid

import psycopg2.errors
from psycopg2 import sql

from meteorpi_model import ExportConfiguration

from .errors import StorageUnavailable
from .export_configs import find_export_config
from .pool import retry_stale
from .searches import EVENTS, FILES, search_where

# Marking waits for registrations in flight (see mark_entities_to_export), never forever.
MARK_LOCK_TIMEOUT = "30s"

LOCK_CONFIG = "SELECT high_water_seq FROM export_config WHERE config_id = %(config_id)s FOR UPDATE"
SET_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{MARK_LOCK_TIMEOUT}'"
LOCK_ENTITY_TABLE = "LOCK TABLE {table} IN SHARE MODE"
MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM {table}"
MARK_TASKS = """
INSERT INTO export_task (config_id, entity_id, entity_type, entity_time)
SELECT %(mark_config_id)s, r.{id}, %(mark_type)s, r.{time}
FROM {table} r JOIN camera_status s ON s.status_id = r.status_id
WHERE r.seq > %(mark_low)s AND r.seq <= %(mark_high)s
  AND {where}
ON CONFLICT (config_id, entity_id) DO NOTHING
"""
SET_HIGH_WATER = "UPDATE export_config SET high_water_seq = %(high)s WHERE config_id = %(config_id)s"


def _mark_search(config: ExportConfiguration):
    """The search marking applies: a file configuration only ever exports files of no event
    (events carry their own files)."""
    if config.type == "file":
        return dataclasses.replace(config.search, exclude_events=True)
    return config.search


class ExportMarkingStore:
    """Mixed into MeteorDatabase: marking entities to export."""

    @retry_stale
    def mark_entities_to_export(self, config: ExportConfiguration | str | uuid.UUID) -> int:
        """Add a pending task for every entity matching ``config``'s search registered or
        imported since the last marking; returns how many tasks were added.

        The entity table is locked in SHARE mode first: that waits for transactions that
        already drew a ``seq`` to commit and holds new ones back for the moment marking takes,
        so no entity can commit below the new high-water mark unseen.
        """
        config_id = config.config_id if isinstance(config, ExportConfiguration) else None
        with self.transaction() as cur:
            current = find_export_config(cur, config_id or config)
            family = EVENTS if current.type == "event" else FILES
            names = family.names()
            cur.execute(SET_LOCK_TIMEOUT)
            try:
                cur.execute(sql.SQL(LOCK_ENTITY_TABLE).format(**names))
                cur.execute(LOCK_CONFIG, {"config_id": current.config_id})
            except psycopg2.errors.LockNotAvailable as e:
                raise StorageUnavailable(f"marking waited over {MARK_LOCK_TIMEOUT} for registrations "
                                         f"in progress; try again", e) from None
            low = cur.fetchone()[0]
            cur.execute(sql.SQL(MAX_SEQ).format(**names))
            high = cur.fetchone()[0]
            if high <= low:
                return 0
            where, params = search_where(family, _mark_search(current))
            params.update(mark_config_id=current.config_id, mark_type=current.type, mark_low=low,
                          mark_high=high)
            cur.execute(sql.SQL(MARK_TASKS).format(where=where, **names), params)
            added = cur.rowcount
            cur.execute(SET_HIGH_WATER, {"config_id": current.config_id, "high": high})
            return added
