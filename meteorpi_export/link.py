"""The link to one target: what an exchange needs of the exporter, and its requests over it.

Both protocol versions talk to a target the same way: one keep-alive session, named connect
and read timeouts, the node's file store to read bytes from, a pace for thin links, progress
callbacks. ``Link`` holds exactly that, so an exchange never holds (or calls back into) the
exporter. ``Conversation`` is the requests of one configuration to its target: it counts them
and the bytes sent, turns every HTTP outcome into a JSON answer or a ``TaskEnded``, and ends an
exchange that stops making progress. Messages name the target URL with any credentials in it
redacted; the password only ever goes in the Authorization header.
"""
from __future__ import annotations

import enum
import json
import ssl
import threading
import time
import uuid
from urllib.parse import urljoin
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import requests
import urllib3

from meteorpi_model import CameraStatus, ExportConfiguration
from meteorpi_model.urls import redact_url

from .targets import BadTarget, parse_target

if TYPE_CHECKING:
    from meteorpi_db import FileStore
    from meteorpi_db.config import ExportConfig

# Answers are small JSON objects; anything longer is not one. An answer about many entities
# (a batch's check, import or upload) may add this much for each: an id, a state, a message.
MAX_ANSWER_CHARS = 64 * 1024
ANSWER_BYTES_PER_ITEM = 2 * 1024
READ_ANSWER_PIECE = 64 * 1024
# The longest wait a server's Retry-After may impose on a node (a typo there must not park
# a camera's exports for days).
MAX_RETRY_AFTER_SECONDS = 3600


BURST_SECONDS = 0.1  # what an idle link may send at once, in seconds of its rate


class Stopped(Exception):
    """The exporter was told to stop (SIGINT, SIGTERM): raised from inside an upload body so the
    upload ends now rather than after the whole batch. What the target received whole it keeps;
    tasks not recorded complete stay due. Not a failure of the target: nothing is deferred."""


class Pacer:
    """One token bucket for every upload of an exporter, whichever thread or batch sends it.

    Uploads run UPLOADS_IN_FLIGHT at a time (protocol_v2): pacing each by itself gave each the
    whole ``--limit-rate``, three times the cap. Here each piece reserves its share of the link
    time in turn (a virtual clock advanced by ``bytes / rate``), so the sum holds the cap; a
    link idle for a while may send up to ``burst`` bytes at once, no more. Sleeps are cut into
    slices that look at ``stop``, so a stop never waits on the pace."""

    SLICE_SECONDS = 0.1

    def __init__(self, rate: float, burst: float | None = None):
        if rate <= 0:
            raise ValueError("the rate limit must be positive")
        self.rate = float(rate)
        # A tenth of a second's worth: with a second's (up to 1 MiB) a batch of small files went out
        # at once, unpaced, which is what --limit-rate is there to prevent on a shared line.
        self.burst = float(burst if burst is not None else rate * BURST_SECONDS)
        self._free_at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, count: int, stop: threading.Event | None = None) -> None:
        """``count`` more bytes went out: sleep until they fit within the rate (Stopped on ``stop``)."""
        if count <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now - self.burst / self.rate) + count / self.rate
            until = self._free_at
        while True:
            if stop is not None and stop.is_set():
                raise Stopped("stopped")
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.SLICE_SECONDS))


class ExportState(str, enum.Enum):
    """How one export task ended."""
    COMPLETE = "complete"
    FAILED = "failed"
    CONFUSED = "confused"
    SKIPPED = "skipped"    # the entity is no longer held on this node: nothing to send


class TaskEnded(Exception):
    """Ends the exchange of one task (or batch) early, with its state and why.

    ``retry_after`` is the wait the target asked for (Retry-After on a 5xx), if any;
    ``status`` the HTTP status code of the answer that ended it (None: no answer came);
    ``transport`` is True when the link failed, not the target's answer; ``refused`` when the
    target refused this one entity (or this node cannot send it): its own trouble, which says
    nothing of the link, the target or the configuration's other tasks."""

    def __init__(self, state: ExportState, message: str, retry_after: float | None = None,
                 status: int | None = None, transport: bool = False, refused: bool = False):
        super().__init__(message)
        self.state, self.message, self.retry_after = state, message, retry_after
        self.status, self.transport, self.refused = status, transport, refused


def failed(message: str, **how) -> TaskEnded:
    """The target refused, erred, or the exchange made no progress."""
    return TaskEnded(ExportState.FAILED, message, **how)


def refusal(message: str) -> TaskEnded:
    """This entity was refused (or cannot be sent from here); the others may go on."""
    return failed(message, refused=True)


def cut(message: str) -> TaskEnded:
    """The link failed (no answer came): ``transport`` tells it from an answer refusing."""
    return failed(message, transport=True)


def confused(message: str) -> TaskEnded:
    """An answer the protocol does not allow at that point."""
    return TaskEnded(ExportState.CONFUSED, message)


def message_of(answer) -> str:
    """The ``message`` of a failed answer, bounded, for our own messages."""
    message = answer.get("message") if isinstance(answer, dict) else None
    return str(message)[:500] if message else "(no message)"


def short(answer) -> str:
    """An answer as JSON, cut to fit in a message."""
    text = json.dumps(answer, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form, capped; None otherwise
    (an HTTP-date is not worth trusting a remote clock for)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(min(int(value.strip()), MAX_RETRY_AFTER_SECONDS))


@dataclass
class Link:
    """What an exchange uses of its exporter: made by the exporter for each task or batch.

    ``status_of(status_id)`` is the camera status held on this node (None if not held);
    ``on_bytes(n)`` is told as upload bytes leave, ``on_try(line)`` what the target kept of each
    upload the link cut; ``pacer`` (the exporter's one token bucket) paces every upload to the
    rate limit. ``windows`` is the exporter's, kept between batches (protocol_v2's upload sizes
    per configuration). ``stop`` set ends uploads in flight (``Stopped``) between pieces.
    """
    session: requests.Session
    settings: "ExportConfig"
    verify: bool | str
    store: "FileStore"
    status_of: Callable[[uuid.UUID | str], CameraStatus | None]
    on_bytes: Callable[[int], None] | None = None
    on_try: Callable[[str], None] | None = None
    pacer: Pacer | None = None
    windows: dict = field(default_factory=dict)
    stop: threading.Event | None = None

    @property
    def timeout(self) -> tuple[float, float]:
        """requests' (connect, read) timeout: never wait for ever."""
        return (self.settings.connect_timeout_seconds, self.settings.read_timeout_seconds)

    def sent(self, count: int) -> None:
        """``count`` more file bytes left: tell the progress display."""
        if self.on_bytes and count > 0:
            self.on_bytes(count)

    def pace(self, count: int) -> None:
        """``count`` more upload bytes left: wait for the shared rate limit, and raise Stopped
        if the exporter was told to stop (checked after every piece, paced or not)."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped("stopped")
        if self.pacer is not None:
            self.pacer.take(count, self.stop)

    def told(self, line: str) -> None:
        """A line about a cut upload, for whoever watches (the CLI prints it)."""
        if self.on_try is not None:
            self.on_try(line)


class Conversation:
    """Requests to one configuration's target: counts them and the bytes sent, turns every
    HTTP outcome into an answer or a TaskEnded, and spots lack of progress."""

    def __init__(self, link: Link, config: ExportConfiguration, max_requests: int):
        self.link, self.config = link, config
        self.base = config.target_url.rstrip("/")
        self.auth = (config.user_id, config.password)
        self.requests = self.bytes_sent = 0
        self.seen: Counter = Counter()
        self.max_repeats = max(1, link.settings.max_repeats)
        self.max_requests = max_requests
        self._count_lock = threading.Lock()
        # A target stored before `export add` read it as requests does (or written to the
        # database by other means) may send the password to another host than it seems to name:
        # never used. One refused only by later rules (user-info, a query) names its host for
        # certain and goes on working as it did.
        self.bad_target: str | None = None
        try:
            parse_target(config.target_url)
        except BadTarget as e:
            if e.target is None:
                self.bad_target = f"{e}; set it again with `meteorpi export add {config.name} --replace ...`"

    def post(self, url: str, body, label: str, headers: dict | None = None, method: str = "POST",
             answer_items: int = 0, refusal_raises: bool = False) -> dict:
        """One request; its JSON answer, or TaskEnded for anything that is not an answer.

        ``answer_items`` is how many ids the answer may list (a check or an import of a batch
        answers for each entity, an upload for each file): each may take ANSWER_BYTES_PER_ITEM
        beyond MAX_ANSWER_CHARS, so the bound on an answer grows with what was asked, not more.
        A ``{"state": "failed"}`` answer with an HTTP error status is returned as an answer
        (version 1's way), or raised as TaskEnded with that status when ``refusal_raises``: a
        batch's import answers per entity, so such an answer refuses the request as a whole."""
        with self._count_lock:  # uploads of a batch may run in two threads
            if self.requests >= self.max_requests:
                raise failed(f"no progress after {self.requests} requests")
            self.requests += 1
        if self.bad_target:
            raise failed(self.bad_target)
        link = self.link
        timeout = link.timeout
        where = redact_url(self.base)
        try:
            # stream: the answer is read here, bounded in size and time (read_answer)
            # No redirect is followed: requests would send a POST on as a GET (or its body again,
            # to wherever it points), and keep the password from http to https; one is reported.
            if headers is None:
                response = link.session.request(method, url, json=body, auth=self.auth, timeout=timeout,
                                                verify=link.verify, stream=True, allow_redirects=False)
            else:
                response = link.session.request(method, url, data=body, headers=headers, auth=self.auth,
                                                timeout=timeout, verify=link.verify, stream=True,
                                                allow_redirects=False)
            try:
                text = None if response.status_code in (401, 403) else \
                    read_answer(response, MAX_ANSWER_CHARS + ANSWER_BYTES_PER_ITEM * answer_items, timeout[1])
            finally:
                response.close()  # after a whole answer the connection is back in the pool already
        except requests.Timeout:
            raise cut(f"{where} did not answer {label} within {timeout[0]:g}s to connect / "
                      f"{timeout[1]:g}s to reply") from None
        except AnswerTooSlow:
            raise cut(f"{where} did not finish its answer to {label} within {timeout[1]:g}s") from None
        except requests.ConnectionError as e:
            raise cut(f"cannot reach {where} ({_reason(e)})") from None
        except requests.RequestException as e:
            raise cut(f"request {label} to {where} failed: {type(e).__name__}") from None
        answer = self._answer(response, text, label, where)
        if refusal_raises and response.status_code >= 400 and answer.get("state") == "failed":
            raise failed(f"{where} refused {label} (HTTP {response.status_code}): {message_of(answer)}",
                         status=response.status_code)
        key = (label, json.dumps(answer, sort_keys=True))
        with self._count_lock:
            self.seen[key] += 1
        if self.seen[key] >= self.max_repeats:
            raise failed(f"no progress: {label} was answered {short(answer)} {self.seen[key]} times")
        return answer

    def _answer(self, response: requests.Response, text: bytes | None, label: str, where: str) -> dict:
        """``text`` is the answer's body as read_answer gave it (None: too long to be an answer)."""
        code = response.status_code
        if code in (401, 403):
            raise failed(f"{where} refused the credentials of user {self.config.user_id!r} (HTTP {code}): "
                         f"check the user, its password and its import role there "
                         f"(meteorpi export add {self.config.name} ... to set them again)", status=code)
        try:
            answer = json.loads(text) if text is not None else None
        except ValueError:
            answer = None
        if code >= 500:
            detail = f": {message_of(answer)}" if isinstance(answer, dict) and "message" in answer else ""
            raise failed(f"{where} answered HTTP {code} to {label}{detail}; will retry later",
                         retry_after=retry_after(response.headers.get("Retry-After")), status=code)
        if isinstance(answer, dict) and answer.get("state") == "failed":
            return answer
        if 300 <= code < 400 and response.headers.get("Location"):
            location = _shown_location(response.url, response.headers["Location"])
            raise failed(f"{where} answered {label} with HTTP {code}, a redirect to {location}: a node's data "
                         f"and password never follow a redirect; if that is the archive, set the target to "
                         f"it (meteorpi export add {self.config.name} --replace ...)", status=code)
        if code >= 300:
            raise failed(f"{where} answered HTTP {code} to {label}: is {redact_url(self.config.target_url)} "
                         f"the /import URL of a meteorpi server?", status=code)
        if not isinstance(answer, dict):
            shown = "more than a meteorpi answer holds" if text is None else repr(text[:80].decode("utf-8", "replace"))
            raise confused(f"{where} answered {label} with something that is not a JSON object: {shown}")
        return answer


def _shown_location(url: str, location: str) -> str:
    """A redirect's target as a message may show it: made absolute, credentials redacted, cut
    short, and anything that would drive a terminal escaped (it is the server's text)."""
    try:
        absolute = urljoin(url, location)
    except ValueError:  # not a URL urllib can read: shown as sent
        absolute = location
    shown = redact_url(absolute)[:200]
    return shown if shown.isprintable() else shown.encode("unicode_escape").decode("ascii")


class AnswerTooSlow(Exception):
    """An answer's body did not arrive within its time (``read_answer``)."""


def read_answer(response: requests.Response, limit: int, seconds: float) -> bytes | None:
    """The body of ``response`` (requested with ``stream=True``) if it holds at most ``limit``
    bytes, else None; AnswerTooSlow when it takes longer than ``seconds`` in all.

    Why not ``response.text``: requests reads a whole body into memory, each socket read within
    the read timeout but with no end overall. A URL that is not a meteorpi server (a typo, a
    captive portal, a file server) may answer gigabytes, or a byte a minute for ever: a camera
    node would fill its memory or wait for good. Answers are small JSON objects. Each read
    returns what has arrived (``read1``), so the clock is looked at between them; content
    decoding is bounded per read too (no decompression bomb)."""
    deadline = time.monotonic() + seconds
    parts, size = [], 0
    while True:
        piece = _read_some(response, min(READ_ANSWER_PIECE, limit + 1 - size))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        size += len(piece)
        if size > limit:
            return None
        if time.monotonic() > deadline:
            raise AnswerTooSlow(f"the answer took longer than {seconds:g}s")


def _read_some(response: requests.Response, most: int) -> bytes:
    """One read of the body (``read1``), urllib3's errors raised as requests' (as requests' own
    reads of a body raise them): a link cut while the answer arrives is a cut like any other."""
    try:
        return response.raw.read1(most, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as e:
        raise requests.exceptions.ReadTimeout(e) from e
    except urllib3.exceptions.SSLError as e:
        raise requests.exceptions.SSLError(e) from e
    except urllib3.exceptions.DecodeError as e:
        raise requests.exceptions.ContentDecodingError(e) from e
    except (urllib3.exceptions.ProtocolError, OSError) as e:
        raise requests.exceptions.ConnectionError(e) from e


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
