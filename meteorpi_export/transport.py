"""How an upload's file bytes reach the socket: from the page cache straight to it where it can.

A file read into Python and then sent is copied twice on the node's CPU (page cache to a
buffer, buffer to the socket) and allocates a fresh buffer per piece; on a camera node the CPU
is shared with capture and detection, and on loopback it was a third of the exporter's work.
``sendfile(2)`` hands the file's pages to the socket instead. So an upload body yields
``FileSegment``s, and the session's connections (``upload_session``) send a segment with
sendfile where the socket is a plain TCP socket. Where it is not (TLS, a SOCKS proxy, a
session someone else made), a segment is a readable object like any other: http.client reads
and sends it, in 1 MiB pieces through our connections.
"""
from __future__ import annotations

import os
import socket
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

SEND_PIECE = 1024 * 1024  # bytes read per send where sendfile cannot be used


class FileSegment:
    """``count`` bytes of an open file from ``offset``, to be sent as part of a request body.

    Read by position (``pread``), so the file's own position does not matter. A file that ends
    before ``offset + count`` (it shrank since it was recorded) is padded with zeros: the body
    keeps the length it announced, and the server's MD5 check refuses the file."""

    def __init__(self, file: BinaryIO, offset: int, count: int):
        self.file, self.offset, self.count = file, offset, count
        self._read = 0  # how much read() has handed out

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def read(self, size: int = -1) -> bytes:
        """The next ``size`` bytes (all that is left if negative); b"" at the end."""
        left = self.count - self._read
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = os.pread(self.file.fileno(), size, self.offset + self._read)
        if len(data) < size:
            data += b"\0" * (size - len(data))
        self._read += size
        return data

    def send_to(self, sock: socket.socket) -> None:
        """All of the segment on ``sock`` with sendfile (the kernel falls back to reading and
        sending where it cannot), then zeros for whatever the file no longer holds."""
        sent = sock.sendfile(self.file, self.offset, self.count) if self.count else 0
        if sent < self.count:
            sock.sendall(b"\0" * (self.count - sent))


class _SegmentSender:
    """Mixin for urllib3's connections: a FileSegment goes out with sendfile on a plain TCP
    socket, else in SEND_PIECE reads (http.client alone would read it 16 KiB at a time)."""

    def send(self, data) -> None:
        if not isinstance(data, FileSegment):
            return super().send(data)
        if self.sock is None:
            self.connect()
        if type(self.sock) is socket.socket:  # not TLS, not wrapped by a proxy's transport
            data.send_to(self.sock)
            return None
        while piece := data.read(SEND_PIECE):
            super().send(piece)
        return None


def pools_with(mixin: type) -> dict[str, type]:
    """urllib3's connection pool classes by scheme (``PoolManager.pool_classes_by_scheme``),
    whose connections, plain and TLS, take ``mixin``'s methods first: how a requests adapter
    gives every connection it opens behaviour of ours (sendfile here; the webhooks' address
    rule in meteorpi_server.outbound)."""
    name = mixin.__name__.strip("_")
    http = type(f"{name}HTTPConnection", (mixin, HTTPConnection), {})
    https = type(f"{name}HTTPSConnection", (mixin, HTTPSConnection), {})
    return {"http": type(f"{name}HTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type(f"{name}HTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


_POOLS = pools_with(_SegmentSender)


class UploadAdapter(HTTPAdapter):
    """requests' adapter, its connections (direct or through an HTTP proxy) sending file
    segments as above; a SOCKS proxy keeps its own connections (segments are then read)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def upload_session() -> requests.Session:
    """A requests session whose uploads of FileSegments go out with sendfile where they can."""
    session = requests.Session()
    adapter = UploadAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
