"""File segments of an upload body: sent with sendfile on a plain socket, read elsewhere, and
the same bytes (a file that shrank padded with zeros) either way."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from meteorpi_export.transport import FileSegment


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
