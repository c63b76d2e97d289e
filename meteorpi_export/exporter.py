"""The exporter: the client half of docs/protocol.md, driving one export task at a time to its end.

``MeteorExporter(db).handle_next_export()`` takes the oldest due task, sends its entity to the
configuration's target and answers each reply as the protocol's client rules say: a status the
server needs, then ``cached_entity``; a file's bytes, streamed from the store after checking
they still match their MD5, then ``cached_entity``; the full entity again after
``continue-nocache``. The task ends

* ``complete`` — the target said so; only now is the task marked done, so a process killed at
  any earlier point leaves it pending and it is simply sent again;
* ``failed`` — the target refused, could not be reached, erred, or the exchange stopped making
  progress (the same request answered the same way ``export.max_repeats`` times);
* ``confused`` — an answer the protocol does not allow at that point.

A failed or confused task counts against its configuration (``record_task_failure``): every due
task of that configuration is deferred by ``export.defer_on_failure_seconds`` (or the target's
Retry-After, when longer: a server that says it is away is not asked again meanwhile) and
``export.max_failures_before_disable`` failures in a row disable it; a success resets the count.
Passwords go in the Authorization header only, never into a log line or a message. The
requests themselves are protocol_v1.py (one task) and protocol_v2.py (a batch), over the
``Link`` this module gives them (link.py); this module schedules tasks and records outcomes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import requests

from meteorpi_model import now, wire
from meteorpi_model.urls import redact_url

from meteorpi_db import ConfigError, MeteorDatabase, StorageUnavailable
from meteorpi_db.config import ExportConfig
from meteorpi_db.export_queue import ExportTask

from .link import ExportState, Link, Pacer, Stopped, TaskEnded
from .protocol_v1 import TaskExchange
from .protocol_v2 import BATCH_TASKS, BatchExchange, fit_batch, probe_protocol
from .targets import BadTarget, parse_target
from .transport import upload_session

log = logging.getLogger("meteorpi.exporter")
# Longest wait between rounds of `run` when a deferred task falls due sooner than the interval.
MIN_ROUND_SECONDS = 0.5
# A task the target refused (the entity alone) waits between these, doubling per refusal.
REFUSED_LEAST_SECONDS = 60
REFUSED_MOST_SECONDS = 24 * 3600
# Answers that say "retry later" (the target's database or disk is out): they defer, never disable.
RETRY_LATER_STATUSES = frozenset({503, 507})


# ExportTotals' counter of each final state.
_COUNTERS = {ExportState.COMPLETE: "completed", ExportState.FAILED: "failed", ExportState.CONFUSED: "confused",
             ExportState.SKIPPED: "skipped"}


@dataclass(frozen=True)
class TaskReport:
    """What one task did: for progress displays and the final summary."""
    task: ExportTask
    state: ExportState
    message: str | None
    requests: int
    bytes_sent: int
    seconds: float
    refused: bool = False  # FAILED because the target refused this entity alone (link.TaskEnded.refused)


@dataclass
class ExportTotals:
    """Sums over many tasks."""
    completed: int = 0
    failed: int = 0
    confused: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    requests: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def add(self, report: TaskReport) -> None:
        """Count one finished task."""
        counter = _COUNTERS[report.state]
        setattr(self, counter, getattr(self, counter) + 1)
        self.bytes_sent += report.bytes_sent
        self.requests += report.requests
        if report.state in (ExportState.FAILED, ExportState.CONFUSED):
            self.failures.append(f"{report.task.entity_type} {report.task.entity_id.hex} "
                                 f"({report.task.config.name}): {report.message}")

    def merge(self, other: "ExportTotals") -> None:
        """Add another run's sums (seconds included) to these."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def ok(self) -> bool:
        """No task failed or was confused."""
        return not (self.failed or self.confused)


class MeteorExporter:
    """Sends due export tasks to their targets over one keep-alive HTTP session.

    ``on_task(report)`` is called when a task ends and ``on_bytes(n)`` as upload bytes leave,
    so a caller can show progress; this class itself only logs. ``on_try(line)`` is called with
    a line saying what the target kept of each upload the link cut (nothing, or how many bytes).
    ``rate_limit`` (bytes per second) caps upload speed for nodes on thin links. Use as a
    context manager, or ``close()``.
    """

    def __init__(self, db: MeteorDatabase, settings: ExportConfig | None = None,
                 session: requests.Session | None = None,
                 on_task: Callable[[TaskReport], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None,
                 rate_limit: float | None = None,
                 on_try: Callable[[str], None] | None = None):
        self.db = db
        self.on_try = on_try
        self._windows: dict = {}  # export configuration -> UploadWindow (fast path)
        self.settings = settings or db.config.export
        self.session = session or upload_session()
        self.session.headers.setdefault("User-Agent", "meteorpi-exporter/2")
        # Given with each request: a session's own verify= loses to REQUESTS_CA_BUNDLE.
        self.verify: bool | str = ca_bundle_path(self.settings.ca_bundle) if self.settings.ca_bundle else True
        self.on_task, self.on_bytes = on_task, on_bytes
        self.rate_limit = rate_limit
        # One bucket for the exporter's life: concurrent uploads, batches and rounds share it.
        self.pacer = Pacer(rate_limit) if rate_limit else None
        self._stop: threading.Event | None = None  # export_due's: ends uploads in flight
        self.last_report: TaskReport | None = None
        self._protocols: dict[str, int] = {}  # target URL -> protocol version it speaks
        self._probing: dict[str, Future] = {}  # target URL -> its probe, running (_start_probes)
        self._prober: ThreadPoolExecutor | None = None

    def __enter__(self) -> "MeteorExporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session's connections (a probe still running is waited for)."""
        if self._prober is not None:
            self._prober.shutdown(wait=True)
            self._prober = None
        self.session.close()

    def link(self) -> Link:
        """What an exchange may use of this exporter, as it is set now (callbacks included)."""
        return Link(session=self.session, settings=self.settings, verify=self.verify, store=self.db.file_store,
                    status_of=self.db.get_camera_status_by_id, on_bytes=self.on_bytes, on_try=self.on_try,
                    pacer=self.pacer, windows=self._windows, stop=self._stop)

    def mark_all(self) -> int:
        """Mark new entities of every enabled configuration; returns the tasks added."""
        added = 0
        for config in self.db.get_export_configurations():
            if config.enabled:
                added += self.db.mark_entities_to_export(config)
        return added

    def handle_next_export(self, skip_config_ids=()) -> ExportState | None:
        """Drive the oldest due task to its end and return how it ended (None: nothing due)."""
        task = self.db.get_next_entity_to_export(skip_config_ids)
        if task is None:
            return None
        started = time.monotonic()
        entity = self.db.get_event(task.entity_id) if task.entity_type == "event" else self.db.get_file(task.entity_id)
        exchange, refused, status = None, False, None
        if entity is None:
            state, message = ExportState.SKIPPED, f"{task.entity_type} is no longer held on this node"
            self.db.mark_task_skipped(task.config.config_id, task.entity_id, message)
        else:
            exchange, wait = TaskExchange(self.link(), task, entity), None
            try:
                exchange.run()
                state, message = ExportState.COMPLETE, None
            except TaskEnded as ended:
                state, message, wait, refused = ended.state, ended.message, ended.retry_after, ended.refused
                status = ended.status
            except Stopped:
                raise  # not the target's failure: the task stays due, nothing is deferred
            except OSError as e:  # reading the file store
                state, message = ExportState.FAILED, f"cannot read a file of this node: {e}"
            self._record(task, state, message, wait, refused, status)
        report = TaskReport(task, state, message, exchange.requests if exchange else 0,
                            exchange.bytes_sent if exchange else 0, time.monotonic() - started, refused)
        self.last_report = report
        log.debug("%s %s -> %s: %s (%d requests, %d bytes)", task.entity_type, task.entity_id.hex,
                  task.config.name, state.value, report.requests, report.bytes_sent)
        if self.on_task:
            self.on_task(report)
        return state

    def _record(self, task: ExportTask, state: ExportState, message: str | None,
                retry_after: float | None = None, refused: bool = False, status: int | None = None) -> None:
        """A task's end in the database; a failure defers its configuration's tasks, for as long
        as the target asked if that is longer than ``export.defer_on_failure_seconds``, and
        counts towards disabling the configuration unless the target said to retry later (503,
        507). A refusal of this one entity defers only its task, longer after each refusal."""
        config = task.config
        if state == ExportState.COMPLETE:
            self.db.mark_task_complete(config.config_id, task.entity_id)
            return
        if refused:
            wait = refused_task_wait(self.settings.defer_on_failure_seconds, task.attempts)
            self.db.record_task_refusal(config.config_id, task.entity_id, f"{state.value}: {message}", wait)
            log.warning("export %s: %s %s refused: %s (refusal %d of this %s; it alone waits %gs, the others "
                        "go on)", config.name, task.entity_type, task.entity_id.hex, message, task.attempts + 1,
                        task.entity_type, wait)
            return
        wait = max(self.settings.defer_on_failure_seconds, retry_after or 0)
        counts = status not in RETRY_LATER_STATUSES
        count = self.db.record_task_failure(config.config_id, task.entity_id, f"{state.value}: {message}",
                                            wait, self.settings.max_failures_before_disable, counts=counts)
        asked = ", as the target asked" if retry_after and retry_after >= wait else ""
        how = (f"failure {count.consecutive_failures} in a row" if counts
               else "the target asked to retry later: not counted towards disabling")
        log.warning("export %s: %s %s %s: %s (%s; its tasks wait %gs%s)", config.name,
                    task.entity_type, task.entity_id.hex, state.value, message, how, wait, asked)
        if count.disabled:
            log.error("export %s DISABLED after %d failures in a row; last: %s. Fix the cause, then "
                      "`meteorpi export enable %s`", config.name, count.consecutive_failures, message,
                      config.name)

    def protocol_for(self, config) -> int:
        """The protocol version ``config``'s target speaks: 2 (the fast path) if it offers it and
        ``export.fast_path`` allows it, else 1. Asked once per target and exporter (the answer
        of a probe started by ``_start_probes`` is waited for)."""
        if not self.settings.fast_path:
            return wire.PROTOCOL_V1
        url = config.target_url
        if url not in self._protocols:
            probing = self._probing.pop(url, None)
            self._protocols[url] = probing.result() if probing is not None else probe_protocol(self.link(), config)
        return self._protocols[url]

    def _start_probes(self, configs) -> None:
        """Ask each target not asked yet which protocol it speaks, in the background.

        Why: the probe is the first request a server sees from this exporter, and it pays for
        checking the password (~0.1 s of scrypt on the server); the first batch's tasks and
        entities are read from this node's database meanwhile instead of after it. The check
        that follows goes over the probe's connection, whose login the server remembers."""
        if not self.settings.fast_path:
            return
        for config in configs:
            url = config.target_url
            probing = self._probing.get(url)
            if url in self._protocols or (probing is not None and not _failed(probing)):
                continue  # known, or being asked (a probe that failed, on a round with nothing due, is asked again)
            if self._prober is None:
                self._prober = ThreadPoolExecutor(2, thread_name_prefix="meteorpi-probe")
            self._probing[url] = self._prober.submit(probe_protocol, self.link(), config)

    def export_batch(self, configs) -> list[TaskReport] | None:
        """Send up to BATCH_TASKS due tasks over the fast path; their reports (None when the
        target turns out not to offer it: nothing was sent).

        ``configs`` share one target and its credentials (an event and a file configuration
        to the same archive, typically): their tasks travel together, one check, one upload
        stream and one import for all, and each outcome is recorded under its own configuration.
        """
        configs = [configs] if not isinstance(configs, (list, tuple)) else list(configs)
        started = time.monotonic()
        tasks: list[ExportTask] = []
        for config in configs:
            tasks += self.db.get_due_tasks(config, BATCH_TASKS - len(tasks))
            if len(tasks) >= BATCH_TASKS:
                break
        if not tasks:
            return []
        entities = self.db.get_entities([t.entity_id for t in tasks if t.entity_type == "event"],
                                        [t.entity_id for t in tasks if t.entity_type == "file"])
        tasks = fit_batch(tasks, entities)
        try:
            version = self.protocol_for(configs[0])
        except TaskEnded:
            version = wire.PROTOCOL_V1  # unreachable now: the version-1 path fails the task and defers
        if version != wire.PROTOCOL_V2:
            return None
        exchange = BatchExchange(self.link(), configs[0], tasks, entities)
        try:
            outcomes = [(o.task, o.state, o.message, o.refused) for o in exchange.run()]
        except Stopped as stopped:
            # Imports the target answered before the stop are recorded; the rest stays due.
            done = getattr(stopped, "outcomes", [])
            for config in configs:
                ids = [o.task.entity_id for o in done
                       if o.state == ExportState.COMPLETE and o.task.config.config_id == config.config_id]
                if ids:
                    self.db.mark_tasks_complete(config.config_id, ids)
            raise
        except (TaskEnded, OSError) as e:  # the batch as a whole: one failure per configuration
            state = e.state if isinstance(e, TaskEnded) else ExportState.FAILED
            message = e.message if isinstance(e, TaskEnded) else f"cannot read a file of this node: {e}"
            firsts = list({t.config.config_id: t for t in reversed(tasks)}.values())
            outcomes = [(task, state, message, False) for task in firsts]
            for task in firsts:
                self._record(task, state, message, e.retry_after if isinstance(e, TaskEnded) else None,
                             status=e.status if isinstance(e, TaskEnded) else None)
        else:
            for config in configs:
                done = [t.entity_id for t, state, _, _ in outcomes
                        if state == ExportState.COMPLETE and t.config.config_id == config.config_id]
                if done:
                    self.db.mark_tasks_complete(config.config_id, done)
            for task, state, message, refused in outcomes:
                if state == ExportState.SKIPPED:
                    self.db.mark_task_skipped(task.config.config_id, task.entity_id, message)
                elif state != ExportState.COMPLETE:
                    self._record(task, state, message, refused=refused)
        seconds = time.monotonic() - started
        reports = []
        for i, (task, state, message, refused) in enumerate(outcomes):
            first = i == 0  # the batch's requests and bytes are counted once
            reports.append(TaskReport(task, state, message, exchange.requests if first else 0,
                                      exchange.bytes_sent if first else 0, seconds if first else 0.0, refused))
        for report in reports:
            self.last_report = report
            if self.on_task:
                self.on_task(report)
        return reports

    def _export_batches(self, skip: set, totals: "ExportTotals", failed_configs: set) -> bool:
        """One fast-path batch for the first target that has one; whether any was sent."""
        if not self.settings.fast_path:
            return False
        eligible = []
        for config in self.db.get_export_configurations():
            if not config.enabled or config.config_id in skip or config.config_id in failed_configs:
                continue
            if self._protocols.get(config.target_url, wire.PROTOCOL_V2) != wire.PROTOCOL_V2:
                skip.add(config.config_id)  # known to speak version 1 only
                continue
            eligible.append(config)
        self._start_probes(eligible)
        while eligible:
            target = (eligible[0].target_url, eligible[0].user_id, eligible[0].password)
            group = [c for c in eligible if (c.target_url, c.user_id, c.password) == target]
            eligible = [c for c in eligible if c not in group]
            reports = self.export_batch(group)  # reads its tasks while the target's probe runs
            if not reports:  # none due, or the target speaks version 1 only
                skip.update(c.config_id for c in group)
                continue
            for report in reports:
                totals.add(report)
            for report in reports:
                if report.state in (ExportState.FAILED, ExportState.CONFUSED) and not report.refused:
                    failed_configs.add(report.task.config.config_id)
            return True
        return False

    def export_due(self, stop: threading.Event | None = None) -> ExportTotals:
        """Send every due task (a configuration that fails is left alone for the rest of this
        round: its tasks were deferred); returns what was done. ``stop`` ends it between tasks
        (or batches). Targets that offer the fast path get batches; the rest, version 1."""
        totals, failed_configs, started = ExportTotals(), set(), time.monotonic()
        drained_or_v1: set = set()
        self.warn_plain_http()
        self._stop = stop
        try:
            while not (stop is not None and stop.is_set()):
                if self._export_batches(drained_or_v1, totals, failed_configs):
                    continue
                state = self.handle_next_export(list(failed_configs))
                if state is None:
                    break
                totals.add(self.last_report)
                if state in (ExportState.FAILED, ExportState.CONFUSED) and not self.last_report.refused:
                    failed_configs.add(self.last_report.task.config.config_id)
        except Stopped:
            log.info("stopped: uploads in flight ended; what is not recorded complete stays due")
        finally:
            self._stop = None
        totals.seconds = time.monotonic() - started
        return totals

    def warn_plain_http(self) -> None:
        """A warning, every run, for each enabled target that gets its password in clear over
        a public network (accepted with ``export add --insecure-http``)."""
        for config in self.db.get_export_configurations():
            try:
                target = parse_target(config.target_url)
            except BadTarget as e:
                if e.target is None:
                    continue  # its tasks fail with the reason (link.Conversation): nothing is sent there
                target = e.target
            if config.enabled and target.plain_http_to_public:
                log.warning("export %s sends the password of %s in clear over plain HTTP to %s, which is "
                            "not a loopback or private address: anyone on the way can read and reuse it; "
                            "use an https:// target", config.name, config.user_id, redact_url(config.target_url))

    def due_count(self) -> int:
        """Tasks due now across enabled configurations."""
        return sum(p.due for p in self.db.get_export_progress() if p.config.enabled)

    def seconds_until_due(self, limit: float) -> float:
        """Seconds until the next pending task of an enabled configuration is due (at most limit)."""
        soonest = [p.next_due_at for p in self.db.get_export_progress() if p.config.enabled and p.next_due_at]
        if not soonest:
            return limit
        return max(MIN_ROUND_SECONDS, min(limit, (min(soonest) - now()).total_seconds()))

    def run(self, stop: threading.Event, on_round_start: Callable[[int], None] | None = None,
            on_round_end: Callable[[ExportTotals], None] | None = None) -> ExportTotals:
        """Mark and export every ``export.interval_seconds`` (sooner when a deferred task falls
        due) until ``stop`` is set; the task in progress is finished first. ``on_round_start``
        gets the number of tasks due after marking. A database outage is logged and retried."""
        overall = ExportTotals()
        while not stop.is_set():
            totals, wait = ExportTotals(), self.settings.interval_seconds
            try:
                self.mark_all()
                if on_round_start:
                    on_round_start(self.due_count())
                totals = self.export_due(stop)
                wait = self.seconds_until_due(self.settings.interval_seconds)
            except StorageUnavailable as e:
                log.warning("database unavailable (%s); trying again in %ss", e, wait)
            overall.merge(totals)
            if on_round_end:
                on_round_end(totals)
            stop.wait(wait)
        return overall


def refused_task_wait(defer_seconds: float, attempts: int) -> float:
    """How long a task the target refused waits before it is tried again: at least a minute (a
    refusal does not change within one round, and the round must move on), doubling with each
    refusal, at most a day (the archive's operator may yet remove what it conflicts with)."""
    return min(REFUSED_MOST_SECONDS, max(REFUSED_LEAST_SECONDS, defer_seconds) * 2 ** min(attempts, 12))


def _failed(future: Future) -> bool:
    return future.done() and future.exception() is not None


def ca_bundle_path(path: str) -> str:
    """``export.ca_bundle`` as requests' ``verify=``: the CA certificates (PEM) https targets are
    checked against instead of the system's. Checks are never switched off."""
    full = os.path.expanduser(path)
    if not os.path.isfile(full) or not os.access(full, os.R_OK):
        raise ConfigError(f"export.ca_bundle: cannot read {path} (a PEM file of CA certificates)")
    return full


__all__ = ["ExportState", "ExportTotals", "MeteorExporter", "TaskReport"]
