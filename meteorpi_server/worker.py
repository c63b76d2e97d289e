"""The gunicorn worker of ``meteorpi serve``: gevent, psycopg2 made cooperative, and deadlines.

Why gevent (README, "Choices"): a connection costs a greenlet, not a thread, so neither slow
camera links nor the live feed's hundreds of open streams can take every worker's threads
while imports wait. psycogreen makes psycopg2 wait on the event loop instead of in libpq;
fsyncs and password hashes run in real threads (``meteorpi_db.green``).

A greenlet is cheap, but a client that never finishes would still hold its connection, so each
request gets whole-request deadlines (the model of Apache's mod_reqtimeout), not only a bound
on each read:

* head: the TLS handshake, and the request line and headers, must arrive within
  ``server.header_timeout_seconds`` of the connection opening or of the previous answer
  (so the same bound is how long an idle keep-alive connection stays open); else the
  connection is closed without an answer.
* body: ``server.body_timeout_seconds``, plus one second for every ``server.body_min_rate``
  bytes received; a read past it fails, the request is answered 400 and the connection closed.
  A camera uploading 1 GiB at any rate above the minimum is never cut off.

A connection the server ends is half-closed and drained briefly before it is closed (RFC 9112
§9.6): closing with a client's bytes unread makes the kernel send a reset, and the client's
kernel then drops the answer unread, so a camera refused early (413, a deadline's 400) would
see only "connection reset", never why.

A stop (SIGTERM) lets requests in flight finish but closes connections that are only waiting
for their next request at once: gunicorn would wait up to the head deadline for each.
"""
from __future__ import annotations

import io
import json
import ssl
import time
from contextlib import contextmanager
from datetime import datetime

import gevent
from gunicorn import util
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import (ChunkMissingTerminator, ExpectationFailed, ForbiddenProxyRequest,
                                  InvalidChunkExtension, InvalidChunkSize, InvalidH2CPreface, InvalidHeader,
                                  InvalidHeaderName, InvalidHTTPVersion, InvalidProxyHeader, InvalidProxyLine,
                                  InvalidRequestLine, InvalidRequestMethod, InvalidResponseHeader,
                                  InvalidResponseHeaderName, InvalidSchemeHeaders, LimitRequestHeaders,
                                  LimitRequestLine, NoMoreData, ObsoleteFolding, ParseException,
                                  UnsupportedTransferCoding)
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.ggevent import GeventWorker

from meteorpi_model.logtext import escape_log_text

from .errors import BrokenBody
from .redact import redact_uri


PIECE = 1024  # the smallest read under the body deadline
# A body arriving faster than it is hashed never makes its greenlet wait on the socket: it
# yields to the worker's other requests after this many bytes (one chunk of hashing and writing).
YIELD_BYTES = 256 * 1024
# How long and how much a closing connection is drained for, so its answer is not reset away:
# enough for a client to read the answer, too little for a client to hold the greenlet.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024


class BodyDeadlineExpired(BrokenBody, TimeoutError):
    """The body did not arrive in time (a BrokenBody: read_stream answers it as the client's 400)."""


class DeadlineBody:
    """A request's body (gunicorn's ``wsgi.input``) whose reads end at a deadline that moves
    one second later per ``min_rate`` bytes received. Once it has passed, the request is marked
    to close its connection (the answer says ``Connection: close``): the rest of the body is
    not worth waiting for.

    gunicorn's reads wait for every byte asked, and bytes count only once a read returns, so a
    slow body is read in pieces small enough to arrive in time at the minimum rate.

    Whatever breaks a read — the deadline, a socket error, or gunicorn's parsing of a chunked
    body (NoMoreData, InvalidChunkSize, ChunkMissingTerminator, ...) — the body is broken for
    good: the bytes that did arrive (those a read had gathered, and those gunicorn holds in its
    buffers) are handed over first, then every read raises one ``BrokenBody`` naming the
    problem in plain words, and the connection closes after the answer. So a chunked upload
    cut short keeps its whole files and the cut file's prefix exactly as one cut short of its
    Content-Length does, and no library's exception reaches the application as a 500.
    """

    def __init__(self, req, seconds: float, min_rate: int):
        self.req, self.body, self.seconds, self.min_rate = req, req.body, seconds, min_rate
        self.started, self.received, self.unyielded = time.monotonic(), 0, 0
        self.broken: BrokenBody | None = None
        # The Content-Length declared (None for a chunked body, which its own framing ends).
        # gunicorn's length reader takes the connection's end for the body's, handing over a
        # short body as if whole: a JSON prefix that parsed was once imported as the request.
        reader = getattr(self.body, "reader", None)
        self.declared: int | None = reader.length if type(reader) is LengthReader else None
        # Set once the app has answered: gunicorn then reads what is left of the body only to
        # reach the next request, and a body ending early there just ends the connection.
        self.answered = False

    def _ended_early(self) -> bool:
        """Whether the connection ended before the declared body did, for the app to hear
        (asked after a read that came back short: gunicorn's reads wait for every byte asked,
        unless the peer closed)."""
        return self.declared is not None and self.received < self.declared and not self.answered

    @property
    def failed(self) -> bool:
        """gunicorn's flag of a body whose read raised (its parser then never reuses the
        connection): read by gunicorn on ``req.body``, which this object replaces."""
        return self.broken is not None or getattr(self.body, "failed", False) is True

    def read(self, size: int | None = None) -> bytes:
        return self._pieces(self.body.read, size, stop_at_newline=False)

    def readinto(self, buffer) -> int:
        """Up to ``len(buffer)`` bytes of the body into ``buffer``, as soon as any arrived (0 at
        its end): what the file store receives uploads through.

        Why not read(): gunicorn gathers a read's bytes in its own buffers and copies them out
        (three copies of every byte before the application sees it); a replication of 625 MiB
        spent a third of its worker's CPU there. A body of declared length is read from the
        socket straight into the caller's buffer instead, after what gunicorn already holds of
        it (bytes that came with the head, or after a line read), and gunicorn's reader is told
        how much of the body is left, so the connection's next request starts where it should.
        """
        view = memoryview(buffer).cast("B")
        if self.broken is not None:
            raise self.broken
        source = self._direct()
        if source is None:  # chunked, or another server's body: gunicorn's reads, copied in
            data = self.read(len(view))
            view[:len(data)] = data
            return len(data)
        reader, unreader = source
        # What gunicorn holds comes first: a line read's rest (already counted off the body),
        # then what came with the head (not yet counted; it may run into the next request).
        held = _take(self.body, len(view))
        if not held:
            held = _take(unreader, min(len(view), reader.length))
            reader.length -= len(held)
        if held:
            view[:len(held)] = held
            self._count(len(held))
            return len(held)
        if not reader.length:
            return 0
        try:
            n = self._within_deadline(lambda: unreader.sock.recv_into(view[:reader.length]))
            if not n:  # the peer closed with reader.length bytes of the body still due
                raise NoMoreData()
        except (ParseException, OSError) as e:
            self._break(e)  # a recv_into delivers all or nothing: no bytes are held
            raise self.broken from None
        reader.length -= n
        self._count(n)
        return n

    def _direct(self) -> tuple[LengthReader, SocketUnreader] | None:
        """gunicorn's length-bound reader and its socket, when this body can be read straight
        from the socket (its length declared, gunicorn's own types: their internals are known)."""
        body = self.body
        if type(body) is not Body or type(body.reader) is not LengthReader:
            return None
        unreader = body.reader.unreader
        if type(unreader) is not SocketUnreader or not isinstance(getattr(unreader, "buf", None), io.BytesIO):
            return None
        return body.reader, unreader

    def readline(self, size: int | None = None) -> bytes:
        return self._pieces(self.body.readline, size, stop_at_newline=True)

    def readlines(self, size: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def _pieces(self, read, size: int | None, stop_at_newline: bool) -> bytes:
        """Up to ``size`` bytes (to a newline if ``stop_at_newline``), read in pieces that fit
        the deadline. A read that breaks ends the body (``_break``): the bytes gathered before
        it are returned, the error is raised by the next read. Not so for a line: a line
        without its end is not one, the error is raised at once."""
        if self.broken is not None:
            raise self.broken
        parts, wanted = [], (size if size is not None and size >= 0 else float("inf"))
        while wanted > 0:
            # At most what a client at the minimum rate sends before the deadline, so no client
            # is cut off for bytes that arrived but are not counted yet; a fast client soon
            # earns reads of the whole size asked.
            affordable = (self._deadline() - time.monotonic()) * self.min_rate
            asked = int(min(wanted, max(PIECE, affordable)))
            try:
                data = self._timed(read, asked)
                if (not data or (len(data) < asked and not stop_at_newline)) and self._ended_early():
                    parts.append(data)
                    raise NoMoreData()
            except (ParseException, OSError) as e:
                parts.append(self._break(e))
                if stop_at_newline or not any(parts):
                    raise self.broken from None
                break
            if not data:
                break
            parts.append(data)
            wanted -= len(data)
            if stop_at_newline and data.endswith(b"\n"):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _deadline(self) -> float:
        return self.started + self.seconds + self.received / self.min_rate

    def _timed(self, read, size: int) -> bytes:
        data = self._within_deadline(lambda: read(size))
        self._count(len(data))
        return data

    def _within_deadline(self, receive):
        """``receive()``, cut off at the body's deadline (BodyDeadlineExpired; its message is
        made by ``_break``, once the bytes gunicorn holds are counted)."""
        left = self._deadline() - time.monotonic()
        if left <= 0:
            raise BodyDeadlineExpired("")
        with gevent.Timeout(left, BodyDeadlineExpired("")):
            return receive()

    def _break(self, error: BaseException) -> bytes:
        """End the body after ``error`` (raised while reading it): the bytes gunicorn holds of
        it, counted, are returned; ``self.broken`` is what every later read raises; the answer
        closes the connection (where the next request would start is unknown)."""
        held = self._held()
        self._count(len(held))
        self.req.must_close = True
        if isinstance(error, BodyDeadlineExpired):
            self.broken = BodyDeadlineExpired(
                f"the body did not arrive within its deadline ({self.seconds:g}s plus 1s per "
                f"{self.min_rate} bytes; {self.received} bytes received)")
        else:
            self.broken = BrokenBody(describe_body_error(error, self.received))
        return held

    def _held(self) -> bytes:
        """The body's bytes a broken read left in gunicorn's buffers, taken out of them: what
        Body.read had gathered, then what the chunked reader had decoded, or the bytes of a
        declared-length body its socket reader had received (never past the body's end)."""
        body, parts = self.body, []
        if isinstance(getattr(body, "buf", None), io.BytesIO):
            parts.append(_take(body, len(body.buf.getbuffer())))
        reader = getattr(body, "reader", None)
        if type(reader) is ChunkedReader and isinstance(reader.buf, io.BytesIO):
            parts.append(_take(reader, len(reader.buf.getbuffer())))
        elif type(reader) is LengthReader and isinstance(getattr(reader.unreader, "buf", None), io.BytesIO):
            held = _take(reader.unreader, reader.length)
            reader.length -= len(held)
            parts.append(held)
        return b"".join(parts)

    def _count(self, received: int) -> None:
        """Bytes received move the deadline; a fast body yields to the worker's other requests
        every YIELD_BYTES (it may never wait on its socket)."""
        self.received += received
        self.unyielded += received
        if self.unyielded >= YIELD_BYTES:
            self.unyielded = 0
            gevent.sleep(0)


def describe_body_error(error: BaseException, received: int | None = None) -> str:
    """What went wrong with a body, in the client's terms (and how much of it had arrived, when
    known): gunicorn's exception texts name its internals ("No more data after: None",
    "Invalid chunk terminator is not '\\r\\n': b''")."""
    after = f" (after {received} bytes of the body)" if received is not None else ""
    if isinstance(error, BrokenBody):
        return error.message
    if isinstance(error, NoMoreData):
        return f"the connection ended before the body did{after}"
    if isinstance(error, ChunkMissingTerminator):
        if len(error.term or b"") < 2:  # the connection ended where a CRLF was due
            return f"the connection ended before the chunked body did{after}"
        return f"malformed chunked body: a chunk's data is not followed by CRLF; its chunk size is wrong{after}"
    if isinstance(error, InvalidChunkSize):
        return f"malformed chunked body: a chunk size line is not a hexadecimal chunk size ending in CRLF{after}"
    if isinstance(error, InvalidChunkExtension):
        return f"malformed chunked body: an invalid chunk extension{after}"
    if isinstance(error, LimitRequestHeaders):
        return "malformed chunked body: its trailer section is too large"
    if isinstance(error, (InvalidHeader, InvalidHeaderName, ObsoleteFolding)):
        return "malformed chunked body: an invalid trailer field after the last chunk"
    if isinstance(error, ParseException):
        return f"malformed request body framing{after}"
    if isinstance(error, TimeoutError):
        return f"the connection stalled: nothing arrived within the server's read timeout{after}"
    if isinstance(error, ConnectionResetError):
        return f"the connection was reset{after}"
    reason = getattr(error, "strerror", None) or "a socket error"
    return f"the connection broke: {reason}{after}"


def _take(holder, most: int) -> bytes:
    """Up to ``most`` bytes from the front of the BytesIO ``holder.buf`` (gunicorn's buffers
    hold their bytes from the start, written up to the position), the rest kept there."""
    if most <= 0 or holder.buf.seek(0, io.SEEK_END) == 0:
        return b""
    data = holder.buf.getvalue()
    holder.buf = io.BytesIO()
    holder.buf.write(data[most:])
    return data[:most]


class DeferredHandshake:
    """A server SSL context whose sockets shake hands when the worker asks (under the head
    deadline), not in gevent's accept path, where a silent client would hold a greenlet for
    ever. Given to gunicorn through its ``ssl_context`` hook."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context

    def wrap_socket(self, sock, **kwargs):
        kwargs["do_handshake_on_connect"] = False
        return self.context.wrap_socket(sock, **kwargs)


def deferred_handshake_context(config, default_ssl_context_factory) -> DeferredHandshake:
    """gunicorn's ``ssl_context`` hook: the default context, handshakes deferred."""
    return DeferredHandshake(default_ssl_context_factory())


class MeteorWorker(GeventWorker):
    """gunicorn's gevent worker with psycogreen, real threads for blocking calls, and deadlines
    from ``server.*`` of the meteorpi configuration (``self.app`` is serving.MeteorGunicorn)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        server = self.app.meteor_config.server
        self.header_seconds = server.header_timeout_seconds
        self.body_seconds, self.body_min_rate = server.body_timeout_seconds, server.body_min_rate
        self.native_threads = server.threads
        self.waiting_for_head: set[gevent.Greenlet] = set()

    def run(self) -> None:
        gevent.spawn(self._close_idle_when_stopping)
        super().run()

    def _close_idle_when_stopping(self) -> None:
        """Once the worker stops, end every connection that has no request in flight: nothing
        is lost (the client sent nothing yet, and a keep-alive client reconnects), and the stop
        takes as long as the requests in flight, not as long as an idle client's deadline."""
        while self.alive:
            gevent.sleep(0.2)
        for greenlet in list(self.waiting_for_head):
            # gunicorn ends a connection whose client went away on this, quietly.
            greenlet.kill(NoMoreData(), block=False)

    def patch(self) -> None:
        super().patch()  # gevent's monkey.patch_all, in the child, before the app is loaded
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()
        gevent.get_hub().threadpool.maxsize = self.native_threads

    @contextmanager
    def timeout_ctx(self):
        """The head deadline: gunicorn parses each request line and headers inside this. The
        greenlet is known as idle meanwhile, so a stop can close its connection."""
        current = gevent.getcurrent()
        self.waiting_for_head.add(current)
        try:
            with gevent.Timeout(self.header_seconds, False):
                yield
        finally:
            self.waiting_for_head.discard(current)

    def handle(self, listener, client, addr) -> None:
        if isinstance(client, ssl.SSLSocket) and not self._handshake(client):
            util.close(client)
            return
        super().handle(listener, client, addr)

    def _handshake(self, client: ssl.SSLSocket) -> bool:
        try:
            with gevent.Timeout(self.header_seconds, False):
                client.do_handshake()
                return True
        except (ssl.SSLError, OSError) as e:
            self.log.debug("TLS handshake failed: %s", e)
            return False
        self.log.debug("TLS handshake not done within %gs", self.header_seconds)
        return False

    def handle_request(self, listener_name, req, sock, addr) -> None:
        req.body = body = DeadlineBody(req, self.body_seconds, self.body_min_rate)
        try:
            super().handle_request(listener_name, req, sock, addr)
        except StopIteration:  # gunicorn's way to say the answer closes the connection
            util.close_graceful(sock, timeout=LINGER_SECONDS, max_drain=LINGER_BYTES)
            raise
        finally:
            body.answered = True

    def handle_error(self, req, client, addr, exc) -> None:
        """gunicorn's own answers — a request head it refuses before the app runs (a URL or
        headers too long, a bad Content-Length or Transfer-Encoding), or a fault outside any
        view — in the protocol's form: JSON ``{"state": "failed", "message": ...}`` naming what
        is wrong, never gunicorn's HTML page. They close their connection (drained first, so
        the answer is not reset away). The log gets the same words, never the request line
        (its URL may carry a secret)."""
        if isinstance(exc, ssl.SSLError):  # no HTTP exchange to answer within a broken TLS stream
            self.log.debug("TLS error: %s", exc)
            util.close(client)
            return
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket's peer
        refusal = head_refusal(exc, self.cfg)
        if refusal is None:
            where = f"{req.method} {redact_uri(req.uri)}" if getattr(req, "uri", None) else "(no request line read)"
            self.log.error("Error handling request %s", escape_log_text(where), exc_info=exc)
            status, reason, message = 500, "Internal Server Error", "internal error"
        else:
            status, reason, message = refusal
            self.log.warning("Invalid request from ip=%s: %d %s", addr[0], status, message)
        if req is None:
            req = getattr(exc, "req", None)  # gunicorn's header errors carry the request, for the access log
        body = json.dumps({"state": "failed", "message": message}).encode()
        if req is not None and hasattr(req, "headers"):
            try:
                environ = default_environ(req, client, self.cfg)
                environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
                resp = Response(req, client, self.cfg)
                resp.status, resp.response_length, resp.sent = f"{status} {reason}", len(body), len(body)
                self.log.access(resp, req, environ, datetime.now() - started)
            except Exception:  # a request too broken to describe is not logged as an access
                self.log.debug("no access log line for a refused request", exc_info=True)
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except Exception:
            self.log.debug("Failed to send error message.")
        util.close_graceful(client, timeout=LINGER_SECONDS, max_drain=LINGER_BYTES)


def head_refusal(exc: BaseException, cfg) -> tuple[int, str, str] | None:
    """(status, reason, message) for an error gunicorn raised parsing a request (the client's
    doing), in plain words; None for anything else (the server's fault: 500). The codes are
    gunicorn's own but for its chunked-body errors, which are the body's 400."""
    if isinstance(exc, (InvalidResponseHeader, InvalidResponseHeaderName)):
        return None  # a header the application tried to send: its fault, not the client's
    if isinstance(exc, LimitRequestLine):
        return (414, "URI Too Long",
                f"request line: longer than the limit of {cfg.limit_request_line} bytes (the URL is too long)")
    if isinstance(exc, LimitRequestHeaders):
        text = str(exc)
        if "fields size" in text:
            problem = f"a header field is longer than the limit of {cfg.limit_request_field_size} bytes"
        elif "fields" in text:
            problem = f"more header fields than the limit of {cfg.limit_request_fields}"
        else:
            problem = "the request headers are larger than the server accepts"
        return 431, "Request Header Fields Too Large", f"request headers: {problem}"
    if isinstance(exc, InvalidRequestMethod):
        return 400, "Bad Request", "request line: the method is not a valid HTTP method"
    if isinstance(exc, InvalidHTTPVersion):
        return 400, "Bad Request", "request line: not a supported HTTP version (send HTTP/1.1)"
    if isinstance(exc, InvalidRequestLine):
        return 400, "Bad Request", "request line: malformed (expected METHOD /path HTTP/1.1)"
    if isinstance(exc, UnsupportedTransferCoding):
        return 501, "Not Implemented", "header Transfer-Encoding: only chunked is supported"
    if isinstance(exc, ObsoleteFolding):
        return 400, "Bad Request", "request headers: a header field is folded over lines (obsolete, refused)"
    if isinstance(exc, InvalidHeader):
        name = str(getattr(exc, "hdr", "")).upper()
        if name == "CONTENT-LENGTH":
            return 400, "Bad Request", ("header Content-Length: invalid (it must be one decimal number, sent once, "
                                        "and never with Transfer-Encoding)")
        if name == "TRANSFER-ENCODING":
            return 400, "Bad Request", ("header Transfer-Encoding: invalid (chunked must be its last coding, named "
                                        "once, and never with Content-Length)")
        return 400, "Bad Request", "request headers: a header field is malformed or not allowed"
    if isinstance(exc, InvalidHeaderName):
        return 400, "Bad Request", "request headers: a header field name is not a valid token"
    if isinstance(exc, ExpectationFailed):
        return 417, "Expectation Failed", "header Expect: only 100-continue is supported"
    if isinstance(exc, (InvalidProxyLine, InvalidProxyHeader)):
        return 400, "Bad Request", "PROXY protocol header: malformed"
    if isinstance(exc, ForbiddenProxyRequest):
        return 403, "Forbidden", "PROXY protocol header: not accepted from this address"
    if isinstance(exc, InvalidSchemeHeaders):
        return 400, "Bad Request", "request headers: they contradict each other on the scheme (http or https)"
    if isinstance(exc, InvalidH2CPreface):
        return 400, "Bad Request", "expected the HTTP/2 connection preface"
    if isinstance(exc, (InvalidChunkSize, ChunkMissingTerminator, InvalidChunkExtension, NoMoreData)):
        return 400, "Bad Request", f"body: {describe_body_error(exc)}"
    return None
