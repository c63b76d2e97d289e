"""Export configurations and the export queue: what a node sends where, and what is still due.

A configuration names a target ``/import`` URL, the credentials to use there and a search.
``mark_entities_to_export`` turns every entity matching the search that appeared since the last
marking (the ``seq`` columns above ``export_config.high_water_seq``) into a pending row of
``export_task``, in SQL alone. The exporter then takes due tasks oldest first and writes the
outcome back, so the queue and every task's state survive restarts: a task becomes
``complete`` only once the target has said so.

The password must be kept in clear to authenticate at the target, so it lives in the database
(whose files are readable by their owner only) and never leaves this module in a ``repr``,
a log line or an exception message.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from dataclasses import dataclass

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import Json

from meteorpi_model import ExportConfiguration, ValidationError, as_uuid

from .errors import Conflict, NotFound, StorageUnavailable
from .pool import retry_stale
from .searches import EVENTS, FILES, _where

# Marking waits for registrations in flight (see mark_entities_to_export), never forever.
MARK_LOCK_TIMEOUT = "30s"

CONFIG_COLUMNS = """config_id, name, description, target_url, user_id, password, export_type, search,
    enabled"""
INSERT_CONFIG = f"""
INSERT INTO export_config ({CONFIG_COLUMNS})
VALUES (%(config_id)s, %(name)s, %(description)s, %(target_url)s, %(user_id)s, %(password)s,
        %(export_type)s, %(search)s, %(enabled)s)
ON CONFLICT DO NOTHING
"""
SELECT_CONFIG_BY_ID = f"SELECT {CONFIG_COLUMNS} FROM export_config WHERE config_id = %(config_id)s"
SELECT_CONFIG_BY_NAME = f"SELECT {CONFIG_COLUMNS} FROM export_config WHERE name = %(name)s"
SELECT_CONFIGS = f"SELECT {CONFIG_COLUMNS} FROM export_config ORDER BY name"
# A new search or type may match entities marked past already: start marking from the beginning
# (tasks already made stay; ON CONFLICT keeps them single).
UPDATE_CONFIG = """
UPDATE export_config SET name = %(name)s, description = %(description)s, target_url = %(target_url)s,
    user_id = %(user_id)s, password = %(password)s, export_type = %(export_type)s,
    search = %(search)s, enabled = %(enabled)s,
    high_water_seq = CASE WHEN search = %(search)s AND export_type = %(export_type)s
                          THEN high_water_seq ELSE 0 END
WHERE config_id = %(config_id)s
"""
DROP_OTHER_TYPE_TASKS = """
DELETE FROM export_task WHERE config_id = %(config_id)s AND state = 'pending' AND entity_type <> %(export_type)s
"""
# Enabling again starts a fresh failure count.
SET_ENABLED = """
UPDATE export_config SET enabled = %(enabled)s,
    consecutive_failures = CASE WHEN %(enabled)s THEN 0 ELSE consecutive_failures END
WHERE name = %(name)s
"""
DELETE_CONFIG = "DELETE FROM export_config WHERE name = %(name)s"

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

SELECT_NEXT_TASK = """
SELECT t.entity_id, t.entity_type, t.entity_time, t.attempts,
       CASE WHEN t.entity_type = 'file' THEN
           (SELECT ef.event_id FROM event_file ef WHERE ef.file_id = t.entity_id LIMIT 1) END,
       c.config_id, c.name, c.description,
       c.target_url, c.user_id, c.password, c.export_type, c.search, c.enabled
FROM export_task t JOIN export_config c ON c.config_id = t.config_id
WHERE t.state = 'pending' AND t.due_at <= now() AND c.enabled
  AND NOT (t.config_id = ANY(%(skip)s))
ORDER BY t.entity_time, t.entity_id
LIMIT 1
"""
DEFER_TASKS = """
UPDATE export_task SET due_at = now() + make_interval(secs => %(seconds)s)
WHERE config_id = %(config_id)s AND state = 'pending' AND due_at < now() + make_interval(secs => %(seconds)s)
"""
FINISH_TASK = """
UPDATE export_task SET state = %(state)s, completed_at = now(), last_error = %(message)s,
    attempts = attempts + 1
WHERE config_id = %(config_id)s AND entity_id = %(entity_id)s AND state = 'pending'
"""
RESET_FAILURES = """
UPDATE export_config SET consecutive_failures = 0, last_error = NULL WHERE config_id = %(config_id)s
"""
FAIL_TASK = """
UPDATE export_task SET attempts = attempts + 1, last_error = %(message)s
WHERE config_id = %(config_id)s AND entity_id = %(entity_id)s
"""
# max_failures <= 0: never disable.
COUNT_FAILURE = """
UPDATE export_config SET consecutive_failures = consecutive_failures + 1, last_error = %(message)s,
    enabled = enabled AND (%(max_failures)s <= 0 OR consecutive_failures + 1 < %(max_failures)s)
WHERE config_id = %(config_id)s
RETURNING consecutive_failures, enabled
"""
# The fast path takes many due tasks of one configuration at once; files that joined an event
# since they were marked are skipped first (the event carries them).
SKIP_FILES_IN_EVENTS = """
UPDATE export_task t SET state = 'skipped', completed_at = now(), last_error = 'part of an event now, which carries it'
WHERE t.config_id = %(config_id)s AND t.state = 'pending' AND t.entity_type = 'file'
  AND EXISTS (SELECT 1 FROM event_file ef WHERE ef.file_id = t.entity_id)
"""
SELECT_DUE_TASKS = """
SELECT entity_id, entity_type, entity_time, attempts FROM export_task
WHERE config_id = %(config_id)s AND state = 'pending' AND due_at <= now()
ORDER BY entity_time, entity_id LIMIT %(limit)s
"""
FINISH_TASKS = """
UPDATE export_task SET state = 'complete', completed_at = now(), last_error = NULL, attempts = attempts + 1
WHERE config_id = %(config_id)s AND entity_id = ANY(%(ids)s) AND state = 'pending'
"""
SELECT_PROGRESS = """
SELECT c.config_id, c.consecutive_failures, c.last_error,
       count(t.entity_id) FILTER (WHERE t.state = 'pending'),
       count(t.entity_id) FILTER (WHERE t.state = 'pending' AND t.due_at <= now()),
       count(t.entity_id) FILTER (WHERE t.state = 'complete'),
       count(t.entity_id) FILTER (WHERE t.state = 'skipped'),
       min(t.due_at) FILTER (WHERE t.state = 'pending')
FROM export_config c LEFT JOIN export_task t ON t.config_id = c.config_id
GROUP BY c.config_id
"""
SELECT_TASK_STATES = """
SELECT entity_id, state FROM export_task WHERE config_id = %(config_id)s
"""


@dataclass(frozen=True)
class ExportTask:
    """One entity due to go to one configuration's target."""
    config: ExportConfiguration
    entity_id: uuid.UUID
    entity_type: str        # "event" or "file"
    entity_time: _dt.datetime
    attempts: int           # tries so far (failed ones, for a pending task)


@dataclass(frozen=True)
class ExportProgress:
    """Where one configuration stands, for ``meteorpi export list`` and the exporter's loop."""
    config: ExportConfiguration
    consecutive_failures: int
    last_error: str | None
    pending: int
    due: int
    complete: int
    skipped: int
    next_due_at: _dt.datetime | None


@dataclass(frozen=True)
class FailureCount:
    """What one more failure did to a configuration."""
    consecutive_failures: int
    disabled: bool           # this failure disabled the configuration


def _config_from_row(row) -> ExportConfiguration:
    config_id, name, description, target_url, user_id, password, export_type, search, enabled = row
    return ExportConfiguration.from_dict(
        {"config_id": config_id.hex, "name": name, "description": description, "target_url": target_url,
         "user_id": user_id, "password": password, "type": export_type, "search": search,
         "enabled": enabled}, "export")


def _config_params(config: ExportConfiguration) -> dict:
    return {"config_id": config.config_id, "name": config.name, "description": config.description,
            "target_url": config.target_url, "user_id": config.user_id, "password": config.password,
            "export_type": config.type, "search": Json(config.search.as_dict()), "enabled": config.enabled}


def _checked(config: ExportConfiguration) -> ExportConfiguration:
    """``config`` validated by the wire rules, its search of the class its type needs."""
    if not isinstance(config, ExportConfiguration):
        raise ValidationError("export", f"expected an ExportConfiguration, got {type(config).__name__}")
    return ExportConfiguration.from_dict(config.as_dict(), "export")


def _mark_search(config: ExportConfiguration):
    """The search marking applies: a file configuration only ever exports files of no event
    (events carry their own files)."""
    if config.type == "file":
        return dataclasses.replace(config.search, exclude_events=True)
    return config.search


class ExportStore:
    """Mixed into MeteorDatabase: export configurations and the export queue."""

    # -- configurations -----------------------------------------------------------------------
    @retry_stale
    def create_export_configuration(self, config: ExportConfiguration) -> ExportConfiguration:
        """Store a new configuration; Conflict when its name (or id) is taken."""
        config = _checked(config)
        with self.transaction() as cur:
            cur.execute(INSERT_CONFIG, _config_params(config))
            if cur.rowcount == 0:
                raise Conflict(f"an export configuration named {config.name!r} already exists")
        return config

    def _load_config(self, cur, name_or_id) -> ExportConfiguration:
        row = None
        if isinstance(name_or_id, uuid.UUID) or (isinstance(name_or_id, str) and len(name_or_id) in (32, 36)):
            try:
                cur.execute(SELECT_CONFIG_BY_ID, {"config_id": as_uuid(name_or_id)})
                row = cur.fetchone()
            except ValidationError:
                row = None
        if row is None and isinstance(name_or_id, str):
            cur.execute(SELECT_CONFIG_BY_NAME, {"name": name_or_id})
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"no export configuration {str(name_or_id)!r} (see `meteorpi export list`)")
        return _config_from_row(row)

    @retry_stale
    def get_export_configuration(self, name_or_id: str | uuid.UUID) -> ExportConfiguration:
        """The configuration with this id or name; NotFound when there is none."""
        with self.transaction() as cur:
            return self._load_config(cur, name_or_id)

    @retry_stale
    def get_export_configurations(self) -> list[ExportConfiguration]:
        """Every configuration, by name."""
        with self.transaction() as cur:
            cur.execute(SELECT_CONFIGS)
            return [_config_from_row(row) for row in cur.fetchall()]

    @retry_stale
    def update_export_configuration(self, config: ExportConfiguration) -> ExportConfiguration:
        """Replace a configuration (found by config_id). A changed search or type is applied to
        entities marked before too; pending tasks of the other type are dropped."""
        config = _checked(config)
        with self.transaction() as cur:
            try:
                cur.execute(UPDATE_CONFIG, _config_params(config))
            except psycopg2.errors.UniqueViolation as e:
                raise Conflict(f"an export configuration named {config.name!r} already exists", e) from None
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration with id {config.config_id.hex}")
            cur.execute(DROP_OTHER_TYPE_TASKS, {"config_id": config.config_id, "export_type": config.type})
        return config

    @retry_stale
    def set_export_enabled(self, name: str, enabled: bool) -> None:
        """Enable (with a fresh failure count) or disable the configuration ``name``."""
        with self.transaction() as cur:
            cur.execute(SET_ENABLED, {"name": name, "enabled": bool(enabled)})
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration {name!r} (see `meteorpi export list`)")

    @retry_stale
    def delete_export_configuration(self, name: str) -> None:
        """Remove the configuration ``name`` and its tasks."""
        with self.transaction() as cur:
            cur.execute(DELETE_CONFIG, {"name": name})
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration {name!r} (see `meteorpi export list`)")

    # -- marking ------------------------------------------------------------------------------
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
            current = self._load_config(cur, config_id or config)
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
            where, params = _where(family, _mark_search(current))
            params.update(mark_config_id=current.config_id, mark_type=current.type, mark_low=low,
                          mark_high=high)
            cur.execute(sql.SQL(MARK_TASKS).format(where=where, **names), params)
            added = cur.rowcount
            cur.execute(SET_HIGH_WATER, {"config_id": current.config_id, "high": high})
            return added

    # -- the queue ----------------------------------------------------------------------------
    @retry_stale
    def get_next_entity_to_export(self, skip_config_ids: list[uuid.UUID] | tuple = ()) -> ExportTask | None:
        """The oldest due task of any enabled configuration (not in ``skip_config_ids``), or None.

        A stand-alone file that joined an event after it was marked is no longer one to send
        (the event carries it): its task is set ``skipped`` here and the next one is looked at.
        """
        with self.transaction() as cur:
            while True:
                cur.execute(SELECT_NEXT_TASK, {"skip": [as_uuid(c) for c in skip_config_ids]})
                row = cur.fetchone()
                if row is None:
                    return None
                entity_id, entity_type, entity_time, attempts, in_event, *config_row = row
                if in_event is None:
                    break
                cur.execute(FINISH_TASK, {"config_id": config_row[0], "entity_id": entity_id, "state": "skipped",
                                          "message": f"part of event {in_event.hex} now, which carries it"})
        return ExportTask(config=_config_from_row(config_row), entity_id=entity_id, entity_type=entity_type,
                          entity_time=entity_time.astimezone(_dt.timezone.utc), attempts=attempts)

    @retry_stale
    def get_due_tasks(self, config: ExportConfiguration, limit: int) -> list[ExportTask]:
        """Up to ``limit`` due tasks of one configuration, oldest first (the fast path's batch)."""
        with self.transaction() as cur:
            cur.execute(SKIP_FILES_IN_EVENTS, {"config_id": config.config_id})
            cur.execute(SELECT_DUE_TASKS, {"config_id": config.config_id, "limit": limit})
            return [ExportTask(config=config, entity_id=entity_id, entity_type=entity_type,
                               entity_time=entity_time.astimezone(_dt.timezone.utc), attempts=attempts)
                    for entity_id, entity_type, entity_time, attempts in cur.fetchall()]

    @retry_stale
    def mark_tasks_complete(self, config_id: uuid.UUID | str, entity_ids: list[uuid.UUID]) -> None:
        """``mark_task_complete`` for many tasks in one transaction."""
        params = {"config_id": as_uuid(config_id), "ids": list(entity_ids)}
        with self.transaction() as cur:
            cur.execute(FINISH_TASKS, params)
            cur.execute(RESET_FAILURES, params)

    @retry_stale
    def defer_export_tasks(self, config_id: uuid.UUID | str, seconds: float) -> int:
        """Make every pending task of the configuration due no sooner than ``seconds`` from now."""
        with self.transaction() as cur:
            cur.execute(DEFER_TASKS, {"config_id": as_uuid(config_id), "seconds": float(seconds)})
            return cur.rowcount

    @retry_stale
    def mark_task_complete(self, config_id: uuid.UUID | str, entity_id: uuid.UUID | str) -> None:
        """The target holds the entity: never send it again under this configuration, and a
        success ends the configuration's run of failures."""
        params = {"config_id": as_uuid(config_id), "entity_id": as_uuid(entity_id), "state": "complete",
                  "message": None}
        with self.transaction() as cur:
            cur.execute(FINISH_TASK, params)
            cur.execute(RESET_FAILURES, params)

    @retry_stale
    def mark_task_skipped(self, config_id: uuid.UUID | str, entity_id: uuid.UUID | str, reason: str) -> None:
        """Done with a task without sending: its entity is not one to send any more (no longer
        held here, say)."""
        with self.transaction() as cur:
            cur.execute(FINISH_TASK, {"config_id": as_uuid(config_id), "entity_id": as_uuid(entity_id),
                                      "state": "skipped", "message": reason})

    @retry_stale
    def record_task_failure(self, config_id: uuid.UUID | str, entity_id: uuid.UUID | str, message: str,
                            defer_seconds: float = 0, max_failures: int = 0) -> FailureCount:
        """Count a failed attempt: on the task, and as one more consecutive failure of its
        configuration, which is disabled when that reaches ``max_failures`` (0: never). Every
        pending task of the configuration is deferred by ``defer_seconds``. One transaction."""
        params = {"config_id": as_uuid(config_id), "entity_id": as_uuid(entity_id),
                  "message": message[:2000], "max_failures": int(max_failures), "seconds": float(defer_seconds)}
        with self.transaction() as cur:
            cur.execute(FAIL_TASK, params)
            cur.execute(SELECT_CONFIG_BY_ID, params)
            row = cur.fetchone()
            was_enabled = bool(row and row[-1])
            cur.execute(COUNT_FAILURE, params)
            counted = cur.fetchone()
            if defer_seconds > 0:
                cur.execute(DEFER_TASKS, params)
        if counted is None:  # deleted meanwhile
            return FailureCount(0, False)
        return FailureCount(counted[0], was_enabled and not counted[1])

    @retry_stale
    def get_export_progress(self) -> list[ExportProgress]:
        """Every configuration with its task counts and failure state, by name."""
        with self.transaction() as cur:
            cur.execute(SELECT_CONFIGS)
            configs = [_config_from_row(row) for row in cur.fetchall()]
            cur.execute(SELECT_PROGRESS)
            rows = {row[0]: row[1:] for row in cur.fetchall()}
        out = []
        for c in configs:
            failures, last_error, pending, due, complete, skipped, next_due = rows[c.config_id]
            out.append(ExportProgress(c, failures, last_error, pending, due, complete, skipped,
                                      next_due.astimezone(_dt.timezone.utc) if next_due else None))
        return out

    @retry_stale
    def get_export_task_states(self, config: ExportConfiguration | str | uuid.UUID) -> dict[uuid.UUID, str]:
        """entity_id -> task state for one configuration (for checks and tests)."""
        with self.transaction() as cur:
            config_id = config.config_id if isinstance(config, ExportConfiguration) else \
                self._load_config(cur, config).config_id
            cur.execute(SELECT_TASK_STATES, {"config_id": config_id})
            return dict(cur.fetchall())
