"""Protocol version 2, the fast path (docs/protocol.md), client half: a batch in a few requests.

See meteorpi_server/batch_routes.py for the server half. One batch is:

1. ``POST v2/check`` with every id the batch refers to: which statuses, entities and file bytes
   the target lacks (entities it holds are complete at once, as in version 1);
2. ``POST v2/data``, up to ~32 MiB each, two at a time: the missing files back to back after a
   one-line manifest, read from the store in 1 MiB pieces, not hashed here (see below). The
   size adapts to the link (``uploads.UploadWindow``): an upload cut by the link is followed by a check
   of what the target kept (whole files, and the cut file's prefix, its "offsets"), and the
   rest goes again in uploads half as big, from those offsets; successes grow them back. The
   batch gives up only after ``TRIES_WITHOUT_PROGRESS`` cut uploads in a row kept nothing;
3. ``POST v2/import`` with the missing statuses and entities, one answer per entity: sent while
   the uploads go on, for the entities whose bytes are all in, so the batch does not end with
   the link idle while one big import is written.

A file whose bytes on this node no longer match their MD5 is caught by the server, which
hashes every byte it receives and refuses a file that does not match its manifest MD5, so
corrupt bytes are never held. The client does not hash on the way out: that was a second MD5
of every byte on a node whose CPU the upload shares, for an outcome the server's answer gives
anyway. Only a refused file is re-hashed here, to tell "this node's copy rotted" (restore it)
from a refusal by the target; either way its entity fails with a log line.
Transport trouble (unreachable, timeouts, 5xx, refused credentials) fails the batch: its tasks
stay pending and are deferred like any failed task.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from meteorpi_model import Event, ExportConfiguration, FileRecord, wire

from meteorpi_db.export_queue import ExportTask

from .link import Conversation, ExportState, Link, Stopped, TaskEnded, confused, failed, message_of
from .uploads import FilesBody, take_upload, upload_window

log = logging.getLogger("meteorpi.exporter")
BATCH_TASKS = 500                 # tasks per batch (an event with its files is one)
# Data requests on their way at once. Each ends by waiting for the server's fsyncs of its files;
# with a third in flight the others' bytes keep both ends busy meanwhile: a loopback replication
# of 625 MiB took 2.34-2.49 s with 3 (2.40-2.66 with 4) against 2.69-2.98 s with 2, side by side.
UPLOADS_IN_FLIGHT = 3
TRIES_WITHOUT_PROGRESS = 4        # cut uploads in a row that kept nothing before the batch gives up
IMPORT_AT_LEAST = 25              # tasks an import waits for while uploads are still running


@dataclass
class BatchOutcome:
    """How one task of a batch ended, and what it cost."""
    task: ExportTask
    state: ExportState
    message: str | None
    refused: bool = False  # the target refused this entity alone (link.TaskEnded.refused)


class BatchExchange(Conversation):
    """Exports one batch of one configuration's tasks over protocol version 2."""

    def __init__(self, link: Link, config: ExportConfiguration, tasks: list[ExportTask], entities: dict):
        super().__init__(link, config, max_requests=4 + 4 * len(tasks) + 10_000)
        self.tasks, self.entities = tasks, entities
        self._lock = threading.Lock()
        self._cuts = 0
        self._imports: list[Future] = []  # _send's, for what a stop leaves answered

    def run(self) -> list[BatchOutcome]:
        """Every task's outcome; raises TaskEnded when the batch as a whole could not be sent."""
        present = [t for t in self.tasks if t.entity_id in self.entities]
        outcomes = {t.entity_id: BatchOutcome(t, ExportState.SKIPPED, f"{t.entity_type} is no longer held on this node")
                    for t in self.tasks if t.entity_id not in self.entities}
        if not present:
            return list(outcomes.values())
        files_of = {t.entity_id: _files(self.entities[t.entity_id]) for t in present}
        all_files = {f.file_id: f for fs in files_of.values() for f in fs}
        asked = {
            "statuses": sorted({s.hex for t in present for s in self.entities[t.entity_id].status_ids}),
            "events": [t.entity_id.hex for t in present if t.entity_type == "event"],
            "files": [t.entity_id.hex for t in present if t.entity_type == "file"],
            "file_data": [{"file_id": f.file_id.hex, "md5": f.md5} for f in all_files.values()],
        }
        check = self._post_again(wire.path(self.base, wire.V2_CHECK), asked, f"check of {len(present)} entities",
                                 answer_items=sum(map(len, asked.values())))
        missing = {uuid.UUID(i) for key in ("events", "files") for i in _ids(check, key)}
        missing_data = {uuid.UUID(i) for i in _ids(check, "file_data")}
        refused = {uuid.UUID(r["file_id"]): message_of(r) for r in check.get(wire.REFUSED_FILE_DATA, [])
                   if isinstance(r, dict) and isinstance(r.get("file_id"), str)}
        to_send = []
        for task in present:
            # A refusal first: an entity the target holds may still name a file it holds with
            # another MD5, and then this node's version did not arrive.
            refusal = next((refused[f.file_id] for f in files_of[task.entity_id] if f.file_id in refused), None)
            if refusal:
                outcomes[task.entity_id] = BatchOutcome(task, ExportState.FAILED, f"the target refused: {refusal}", True)
                continue
            if task.entity_id not in missing:
                outcomes[task.entity_id] = BatchOutcome(task, ExportState.COMPLETE, None)
                continue
            to_send.append(task)
        statuses = {uuid.UUID(i) for i in _ids(check, "statuses")}
        try:
            outcomes.update(self._send(to_send, files_of, missing_data, statuses))
        except Stopped as stopped:
            # _send's threads have all ended by now: the imports the target answered count
            # (the exporter records them); everything else stays due.
            stopped.outcomes = [o for done in self._imports
                                if done.done() and not done.cancelled() and done.exception() is None
                                for o in done.result().values()]
            raise
        return [outcomes[t.entity_id] for t in self.tasks]

    def _send(self, tasks: list[ExportTask], files_of: dict, missing_data: set[uuid.UUID],
              statuses: set[uuid.UUID]) -> dict[uuid.UUID, BatchOutcome]:
        """Upload the bytes the target lacks and import each entity as soon as its bytes are in.

        Imports run one at a time beside the uploads (each taking what became ready while the
        previous one ran), so the link and the server's disk never wait for a last, big import.
        """
        needed = {t.entity_id: [f.file_id for f in files_of[t.entity_id] if f.file_id in missing_data] for t in tasks}
        records = {f.file_id: f for t in tasks for f in files_of[t.entity_id] if f.file_id in missing_data}
        problems = self._missing_on_node(records.values())
        # Bytes this node no longer holds stay missing: their entity is refused alone (it waits by
        # itself). Bytes the target refused in an upload (cut, a prefix it lost, a bad copy) are
        # worth another try soon; refused for good, the target's check says so (refused_file_data).
        lasting = set(problems)
        finished = set(problems)
        waiting, ready, outcomes = list(tasks), [], {}
        imports: list[Future] = self._imports
        unsent_statuses = set(statuses)

        def release(final: bool = False) -> None:
            nonlocal waiting
            still = []
            for task in waiting:
                if not all(i in finished for i in needed[task.entity_id]):
                    still.append(task)
                    continue
                bad = next((i for i in needed[task.entity_id] if i in problems), None)
                if bad is not None:
                    outcomes[task.entity_id] = BatchOutcome(task, ExportState.FAILED, problems[bad], bad in lasting)
                else:
                    ready.append(task)
            waiting = still
            idle = all(f.done() for f in imports)
            if ready and (final or (idle and len(ready) >= IMPORT_AT_LEAST)):
                uses = {s for t in ready for s in self.entities[t.entity_id].status_ids} & unsent_statuses
                unsent_statuses.difference_update(uses)  # imports run in order: later ones find them held
                imports.append(importer.submit(self._import, list(ready), sorted(uses, key=lambda s: s.hex)))
                ready.clear()

        window = upload_window(self.link, self.config)
        queue = deque((r, 0) for r in records.values() if r.file_id not in problems)
        check_of = {r.file_id: r for r in records.values()}
        without_progress = 0
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT) as uploader, ThreadPoolExecutor(1) as importer:
            sending: dict[Future, list[tuple[FileRecord, int]]] = {}
            try:
                release()
                while True:
                    while queue and len(sending) < UPLOADS_IN_FLIGHT:
                        group = take_upload(queue, window.size)
                        sending[uploader.submit(self._send_files, group)] = group
                    if not sending:
                        break
                    finished_now, _ = wait(sending, return_when=FIRST_COMPLETED)
                    for done in finished_now:
                        group = sending.pop(done)
                        try:
                            problems.update(done.result())
                        except TaskEnded as ended:
                            if not ended.transport:
                                raise
                            held, refused, offsets, kept = self._after_cut(group, check_of)
                            window.shrink(sum(r.file_size - offset for r, offset in group))
                            problems.update(refused)
                            finished.update(held | set(refused))
                            back = [(r, offsets.get(r.file_id, 0)) for r, _ in group
                                    if r.file_id not in held and r.file_id not in refused]
                            queue.extendleft(reversed(back))
                            without_progress = 0 if kept else without_progress + 1
                            self._report_try(group, ended.message, kept, without_progress, window.size)
                            if without_progress >= TRIES_WITHOUT_PROGRESS:
                                raise _failed_after(ended, without_progress) from None
                            release()
                            continue
                        window.grow()
                        without_progress = 0
                        finished.update(r.file_id for r, _ in group)
                        release()
                release(final=True)
                for done in imports:
                    outcomes.update(done.result())
            except BaseException:
                for future in [*sending, *imports]:
                    future.cancel()
                raise
        return outcomes

    def _post_again(self, url: str, body, label: str, answer_items: int = 0, refusal_raises: bool = False) -> dict:
        """``post`` of an idempotent JSON request, sent again when the link cut it (up to
        TRIES_WITHOUT_PROGRESS times): a check or an import costs little to repeat."""
        for attempt in range(TRIES_WITHOUT_PROGRESS):
            try:
                return self.post(url, body, label if not attempt else f"{label} (again, {attempt})",
                                 answer_items=answer_items, refusal_raises=refusal_raises)
            except TaskEnded as ended:
                if not ended.transport or attempt == TRIES_WITHOUT_PROGRESS - 1:
                    raise
        raise AssertionError("unreachable")

    def _after_cut(self, group: list[tuple[FileRecord, int]], check_of: dict
                   ) -> tuple[set[uuid.UUID], dict[uuid.UUID, str], dict[uuid.UUID, int], int]:
        """Ask the target what a cut upload left it: (file ids now held, refused {id: why},
        offsets it holds of the others, bytes of this upload it kept)."""
        self._cuts += 1
        answer = self._post_again(wire.path(self.base, wire.V2_CHECK),
                                  {"file_data": [{"file_id": r.file_id.hex, "md5": r.md5} for r, _ in group]},
                                  f"check after cut upload {self._cuts}", answer_items=len(group))
        missing = {uuid.UUID(i) for i in _ids(answer, "file_data")}
        refused = {uuid.UUID(r["file_id"]): self._refusal(check_of.get(uuid.UUID(r["file_id"])),
                                                          f"the target refused the bytes: {message_of(r)}")
                   for r in answer.get(wire.REFUSED_FILE_DATA, [])
                   if isinstance(r, dict) and isinstance(r.get("file_id"), str)}
        offsets_raw = answer.get(wire.OFFSETS) or {}
        offsets = {}
        if isinstance(offsets_raw, dict):
            for key, value in offsets_raw.items():
                if isinstance(key, str) and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    offsets[uuid.UUID(key)] = value
        held = {r.file_id for r, _ in group if r.file_id not in missing and r.file_id not in refused}
        kept = 0
        for record, sent_from in group:
            if record.file_id in held:
                kept += record.file_size - sent_from
            elif record.file_id in offsets:
                offsets[record.file_id] = min(offsets[record.file_id], record.file_size)
                kept += max(0, offsets[record.file_id] - sent_from)
        with self._lock:
            self.bytes_sent += kept
        return held, refused, offsets, kept

    def _report_try(self, group, why: str, kept: int, without_progress: int, next_size: int) -> None:
        """One line per cut upload: what the try kept, so a poor link's progress shows."""
        sent = sum(r.file_size - offset for r, offset in group)
        if kept:
            line = (f"upload of {len(group)} file(s) ({sent:,} bytes) was cut ({why}): the target kept {kept:,} bytes; "
                    f"next uploads up to {next_size:,} bytes")
        else:
            line = (f"upload of {len(group)} file(s) ({sent:,} bytes) was cut ({why}): the target kept nothing "
                    f"(try {without_progress} of {TRIES_WITHOUT_PROGRESS} without progress)")
        log.warning("%s", line)
        self.link.told(line)

    def _missing_on_node(self, records) -> dict[uuid.UUID, str]:
        """{file_id: why not sent} for records whose bytes this node's store no longer holds."""
        problems = {}
        store = self.link.store
        for record in records:
            if not store.path(record.file_id, record.md5).is_file():
                problems[record.file_id] = (f"file {record.file_id.hex}: its bytes are missing from this node's store; "
                                            "not sent (restore the file or re-register it)")
                log.error("%s", problems[record.file_id])
        return problems

    def _refusal(self, record: FileRecord | None, message: str) -> str:
        """Why a file the target refused failed: this node's copy, if it no longer matches its
        MD5 (re-hashed here, on this rare path only), else the target's own words."""
        if record is not None and not self.link.store.verify(record.file_id, record.md5):
            message = (f"file {record.file_id.hex}: the bytes on this node no longer match their MD5 "
                       f"{record.md5}; the target refused them (restore the file or re-register it)")
        log.error("%s", message)
        return message

    def _send_files(self, sending: list[tuple[FileRecord, int]]) -> dict[uuid.UUID, str]:
        group = [record for record, _ in sending]
        offsets = {record.file_id: offset for record, offset in sending if offset}
        body = FilesBody(self.link, group, offsets)
        label = f"upload of {len(group)} files starting {group[0].file_id.hex}" + (f" at {offsets[group[0].file_id]}" if group[0].file_id in offsets else "")
        answer = self.post(wire.path(self.base, wire.V2_DATA), body, label,
                           headers={"Content-Type": wire.FILES_MEDIA_TYPE}, answer_items=len(group))
        if answer.get("state") == wire.FAILED:  # the target saw the body cut (the link broke) and said so
            raise failed(f"the target saw the upload cut: {message_of(answer)}", transport=True)
        with self._lock:
            self.bytes_sent += body.length - len(body.head)  # file bytes, as version 1 counts them
        problems = {}
        by_id = {record.file_id: record for record in group}
        for item in answer.get("failed", []):
            if isinstance(item, dict) and isinstance(item.get("file_id"), str):
                file_id = uuid.UUID(item["file_id"])
                problems[file_id] = self._refusal(by_id.get(file_id), f"the target refused the bytes: {message_of(item)}")
        stored = set(_ids(answer, "stored"))
        for record in group:
            if record.file_id.hex not in stored and record.file_id not in problems:
                raise confused(f"the target neither stored nor refused file {record.file_id.hex}")
        return problems

    def _import(self, tasks: list[ExportTask], status_ids: list[uuid.UUID]) -> dict[uuid.UUID, BatchOutcome]:
        statuses = [self.link.status_of(s) for s in status_ids]
        body = {"statuses": [s.as_dict() for s in statuses if s is not None],
                "events": [self.entities[t.entity_id].as_dict() for t in tasks if t.entity_type == "event"],
                "files": [self.entities[t.entity_id].as_dict() for t in tasks if t.entity_type == "file"]}
        entities = sum(map(len, body.values()))
        try:
            answer = self.post(wire.path(self.base, wire.V2_IMPORT), body, f"import of {len(tasks)} entities",
                               answer_items=entities, refusal_raises=True)
        except TaskEnded as ended:
            if len(tasks) > 1 and (ended.transport or ended.status == 413):
                # A link that cuts every few KB, or a server that takes smaller bodies than this
                # (server.max_body_bytes): halves, each retried (an import is idempotent). The
                # statuses go first on their own: whichever part is refused, they arrive.
                if status_ids:
                    self._import([], status_ids)
                half = len(tasks) // 2
                out = self._import(tasks[:half], [])
                out.update(self._import(tasks[half:], []))
                return out
            if ended.status == 413 and tasks:  # this one entity is larger than the server takes: it alone fails
                return {tasks[0].entity_id: BatchOutcome(tasks[0], ExportState.FAILED, ended.message, True)}
            if not ended.transport:
                raise
            # one entity (or the statuses alone): the same small request again, a few times
            answer = self._post_again(wire.path(self.base, wire.V2_IMPORT), body,
                                      f"import of {tasks[0].entity_id.hex}" if tasks else "import of camera statuses",
                                      answer_items=entities, refusal_raises=True)
        # Each task is looked up by its id. The answer lists the statuses sent as well (servers
        # before that did not): they are no task's, so their entries are passed over; a refused
        # status fails the tasks naming it, whose own entries say so.
        results = {}
        for item in answer.get("results", []):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                results[item["id"].lower()] = item
        out = {}
        for task in tasks:
            item = results.get(task.entity_id.hex)
            if item is None:
                out[task.entity_id] = BatchOutcome(task, ExportState.CONFUSED, "the target gave no answer for it")
            elif item.get("state") == wire.COMPLETE:
                out[task.entity_id] = BatchOutcome(task, ExportState.COMPLETE, None)
            else:
                out[task.entity_id] = BatchOutcome(task, ExportState.FAILED, f"the target refused: {message_of(item)}", True)
        return out


def _failed_after(ended: TaskEnded, tries: int) -> TaskEnded:
    return TaskEnded(ended.state, f"{tries} uploads in a row were cut and kept nothing; last: {ended.message}",
                     ended.retry_after)


def fit_batch(tasks: list[ExportTask], entities: dict) -> list[ExportTask]:
    """The first of ``tasks`` whose files one check can name (at least one task): the server
    takes at most wire.MAX_FILES_PER_UPLOAD in a check's ``file_data``. BATCH_TASKS events of
    up to 256 files each could name far more, and the check was then refused whole on every
    round; the tasks left out stay due for the next batch. Its uploads carry only its files,
    so they keep within the limit too."""
    most, named = wire.MAX_FILES_PER_UPLOAD, 0
    for i, task in enumerate(tasks):
        entity = entities.get(task.entity_id)
        count = 0 if entity is None else len(_files(entity))
        if i and named + count > most:
            return tasks[:i]
        named += count
    return tasks


def probe_protocol(link: Link, config: ExportConfiguration) -> int:
    """2 when ``config``'s target offers the fast path, else 1.

    A version-1 server answers 404 (or any client error but refused credentials, or something
    that is not a JSON object): version 1. Refused credentials, a 5xx, a redirect or no answer
    at all raise TaskEnded: the target cannot be asked now, whichever version it speaks."""
    conversation = Conversation(link, config, max_requests=1)
    try:
        answer = conversation.post(wire.path(conversation.base, wire.V2_CAPABILITIES), None, "protocol probe",
                                   method="GET")
    except TaskEnded as ended:
        if ended.state == ExportState.CONFUSED or _client_error(ended.status):
            return wire.PROTOCOL_V1
        raise
    return wire.PROTOCOL_V2 if answer.get("protocol") == wire.PROTOCOL_V2 else wire.PROTOCOL_V1


def _client_error(status: int | None) -> bool:
    """A 4xx that says "not here" rather than "not you" (401/403: the credentials are wrong)."""
    return status is not None and 400 <= status < 500 and status not in (401, 403)


def _files(entity: Event | FileRecord) -> list[FileRecord]:
    return list(entity.files) if isinstance(entity, Event) else [entity]


def _ids(answer: dict, key: str) -> list[str]:
    values = answer.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise confused(f"the target's answer has no list of ids under {key!r}")
    return [v.lower() for v in values]
