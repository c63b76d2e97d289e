"""The export queue: what is still due to go to each configuration's target, and how it went.

The exporter (meteorpi_export) takes due tasks oldest first and writes each outcome back, so
the queue and every task's state survive restarts: a task becomes ``complete`` only once the
target has said so. A failure counts against its configuration: its tasks are deferred, and
enough failures in a row disable it. A refusal of one entity (the target will not take that
record) defers only its task.
"""
from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass

from meteorpi_model import ExportConfiguration, as_uuid

from .export_configs import SELECT_CONFIG_BY_ID, SELECT_CONFIGS, config_from_row, find_export_config
from .pool import retry_stale

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
DEFER_TASK = """
UPDATE export_task SET attempts = attempts + 1, last_error = %(message)s,
    due_at = now() + make_interval(secs => %(seconds)s)
WHERE config_id = %(config_id)s AND entity_id = %(entity_id)s AND state = 'pending'
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
# A failure the target asked to be retried later (503, 507): noted, not counted towards disabling.
NOTE_FAILURE = """
UPDATE export_config SET last_error = %(message)s WHERE config_id = %(config_id)s
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
       min(t.due_at) FILTER (WHERE t.state = 'pending'),
       count(t.entity_id) FILTER (WHERE t.state = 'pending' AND t.attempts > 0),
       (array_agg(t.entity_type || ' ' || replace(t.entity_id::text, '-', '') || ': ' || t.last_error
                  ORDER BY t.attempts DESC, t.entity_time)
        FILTER (WHERE t.state = 'pending' AND t.attempts > 0 AND t.last_error IS NOT NULL))[1]
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
    retrying: int = 0                  # pending tasks tried before: refused, or failed with their target
    most_tried: str | None = None      # the one of them tried most often, with its last error


@dataclass(frozen=True)
class FailureCount:
    """What one more failure did to a configuration."""
    consecutive_failures: int
    disabled: bool           # this failure disabled the configuration


class ExportQueueStore:
    """Mixed into MeteorDatabase: the export queue."""

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
        return ExportTask(config=config_from_row(config_row), entity_id=entity_id, entity_type=entity_type,
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
    def record_task_refusal(self, config_id: uuid.UUID | str, entity_id: uuid.UUID | str, message: str,
                            defer_seconds: float) -> None:
        """Count a try the target refused for this entity alone (or this node could not send it):
        only this task waits ``defer_seconds``. Its configuration is not counted as failing and
        its other tasks go on: one record the archive will not take must not hold back, and in
        the end disable, the export of every other."""
        with self.transaction() as cur:
            cur.execute(DEFER_TASK, {"config_id": as_uuid(config_id), "entity_id": as_uuid(entity_id),
                                     "message": message[:2000], "seconds": float(defer_seconds)})

    @retry_stale
    def record_task_failure(self, config_id: uuid.UUID | str, entity_id: uuid.UUID | str, message: str,
                            defer_seconds: float = 0, max_failures: int = 0, counts: bool = True) -> FailureCount:
        """Count a failed attempt: on the task, and (when it ``counts``) as one more consecutive
        failure of its configuration, which is disabled when that reaches ``max_failures`` (0:
        never). Every pending task of the configuration is deferred by ``defer_seconds``. One
        transaction. A target that answers "retry later" (its database or disk is out for a
        while) does not count: an outage of a few hours must not disable every node's export."""
        params = {"config_id": as_uuid(config_id), "entity_id": as_uuid(entity_id),
                  "message": message[:2000], "max_failures": int(max_failures), "seconds": float(defer_seconds)}
        with self.transaction() as cur:
            cur.execute(FAIL_TASK, params)
            cur.execute(SELECT_CONFIG_BY_ID, params)
            row = cur.fetchone()
            was_enabled = bool(row and row[-1])
            cur.execute(COUNT_FAILURE if counts else NOTE_FAILURE, params)
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
            configs = [config_from_row(row) for row in cur.fetchall()]
            cur.execute(SELECT_PROGRESS)
            rows = {row[0]: row[1:] for row in cur.fetchall()}
        out = []
        for c in configs:
            failures, last_error, pending, due, complete, skipped, next_due, retrying, most_tried = rows[c.config_id]
            out.append(ExportProgress(c, failures, last_error, pending, due, complete, skipped,
                                      next_due.astimezone(_dt.timezone.utc) if next_due else None,
                                      retrying, most_tried))
        return out

    @retry_stale
    def get_export_task_states(self, config: ExportConfiguration | str | uuid.UUID) -> dict[uuid.UUID, str]:
        """entity_id -> task state for one configuration (for checks and tests)."""
        with self.transaction() as cur:
            config_id = config.config_id if isinstance(config, ExportConfiguration) else \
                find_export_config(cur, config).config_id
            cur.execute(SELECT_TASK_STATES, {"config_id": config_id})
            return dict(cur.fetchall())
