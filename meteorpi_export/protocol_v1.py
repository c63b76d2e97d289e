"""One export task's conversation with its target: the client rules of docs/protocol.md, request by request.

``TaskExchange(exporter, task, entity).run()`` returns when the target said ``complete`` and
raises ``TaskEnded`` (failed or confused, with a message) otherwise. Whatever the target
answers, the conversation ends: the same request answered the same way ``export.max_repeats``
times fails it, and so does a hard cap on requests per task. Messages name the target URL with
any credentials in it redacted; the password only ever goes in the Authorization header.
"""
from __future__ import annotations

import enum
import json
import ssl
import threading
from collections import Counter
from typing import TYPE_CHECKING

import requests

from meteorpi_model import Event, FileRecord

from .database import redact_url
from .exports import ExportTask

if TYPE_CHECKING:
    from .exporter import MeteorExporter

# Answers are small JSON objects; anything longer is not one.
MAX_ANSWER_CHARS = 64 * 1024


class ExportState(str, enum.Enum):
    """How one export task ended."""
    COMPLETE = "complete"
    FAILED = "failed"
    CONFUSED = "confused"
    SKIPPED = "skipped"    # the entity is no longer held on this node: nothing to send


# The longest wait a server's Retry-After may impose on a node (a typo there must not park
# a camera's exports for days).
MAX_RETRY_AFTER_SECONDS = 3600


class TaskEnded(Exception):
    """Ends the exchange of one task early, with its state and why; ``retry_after`` is the
    wait the target asked for (Retry-After on a 5xx), if any."""

    def __init__(self, state: ExportState, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.state, self.message, self.retry_after = state, message, retry_after
        self.transport = False  # True when the link failed, not the target's answer


def _failed(message: str) -> TaskEnded:
    return TaskEnded(ExportState.FAILED, message)


def _cut(message: str) -> TaskEnded:
    """The link failed (no answer came): ``transport`` tells it from an answer refusing."""
    ended = _failed(message)
    ended.transport = True
    return ended


def _confused(message: str) -> TaskEnded:
    return TaskEnded(ExportState.CONFUSED, message)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form, capped; None otherwise
    (an HTTP-date is not worth trusting a remote clock for)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(min(int(value.strip()), MAX_RETRY_AFTER_SECONDS))


class Conversation:
    """Requests to one configuration's target: counts them and the bytes sent, turns every
    HTTP outcome into an answer or a TaskEnded, and spots lack of progress."""

    def __init__(self, exporter: "MeteorExporter", config, max_requests: int):
        self.exporter, self.config = exporter, config
        self.base = config.target_url.rstrip("/")
        self.auth = (config.user_id, config.password)
        self.requests = self.bytes_sent = 0
        self.seen: Counter = Counter()
        self.max_repeats = max(1, exporter.settings.max_repeats)
        self.max_requests = max_requests
        self._count_lock = threading.Lock()

    def _post(self, url: str, body, label: str, headers: dict | None = None, method: str = "POST") -> dict:
        """One request; its JSON answer, or TaskEnded for anything that is not an answer."""
        with self._count_lock:  # uploads of a batch may run in two threads
            if self.requests >= self.max_requests:
                raise _failed(f"no progress after {self.requests} requests")
            self.requests += 1
        settings = self.exporter.settings
        timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)
        where = redact_url(self.base)
        try:
            if headers is None:
                response = self.exporter.session.request(method, url, json=body, auth=self.auth, timeout=timeout,
                                                         verify=self.exporter.verify)
            else:
                response = self.exporter.session.request(method, url, data=body, headers=headers, auth=self.auth,
                                                         timeout=timeout, verify=self.exporter.verify)
        except requests.Timeout:
            raise _cut(f"{where} did not answer {label} within {timeout[0]:g}s to connect / "
                       f"{timeout[1]:g}s to reply") from None
        except requests.ConnectionError as e:
            raise _cut(f"cannot reach {where} ({_reason(e)})") from None
        except requests.RequestException as e:
            raise _cut(f"request {label} to {where} failed: {type(e).__name__}") from None
        answer = self._answer(response, label, where)
        key = (label, json.dumps(answer, sort_keys=True))
        with self._count_lock:
            self.seen[key] += 1
        if self.seen[key] >= self.max_repeats:
            raise _failed(f"no progress: {label} was answered {_short(answer)} {self.seen[key]} times")
        return answer

    def _answer(self, response: requests.Response, label: str, where: str) -> dict:
        code = response.status_code
        if code in (401, 403):
            raise _failed(f"{where} refused the credentials of user {self.config.user_id!r} (HTTP {code}): "
                          f"check the user, its password and its import role there "
                          f"(meteorpi export add {self.config.name} ... to set them again)")
        text = response.text[:MAX_ANSWER_CHARS + 1]
        try:
            answer = json.loads(text) if len(text) <= MAX_ANSWER_CHARS else None
        except ValueError:
            answer = None
        if code >= 500:
            detail = f": {_message(answer)}" if isinstance(answer, dict) and "message" in answer else ""
            ended = _failed(f"{where} answered HTTP {code} to {label}{detail}; will retry later")
            ended.retry_after = retry_after(response.headers.get("Retry-After"))
            raise ended
        if isinstance(answer, dict) and answer.get("state") == "failed":
            return answer
        if code >= 300:
            raise _failed(f"{where} answered HTTP {code} to {label}: is {self.config.target_url} "
                          f"the /import URL of a meteorpi server?")
        if not isinstance(answer, dict):
            raise _confused(f"{where} answered {label} with something that is not a JSON object: {text[:80]!r}")
        return answer


class TaskExchange(Conversation):
    """The version-1 requests of one task."""

    def __init__(self, exporter: "MeteorExporter", task: ExportTask, entity: Event | FileRecord):
        self.task, self.entity = task, entity
        self.files = {f.file_id: f for f in (entity.files if isinstance(entity, Event) else [entity])}
        max_repeats = max(1, exporter.settings.max_repeats)
        # However the server answers, a task ends within this many requests.
        super().__init__(exporter, task.config, max_repeats * (3 * len(self.files) + 4))

    def run(self) -> None:
        """Send the entity until the target says complete; raises TaskEnded otherwise."""
        kind, entity_id = self.task.entity_type, self.task.entity_id
        full = {"type": kind, kind: self.entity.as_dict()}
        cached = {"type": "cached_entity", "cached_entity_id": entity_id.hex}
        body, label = full, f"{kind} {entity_id.hex}"
        while True:
            answer = self._post(self.base, body, label)
            state = answer.get("state")
            if state == "complete":
                return
            if state == "need_status":
                self._send_status(self._answer_id(answer, "status_id", label))
            elif state == "need_file_data":
                self._upload(self._answer_id(answer, "file_id", label))
            elif state == "failed":
                raise _failed(f"the target refused {label}: {_message(answer)}")
            elif state not in ("continue", "continue-nocache"):
                raise _confused(f"the target answered {_short(answer)} to {label}, which the protocol does not allow")
            if state == "continue-nocache":
                body, label = full, f"{kind} {entity_id.hex}"
            else:
                body, label = cached, f"cached_entity {entity_id.hex}"

    def _answer_id(self, answer: dict, key: str, label: str) -> str:
        value = answer.get(key)
        if not isinstance(value, str):
            raise _confused(f"the target answered {_short(answer)} to {label}: no {key}")
        return value.lower()

    def _send_status(self, status_id: str) -> None:
        wanted = {self.entity.status_id.hex} | {f.status_id.hex for f in self.files.values()}
        if status_id not in wanted:
            raise _confused(f"the target asked for camera status {status_id}, which "
                            f"{self.task.entity_type} {self.task.entity_id.hex} does not refer to")
        status = self.exporter.db.get_camera_status_by_id(status_id)
        if status is None:
            raise _failed(f"camera status {status_id} is not held on this node")
        label = f"status {status_id}"
        answer = self._post(self.base, {"type": "status", "status": status.as_dict()}, label)
        self._expect_continue(answer, label)

    def _upload(self, file_id: str) -> None:
        record = next((f for f in self.files.values() if f.file_id.hex == file_id), None)
        if record is None:
            raise _confused(f"the target asked for the bytes of file {file_id}, which is not part of "
                            f"{self.task.entity_type} {self.task.entity_id.hex}")
        store = self.exporter.db.file_store
        path = store.path(record.file_id, record.md5)
        if not store.verify(record.file_id, record.md5):
            raise _failed(f"file {file_id}: the bytes at {path} are missing or no longer match their "
                          f"MD5 {record.md5}; not sent (restore the file or re-register it)")
        label = f"data {file_id}"
        from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor  # version 1 only: not at start
        with open(path, "rb") as fh:
            encoder = MultipartEncoder(fields={"file": (record.file_name or file_id, fh, record.mime_type)})
            monitor = MultipartEncoderMonitor(encoder, self.exporter.upload_callback(record.file_size))
            answer = self._post(f"{self.base}/data/{file_id}/{record.md5.lower()}", monitor, label,
                                headers={"Content-Type": monitor.content_type})
        self.bytes_sent += record.file_size
        self._expect_continue(answer, label)

    def _expect_continue(self, answer: dict, label: str) -> None:
        state = answer.get("state")
        if state == "failed":
            raise _failed(f"the target refused {label}: {_message(answer)}")
        if state != "continue":
            raise _confused(f"the target answered {_short(answer)} to {label}; only continue or failed may follow")



def _message(answer) -> str:
    message = answer.get("message") if isinstance(answer, dict) else None
    return str(message)[:500] if message else "(no message)"


def _short(answer) -> str:
    text = json.dumps(answer, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _reason(error: Exception) -> str:
    """The innermost cause of a connection error, without URLs (they might carry credentials)."""
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (f"its TLS certificate is not trusted: {cause.verify_message}; for an archive with a "
                f"private CA, set export.ca_bundle to that CA's certificate")
    text = str(cause.args[-1] if cause.args else cause)
    for marker in ("Connection refused", "Connection reset", "Name or service not known",
                   "Remote end closed connection", "Broken pipe", "timed out"):
        if marker.lower() in text.lower() or marker.lower() in str(error).lower():
            return marker.lower()
    return type(cause).__name__
