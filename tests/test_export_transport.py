"""File segments of an upload body: sent with sendfile on a plain socket, read elsewhere, and
the same bytes (a file that shrank padded with zeros) either way."""
from __future__ import annotations

import http.client
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest

from meteorpi_export.transport import FileSegment

from .export_fixtures import add_export, cli_env, meteorpi, night, stub_server


def _received(send) -> bytes:
    """What the far end of a socket pair receives while ``send(sock)`` runs."""
    a, b = socket.socketpair()
    got = []

    def receive():
        while data := b.recv(1 << 16):
            got.append(data)
    reader = threading.Thread(target=receive)
    reader.start()
    try:
        send(a)
    finally:
        a.shutdown(socket.SHUT_WR)
        reader.join(10)
        a.close()
        b.close()
    return b"".join(got)


@pytest.fixture
def file_of(tmp_path):
    def make(data: bytes):
        path = tmp_path / "f.bin"
        path.write_bytes(data)
        return open(path, "rb")
    return make


def test_a_segment_sends_exactly_its_slice_of_the_file(file_of):
    data = os.urandom(3 * 1024 * 1024 + 123)
    with file_of(data) as fh:
        fh.seek(17)  # the file's position does not matter
        segment = FileSegment(fh, 1024 * 1024 + 5, 1024 * 1024)
        assert _received(segment.send_to) == data[1024 * 1024 + 5:2 * 1024 * 1024 + 5]


def test_read_gives_the_same_bytes_as_sendfile_in_pieces(file_of):
    data = os.urandom(100_000)
    with file_of(data) as fh:
        segment = FileSegment(fh, 10, 90_000)
        pieces = iter(lambda: segment.read(16384), b"")
        assert b"".join(pieces) == data[10:90_010]
        assert segment.read() == b""


@pytest.mark.parametrize("how", ["sendfile", "read"])
def test_a_file_that_shrank_is_padded_to_the_length_the_body_announced(file_of, how):
    """The body's length was promised in its manifest and Content-Length: a file that lost its
    tail since it was recorded must not leave the stream short (the server would wait for the
    rest); zeros fill it, and the server's MD5 check refuses the file."""
    data = os.urandom(5000)
    with file_of(data) as fh:
        segment = FileSegment(fh, 4000, 3000)
        if how == "sendfile":
            sent = _received(segment.send_to)
        else:
            sent = segment.read() + segment.read()
    assert sent == data[4000:] + b"\0" * 2000


def test_a_segment_of_a_file_emptied_entirely_is_all_zeros(file_of):
    with file_of(b"") as fh:
        assert _received(FileSegment(fh, 0, 4096).send_to) == b"\0" * 4096


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain HTTP forward proxy (requests in absolute form, bodies by Content-Length), as a
    school's or an observatory's network may put between a camera and the internet; it counts
    what it relays (in the class: one proxy per test)."""
    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, str]] = []
    body_bytes = 0

    def relay(self):
        url = urllib.parse.urlsplit(self.path)
        _ForwardProxy.requests.append((self.command, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        _ForwardProxy.body_bytes += length
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "keep-alive", "proxy-authorization")}
        upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            upstream.request(self.command, url.path + (f"?{url.query}" if url.query else ""), body=body,
                             headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = relay

    def log_message(self, *args):
        pass


def test_a_node_behind_an_http_proxy_replicates_its_night_through_it(node, central, tmp_path):
    """The exporter's connections are its own (to send files with sendfile): through a proxy
    named in the environment, as requests honours it, the fast path still goes, byte for byte."""
    made = night(node, tmp_path, events=2, files_per_event=2, standalone=1)
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    _ForwardProxy.requests, _ForwardProxy.body_bytes = [], 0
    with stub_server(_ForwardProxy) as proxy:
        env = {k: v for k, v in cli_env(node, HTTP_PROXY=proxy, http_proxy=proxy).items()
               if k.lower() != "no_proxy"}
        run = meteorpi("export", "run", "--once", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert central.check(node).ok
    assert ("POST", "/import/v2/data") in _ForwardProxy.requests
    assert _ForwardProxy.body_bytes >= sum(f.file_size for f in made.all_files)
