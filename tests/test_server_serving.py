"""``meteorpi serve`` as an operator runs it: gunicorn worker processes on a real port, a clean
exit on SIGTERM, and uploads streamed to disk with the workers' memory staying flat."""
from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from meteorpi_model import CameraStatus

from .server_fixtures import IMPORTER, READER, TIMEOUT, Api, add_users, deliver

START_SECONDS = 60
MiB = 1024 * 1024


class Served:
    """A ``meteorpi serve`` subprocess; its output is drained by a thread into ``lines`` (text)
    and ``raw`` (the bytes of each line as written: a control character stays visible)."""

    def __init__(self, db, workers: int, verify: bool | str = True, **settings: str):
        env = {**os.environ, "METEORPI_DATABASE_URL": db.url, "METEORPI_DATA_DIR": str(db.config.data_path),
               "METEORPI_LOGGING_LEVEL": "INFO", **settings}
        env.pop("METEORPI_CONFIG", None)
        exe = shutil.which("meteorpi", path=str(Path(sys.executable).parent)) or "meteorpi"
        self.proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", "0", "--workers", str(workers)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.raw: list[bytes] = []
        self.verify = verify  # requests' verify= for an https server (its CA's certificate)
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_listening()
        self._wait_workers(workers)

    def _drain(self) -> None:
        for line in self.proc.stdout:  # split at b"\n" only: a stray CR is no line break of ours
            self.raw.append(line)
            self.lines.append(line.decode("utf-8", "replace"))

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(r"Listening at: (https?://127\.0\.0\.1:\d+)", line)
                if m:
                    return m.group(1)
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError("meteorpi serve did not start:\n" + "".join(self.lines))

    def _wait_workers(self, count: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while len(self.workers()) < count or requests.get(self.url + "/", timeout=TIMEOUT, verify=self.verify).status_code != 200:
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def workers(self) -> list[psutil.Process]:
        # The notifier (python -m meteorpi_server.notify) is a child too, not a worker.
        return [p for p in psutil.Process(self.proc.pid).children() if not self._helper(p)]

    def helpers(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.proc.pid).children() if self._helper(p)]

    @staticmethod
    def _helper(process: psutil.Process) -> bool:
        try:
            return "meteorpi_server.notify" in process.cmdline()
        except psutil.Error:
            return False

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after 30 s, which fails the test)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def serve_db(make_database):
    db = make_database("meteorpi_serve")
    add_users(db)
    return db


def stall(url: str, seconds: float) -> tuple[float, int, bytes]:
    """Send half an import body, then nothing: (seconds until the server answered, status, body)."""
    host, port = url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(":".join(IMPORTER).encode()).decode()
    with socket.create_connection((host, int(port)), timeout=seconds) as sock:
        sock.sendall(b"POST /import HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Authorization: Basic " + credentials.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"type\":")
        started = time.monotonic()
        response = http.client.HTTPResponse(sock)
        response.begin()
        return time.monotonic() - started, response.status, response.read()


def test_meteorpi_serve_imports_with_worker_processes_and_exits_0_on_sigterm(serve_db, vectors):
    """gunicorn with two worker processes runs the full vector exchange (cached entities may
    land on either worker); a client stalling mid-body is answered 400 after
    server.timeout_seconds while others are served; SIGTERM stops everything with status 0."""
    served = Served(serve_db, workers=2, METEORPI_SERVER_TIMEOUT_SECONDS="3")
    try:
        stalled = concurrent.futures.ThreadPoolExecutor(1).submit(stall, served.url, 30)
        assert len(served.workers()) == 2
        status = vectors["status"]
        files = {f["file_id"]: vectors["bytes"][name] for f, name in
                 zip(vectors["event"]["event"]["files"], ("f1.bin", "f3.bin"))}
        exchange = deliver(Api(served.url), vectors["event"], {status["status"]["status_id"]: status}, files)
        assert exchange.answers[-1] == "complete"
        assert serve_db.get_event(vectors["event"]["event"]["event_id"]).as_dict() == vectors["event"]["event"]
        waited, code, answer = stalled.result(30)
        assert code == 400 and b"stalled" in answer, answer
        assert 2 <= waited < 20
        workers = served.workers()
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "Traceback" not in "".join(served.lines)


def test_sigterm_does_not_wait_for_idle_keep_alive_connections(serve_db):
    """A client keeping an idle connection open (requests' sessions do, between a night's
    uploads) must not hold a stopping server for the whole head deadline: an operator's
    ``systemctl stop`` and every restart would wait that long. A request in flight still
    finishes (the other SIGTERM test)."""
    served = Served(serve_db, workers=1, METEORPI_SERVER_HEADER_TIMEOUT_SECONDS="25")
    try:
        session = requests.Session()
        assert session.get(served.url + "/", timeout=TIMEOUT).status_code == 200  # connection kept
        time.sleep(0.5)
        started = time.monotonic()
    finally:
        code = served.stop()
    waited = time.monotonic() - started
    assert code == 0, "".join(served.lines)
    assert waited < 10, f"stopping took {waited:.1f}s: the idle connection was waited for"
    assert "Traceback" not in "".join(served.lines), "".join(served.lines)


def test_sigterm_ends_open_feed_streams_and_stops_at_once(serve_db):
    """A dashboard's feed stream runs for hours; a stop ends it (the client resumes from its
    cursor elsewhere) instead of waiting for it and being killed at the graceful timeout."""
    served = Served(serve_db, workers=1)
    try:
        stream = requests.get(served.url + "/feed/stream", auth=READER, stream=True, timeout=TIMEOUT)
        assert stream.status_code == 200
        next(stream.iter_lines())  # the stream is open and served
        started = time.monotonic()
    finally:
        code = served.stop()
    waited = time.monotonic() - started
    assert code == 0, "".join(served.lines)
    assert waited < 10, f"stopping took {waited:.1f}s with a feed stream open"
    assert "Traceback" not in "".join(served.lines), "".join(served.lines)


def test_a_refusal_sent_before_the_body_is_read_reaches_the_client(serve_db):
    """A body over the limit is refused (413) from its Content-Length, before it is read. The
    client is still sending; a server that closed with its bytes unread would send a TCP reset
    that makes the client's kernel drop the answer unread: the camera would see "connection
    reset" instead of the reason. The server half-closes and drains first, so the answer arrives."""
    served = Served(serve_db, workers=1, METEORPI_SERVER_MAX_BODY_BYTES="1000")
    try:
        host, port = served.url.rsplit("/", 1)[1].split(":")
        credentials = base64.b64encode(":".join(IMPORTER).encode())
        answers = []
        for _ in range(5):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"POST /import HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                             b"Authorization: Basic " + credentials + b"\r\nContent-Length: 400000\r\n\r\n")
                try:
                    sock.sendall(b"{" + b" " * 300000)  # more than the server reads before answering
                    time.sleep(0.3)
                    answers.append(b"".join(iter(lambda: sock.recv(65536), b"")))
                except ConnectionResetError:
                    answers.append(b"reset")
        assert all(a.startswith(b"HTTP/1.1 413 ") for a in answers), answers
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)


def test_an_upload_read_straight_from_the_socket_leaves_the_next_request_intact(serve_db):
    """Uploads are read from the socket into the file store's buffer, past gunicorn's own
    buffers: what gunicorn already holds (the start of the body, come with the head; the rest
    of the manifest's line) must come first, and nothing past the body may be taken. Two files
    and a second request sent in one piece on one keep-alive connection: the files are stored
    with their own bytes, and the second request is answered as itself."""
    served = Served(serve_db, workers=1)
    try:
        host, port = served.url.rsplit("/", 1)[1].split(":")
        credentials = base64.b64encode(":".join(IMPORTER).encode())
        # All in gunicorn's first read (the next request too); then mostly read from the socket;
        # then a body shorter than its manifest says, the next request right behind it.
        for sizes, short in (((3000, 2000), 0), ((3000, 200_000), 0), ((3000, 2000), 10)):
            contents = [os.urandom(size) for size in sizes]
            ids = [uuid.uuid4() for _ in contents]
            manifest = json.dumps({"files": [{"file_id": i.hex, "md5": hashlib.md5(c).hexdigest(),
                                              "size": len(c) + (short if n == len(sizes) - 1 else 0)}
                                             for n, (i, c) in enumerate(zip(ids, contents))]}).encode()
            body = manifest + b"\n" + b"".join(contents)
            first = (b"POST /import/v2/data HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: application/vnd.meteorpi.files\r\nAuthorization: Basic " + credentials +
                     b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            second = b"GET /import/v2/check HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(first + body + second)
                answers = b"".join(iter(lambda: sock.recv(65536), b""))
            head, _, rest = answers.partition(b"\r\n\r\n")
            assert b"HTTP/1.1 " in rest, f"the second request was not answered: {answers[-300:]!r}"
            answer = json.loads(rest[:rest.index(b"HTTP/1.1 ")])
            if short:  # the body's end is where it ends: nothing of the next request is read as file bytes
                assert head.startswith(b"HTTP/1.1 400 ") and "ended 10 bytes early" in answer["message"], answers[:500]
                continue
            assert head.startswith(b"HTTP/1.1 200 "), answers[:500]
            assert answer == {"stored": [i.hex for i in ids], "failed": []}
            # It reached the server whole: a GET on a POST-only route, without credentials.
            assert re.search(rb"HTTP/1.1 (401|405) ", rest), rest[-500:]
            for file_id, content in zip(ids, contents):
                assert serve_db.file_store.find(file_id).read_bytes() == content
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)


class MultipartUpload:
    """A multipart body of ``count`` copies of ``block``, generated as it is sent (never whole
    in memory); ``__len__`` lets requests send a Content-Length instead of chunking."""

    BOUNDARY = "meteorpi-test-boundary"

    def __init__(self, block: bytes, count: int):
        self.block, self.count = block, count
        self.head = (f"--{self.BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
                     f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.BOUNDARY}--\r\n".encode()

    def __len__(self) -> int:
        return len(self.head) + len(self.block) * self.count + len(self.tail)

    def __iter__(self):
        yield self.head
        for _ in range(self.count):
            yield self.block
        yield self.tail

    def md5(self) -> str:
        digest = hashlib.md5()
        for _ in range(self.count):
            digest.update(self.block)
        return digest.hexdigest()


def rss(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_one_gib_upload_streams_to_disk_with_flat_memory(serve_db):
    """A 1 GiB upload is verified and stored while the worker's RSS grows by far less than the
    file (bound: 200 MiB): bytes go from socket to disk in chunks, never whole in memory."""
    served = Served(serve_db, workers=1)
    file_id = "f" * 32
    try:
        api = Api(served.url)
        warm = b"warm-up bytes"
        assert api.upload("e" * 32, hashlib.md5(warm).hexdigest(), warm)[1] == {"state": "continue"}
        workers = served.workers()
        baseline, peak, done = rss(workers), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss(workers))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        upload = MultipartUpload(os.urandom(MiB), 1024)
        md5 = upload.md5()
        try:
            r = requests.post(f"{served.url}/import/data/{file_id}/{md5}", data=upload, auth=IMPORTER,
                              headers={"Content-Type": f"multipart/form-data; boundary={upload.BOUNDARY}"},
                              timeout=300)
        finally:
            done.set()
            sampler.join()
        assert r.status_code == 200 and r.json() == {"state": "continue"}, r.text
        assert serve_db.file_store.path(uuid.UUID(file_id), md5).stat().st_size == 1024 * MiB
        growth = peak[0] - baseline
        assert growth < 200 * MiB, f"worker RSS grew by {growth / MiB:.0f} MiB during a 1 GiB upload"
    finally:
        code = served.stop()
        serve_db.file_store.clear()
    assert code == 0


def test_wsgi_entry_serves_from_the_configured_database(serve_db, records):
    """``meteorpi_server.wsgi:app`` (for other WSGI servers) opens the database named by the
    environment's configuration by itself."""
    status = records.status()
    serve_db.import_camera_status(CameraStatus.from_dict(status["status"]))
    script = ("import json; from meteorpi_server.wsgi import app; "
              "r = app.test_client().get('/cameras', auth=('reader', 'reader-pw')); "
              "print(json.dumps([r.status_code, r.get_json()]))")
    env = {**os.environ, "METEORPI_DATABASE_URL": serve_db.url, "METEORPI_DATA_DIR": str(serve_db.config.data_path)}
    env.pop("METEORPI_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    code, body = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 200 and records.camera_id in body["cameras"]


class SlowClient(threading.Thread):
    """A client holding a connection open: it sends ``preamble`` at once, then ``trickle`` one
    byte a second (nothing more if it is empty), until the server answers or closes; records how
    long that took and what the server said."""

    def __init__(self, url: str, preamble: bytes = b"", trickle: bytes = b""):
        super().__init__(daemon=True)
        host, port = url.rsplit("/", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.preamble, self.trickle = preamble, trickle
        self.ended_after: float | None = None
        self.answer = b""

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.sock.sendall(self.preamble)
            for i in range(120):
                readable, _, _ = select.select([self.sock], [], [], 1.0)
                if readable:
                    self.answer = b"".join(iter(lambda: self.sock.recv(65536), b""))  # to its end
                    break
                if self.trickle:
                    self.sock.send(self.trickle[i % len(self.trickle):][:1])
        except OSError:
            pass
        self.ended_after = time.monotonic() - started
        self.sock.close()


def slow_clients(url: str, count: int) -> list[SlowClient]:
    """``count`` slow connections, a third of each kind: idle after connecting, request head
    one byte a second, complete head then the body one byte a second."""
    head = b"POST /import HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
    credentials = base64.b64encode(":".join(IMPORTER).encode())
    kinds = [{}, {"trickle": head * 10},
             {"preamble": head + b"Authorization: Basic " + credentials + b"\r\n\r\n", "trickle": b"{" * 1000}]
    clients = [SlowClient(url, **kinds[i % 3]) for i in range(count)]
    for client in clients:
        client.start()
    return clients


def steady_import(url: str, body: bytes, bytes_per_second: int) -> bytes:
    """POST ``body`` to /import in 100-byte pieces at ``bytes_per_second``; the raw answer."""
    host, port = url.rsplit("/", 1)[1].split(":")
    credentials = base64.b64encode(":".join(IMPORTER).encode())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /import HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Authorization: Basic " + credentials + b"\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        for i in range(0, len(body), 100):
            sock.sendall(body[i:i + 100])
            time.sleep(100 / bytes_per_second)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_slow_clients_neither_stop_imports_nor_stay_past_their_deadlines(serve_db, records):
    """Four times the server's worker x thread capacity in connections that send nothing, send
    their request head one byte a second, or their body one byte a second, do not stop normal
    imports (each answered within 10 s); each slow connection is ended by its whole-request
    deadline (head or body), not by the far longer per-read timeout, while a body arriving
    slowly but above the minimum rate takes longer than the body timeout and is served."""
    served = Served(serve_db, workers=1, METEORPI_SERVER_THREADS="2", METEORPI_SERVER_TIMEOUT_SECONDS="60",
                    METEORPI_SERVER_HEADER_TIMEOUT_SECONDS="3", METEORPI_SERVER_BODY_TIMEOUT_SECONDS="3")
    try:
        clients = slow_clients(served.url, 4 * 1 * 2)
        # A slow link above the minimum rate (500 B/s) is never cut off: 4.5 s for its body.
        padded = json.dumps(records.status()).encode().ljust(6000)
        steady = concurrent.futures.ThreadPoolExecutor(1).submit(steady_import, served.url, padded, 1500)
        time.sleep(0.5)  # every slow connection is open and waiting on the server
        http = requests.Session()
        for _ in range(5):
            r = http.post(served.url + "/import", json=records.status(), auth=IMPORTER, timeout=10)
            assert r.status_code == 200 and r.json()["state"] == "continue", r.text  # status stored
        assert steady.result(30).startswith(b"HTTP/1.1 200 "), steady.result()
        for client in clients:
            client.join(30)
        ended = sorted(round(c.ended_after, 1) for c in clients)
        assert all(2 <= t < 15 for t in ended), ended
        body_answers = [c.answer for c in clients if c.preamble]
        assert all(a.startswith(b"HTTP/1.1 400 ") and b"deadline" in a and b"Connection: close" in a
                   for a in body_answers), body_answers
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)
    assert "Traceback" not in "".join(served.lines)


SILENT_DATABASE = """
import socket, sys, time
silent = socket.socket(); silent.bind(("127.0.0.1", 0)); silent.listen(5)
from gevent import monkey; monkey.patch_all()
from psycogreen.gevent import patch_psycopg; patch_psycopg()
from meteorpi_db import StorageUnavailable, pool
pool.CONNECT_TIMEOUT_SECONDS = 1
started = time.monotonic()
try:
    with pool.ConnectionPool(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db?sslmode=disable").transaction():
        pass
except StorageUnavailable as e:
    print(f"{time.monotonic() - started:.1f} {e}")
"""


def test_a_silent_database_is_unavailable_after_the_connect_timeout_under_gevent():
    """As in a gevent worker (psycopg2 made cooperative, where libpq's connect_timeout does not
    apply), a database that accepts the connection and never answers is reported unavailable
    after the connect timeout instead of holding the request for ever."""
    done = subprocess.run([sys.executable, "-c", SILENT_DATABASE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, message = done.stdout.strip().split(" ", 1)
    assert 0.8 <= float(seconds) < 5 and "database unreachable: no answer within 1s" in message, done.stdout


@pytest.mark.parametrize("host, why", [
    ("127.0.0.1", "Address already in use (is another server running there?"),   # the port is taken
    ("10.255.255.254", "no interface of this machine has that address"),
    ("no-such-host.invalid", "'no-such-host.invalid' is not a known host or address"),
])
def test_serve_on_an_address_it_cannot_have_says_so_in_one_line(tmp_path, host, why):
    """A port in use (or an address not of this machine) is one line naming the address and the
    cause, exit 1, at once and before the database starts: gunicorn alone retried for five
    seconds and logged nine lines of errors."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
        proc = subprocess.run([sys.executable, "-m", "meteorpi_server", "serve", "--host", host, "--port", str(port)],
                              env={**env, "METEORPI_DATA_DIR": str(tmp_path / "data")},
                              capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"Error: cannot listen on {host}:{port}: " + proc.stderr.split(f"{port}: ", 1)[1].rstrip("\n")]
    assert why in proc.stderr
    assert "[ERROR]" not in proc.stderr + proc.stdout
    assert not (tmp_path / "data" / "postgres").exists()  # refused before the database started


# Control characters a log line must never carry raw: C0 but the line's own LF, DEL, C1.
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def test_client_text_reaches_the_access_log_escaped_one_line_per_request(serve_db):
    """Every access-log atom a client writes (the user name from any Basic header, valid login
    or not; the request line; the user agent; the referer) is printed with its control
    characters and backslashes escaped: a CR/LF in a user name cannot forge a second line, an
    ESC sequence cannot reach an operator's terminal, 5 KB of NULs are 5 KB of ``\\x00``."""
    forged = ('x\r\n127.0.0.1 - admin [02/Dec/2026 10 00 00 +0000] "DELETE /watches/all HTTP/1.1" '
              '200 0 1us "curl"\x1b[2K')
    users = [forged, "\x00" * 5000, "c1\u009b31mred\\", "tab\there\x7f"]
    served = Served(serve_db, workers=1)
    try:
        host, port = served.url.rsplit("/", 1)[1].split(":")
        probes = []
        for n, user in enumerate(users):
            probes.append((f"probe{n}-", b"Authorization: Basic " + base64.b64encode(user.encode() + b":pw") + b"\r\n"))
        # Header values are bytes (gunicorn reads them as latin-1, refusing C0 but TAB and DEL):
        # 0x9b is the C1 CSI, which some terminals take as ESC [; 0x85 is NEL, a line break.
        probes.append(("probe-ua-", b"User-Agent: ua\x9b31m\\\"end\tx\x85\r\nReferer: http://r/\x9b2K\x85\r\n"))
        for marker, headers in probes:
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
                sock.sendall(b"GET /import/v2?" + marker.encode() + b" HTTP/1.1\r\nHost: test\r\n" + headers +
                             b"Connection: close\r\n\r\n")
                answer = b"".join(iter(lambda: sock.recv(65536), b""))
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        deadline = time.monotonic() + 10
        while not all(any(m.encode() in line for line in served.raw) for m, _ in probes):
            assert time.monotonic() < deadline, "".join(served.lines)
            time.sleep(0.05)
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)
    raw = b"".join(served.raw)
    text = raw.decode("utf-8")
    assert not RAW_CONTROL.search(text), [line for line in served.raw if RAW_CONTROL.search(line.decode("utf-8"))][:3]
    assert not any(line.startswith("127.0.0.1 - admin") for line in text.splitlines()), text
    for marker, _ in probes:  # one request, one line
        assert len([line for line in text.splitlines() if marker in line]) == 1, text
    line = {m: next(line for line in text.splitlines() if m in line) for m, _ in probes}
    assert (r'127.0.0.1 - x\r\n127.0.0.1 - admin [02/Dec/2026 10 00 00 +0000] \"DELETE /watches/all HTTP/1.1\" '
            r'200 0 1us \"curl\"\x1b[2K [') in line["probe0-"]
    assert r"127.0.0.1 - " + r"\x00" * 5000 + " [" in line["probe1-"]
    assert r"- c1\x9b31mred\\ [" in line["probe2-"] and r"- tab\there\x7f [" in line["probe3-"]
    assert r'"ua\x9b31m\\\"end\tx\x85"' in line["probe-ua-"]
