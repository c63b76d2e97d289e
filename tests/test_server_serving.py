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

from .server_fixtures import IMPORTER, TIMEOUT, Api, add_users, deliver

START_SECONDS = 60
MiB = 1024 * 1024


class Served:
    """A ``meteorpi serve`` subprocess; its output is drained by a thread into ``lines``."""

    def __init__(self, db, workers: int, **settings: str):
        env = {**os.environ, "METEORPI_DATABASE_URL": db.url, "METEORPI_DATA_DIR": str(db.config.data_path),
               "METEORPI_LOGGING_LEVEL": "INFO", **settings}
        env.pop("METEORPI_CONFIG", None)
        exe = shutil.which("meteorpi", path=str(Path(sys.executable).parent)) or "meteorpi"
        self.proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", "0", "--workers", str(workers)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_listening()
        self._wait_workers(workers)

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line)
                if m:
                    return m.group(1)
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError("meteorpi serve did not start:\n" + "".join(self.lines))

    def _wait_workers(self, count: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while len(self.workers()) < count or requests.get(self.url + "/", timeout=TIMEOUT).status_code != 200:
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
