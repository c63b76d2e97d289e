"""Protocol version 1 (docs/protocol.md), the client half: one export task's requests, one by one.

``TaskExchange(link, task, entity).run()`` returns when the target said ``complete`` and
raises ``TaskEnded`` (failed or confused, with a message) otherwise. The entity goes in full,
then the target leads: a status it needs, then ``cached_entity``; a file's bytes, streamed
from the store after checking they still match their MD5 (multipart, as deployed servers
expect), then ``cached_entity``; the full entity again after ``continue-nocache``. Whatever
the target answers, the conversation ends: the same request answered the same way
``export.max_repeats`` times fails it, and so does a hard cap on requests per task.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from meteorpi_model import Event, FileRecord, wire

from meteorpi_db.export_queue import ExportTask

from .link import Conversation, Link, confused, failed, message_of, refusal, short

if TYPE_CHECKING:  # requests-toolbelt is imported by version 1's uploads only, not at start
    from requests_toolbelt import MultipartEncoderMonitor


class TaskExchange(Conversation):
    """The version-1 requests of one task."""

    def __init__(self, link: Link, task: ExportTask, entity: Event | FileRecord):
        self.task, self.entity = task, entity
        self.files = {f.file_id: f for f in (entity.files if isinstance(entity, Event) else [entity])}
        max_repeats = max(1, link.settings.max_repeats)
        # However the server answers, a task ends within this many requests.
        super().__init__(link, task.config, max_repeats * (3 * len(self.files) + 4))

    def run(self) -> None:
        """Send the entity until the target says complete; raises TaskEnded otherwise."""
        kind, entity_id = self.task.entity_type, self.task.entity_id
        full = {"type": kind, kind: self.entity.as_dict()}
        cached = {"type": "cached_entity", wire.CACHED_ENTITY_ID: entity_id.hex}
        body, label = full, f"{kind} {entity_id.hex}"
        while True:
            answer = self.post(wire.path(self.base, wire.V1_IMPORT), body, label)
            state = answer.get("state")
            if state == wire.COMPLETE:
                return
            if state == wire.NEED_STATUS:
                self._send_status(self._answer_id(answer, wire.ANSWER_STATES[state], label))
            elif state == wire.NEED_FILE_DATA:
                self._upload(self._answer_id(answer, wire.ANSWER_STATES[state], label))
            elif state == wire.FAILED:
                raise refusal(f"the target refused {label}: {message_of(answer)}")
            elif state not in (wire.CONTINUE, wire.CONTINUE_NOCACHE):
                raise confused(f"the target answered {short(answer)} to {label}, which the protocol does not allow")
            if state == wire.CONTINUE_NOCACHE:
                body, label = full, f"{kind} {entity_id.hex}"
            else:
                body, label = cached, f"cached_entity {entity_id.hex}"

    def _answer_id(self, answer: dict, key: str, label: str) -> str:
        value = answer.get(key)
        if not isinstance(value, str):
            raise confused(f"the target answered {short(answer)} to {label}: no {key}")
        return value.lower()

    def _send_status(self, status_id: str) -> None:
        if status_id not in {s.hex for s in self.entity.status_ids}:
            raise confused(f"the target asked for camera status {status_id}, which "
                           f"{self.task.entity_type} {self.task.entity_id.hex} does not refer to")
        status = self.link.status_of(status_id)
        if status is None:
            raise refusal(f"camera status {status_id} is not held on this node")
        label = f"status {status_id}"
        answer = self.post(wire.path(self.base, wire.V1_IMPORT), {"type": "status", "status": status.as_dict()},
                           label)
        self._expect_continue(answer, label, lasting=True)

    def _upload(self, file_id: str) -> None:
        record = next((f for f in self.files.values() if f.file_id.hex == file_id), None)
        if record is None:
            raise confused(f"the target asked for the bytes of file {file_id}, which is not part of "
                           f"{self.task.entity_type} {self.task.entity_id.hex}")
        store = self.link.store
        path = store.path(record.file_id, record.md5)
        if not store.verify(record.file_id, record.md5):
            raise refusal(f"file {file_id}: the bytes at {path} are missing or no longer match their "
                         f"MD5 {record.md5}; not sent (restore the file or re-register it)")
        label = f"data {file_id}"
        from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor  # version 1 only: not at start
        with open(path, "rb") as fh:
            encoder = MultipartEncoder(fields={wire.V1_DATA_FIELD: (record.file_name or file_id, fh, record.mime_type)})
            monitor = MultipartEncoderMonitor(encoder, upload_progress(self.link, record.file_size))
            answer = self.post(wire.path(self.base, wire.V1_DATA, file_id=file_id, md5=record.md5.lower()), monitor,
                               label, headers={"Content-Type": monitor.content_type})
        self.bytes_sent += record.file_size
        self._expect_continue(answer, label)

    def _expect_continue(self, answer: dict, label: str, lasting: bool = False) -> None:
        """``lasting``: a refusal here is the target's decision on the entity (a status it will
        not hold), which its task waits out alone; refused bytes (a bad copy on the way) are
        worth another try soon, and the target refuses the entity itself once they never match."""
        state = answer.get("state")
        if state == wire.FAILED:
            message = f"the target refused {label}: {message_of(answer)}"
            raise refusal(message) if lasting else failed(message)
        if state != wire.CONTINUE:
            raise confused(f"the target answered {short(answer)} to {label}; only continue or failed may follow")


def upload_progress(link: Link, file_size: int) -> Callable[["MultipartEncoderMonitor"], None]:
    """Monitor callback of one multipart upload: tells ``link`` of file bytes as they leave
    and keeps to its shared rate limit (which may raise Stopped: the upload ends there)."""
    state = {"reported": 0, "read": 0}

    def callback(monitor: "MultipartEncoderMonitor") -> None:
        done = min(monitor.bytes_read, file_size)
        link.sent(done - state["reported"])
        state["reported"] = max(done, state["reported"])
        fresh, state["read"] = monitor.bytes_read - state["read"], max(monitor.bytes_read, state["read"])
        link.pace(fresh)
    return callback
