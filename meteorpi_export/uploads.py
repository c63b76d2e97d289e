"""The fast path's uploads: the body of ``POST v2/data`` and how big each one is.

``FilesBody`` streams files from the node's store after a one-line manifest, continuing cut
files from their offsets; ``UploadWindow`` adapts the upload size to the link (AIMD). Used by
protocol_v2.py, which decides what goes in which upload and what a cut one left.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import deque

from meteorpi_model import ExportConfiguration, FileRecord

from .link import Link
from .transport import FileSegment

UPLOAD_BYTES = 32 * 1024 * 1024   # file bytes per data request
MIN_UPLOAD_BYTES = 64 * 1024     # the window never halves below this (one file goes whole anyway)
READ_SIZE = 1024 * 1024


class FilesBody:
    """The body of ``POST v2/data``: a manifest line, then each file's bytes, read lazily.

    An iterable with a length: requests then sends Content-Length (not chunks) and hands each
    piece to the connection whole. A file goes as FileSegments of 1 MiB, which the exporter's
    session sends with sendfile where it can (transport.py); between two, the progress display
    is told and the rate limit and a stop are looked at. Exactly the manifest's size is sent for
    each file: a file that shrank since it was recorded is padded with zeros so the stream stays
    framed, and the server's MD5 check refuses it.
    """

    def __init__(self, link: Link, records: list[FileRecord], offsets: dict[uuid.UUID, int] | None = None):
        self.link, self.store, self.records = link, link.store, records
        self.offsets = offsets = offsets or {}
        manifest = {"files": [dict({"file_id": r.file_id.hex, "md5": r.md5, "size": r.file_size},
                                   **({"offset": offsets[r.file_id]} if offsets.get(r.file_id) else {}))
                              for r in records]}
        self.head = json.dumps(manifest).encode() + b"\n"
        self.length = len(self.head) + sum(r.file_size - offsets.get(r.file_id, 0) for r in records)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for piece in self._pieces():
            yield piece
            self.link.sent(len(piece))
            self.link.pace(len(piece))  # the shared rate limit; Stopped ends the upload here

    def _pieces(self):
        yield self.head
        for record in self.records:
            offset = self.offsets.get(record.file_id, 0)
            left = record.file_size - offset
            with open(self.store.path(record.file_id, record.md5), "rb") as fh:
                while left:
                    count = min(READ_SIZE, left)
                    yield FileSegment(fh, offset, count)
                    offset += count
                    left -= count


class UploadWindow:
    """How many file bytes one upload carries, adapted to the link like TCP's congestion window
    (AIMD): halved after an upload is cut (down to MIN_UPLOAD_BYTES: then one file, or the rest of
    one, per upload), grown by a quarter of the maximum after each success, up to UPLOAD_BYTES.
    Kept per export configuration in the exporter's link (``upload_window``), so the next batch
    starts where this one left."""

    def __init__(self, size: int | None = None):
        self.size = size or UPLOAD_BYTES
        self._lock = threading.Lock()

    def shrink(self, cut_upload_bytes: int) -> None:
        """After an upload of ``cut_upload_bytes`` was cut: half of it (or of the window, if
        smaller), so the next upload is never the one that just died."""
        with self._lock:
            self.size = max(MIN_UPLOAD_BYTES, min(self.size, cut_upload_bytes) // 2)

    def grow(self) -> None:
        with self._lock:
            self.size = min(UPLOAD_BYTES, self.size + UPLOAD_BYTES // 4)


def upload_window(link: Link, config: ExportConfiguration) -> UploadWindow:
    """The upload size for ``config``'s target, kept between batches in the link's windows."""
    key = getattr(config, "config_id", None) or config.target_url
    return link.windows.setdefault(key, UploadWindow())


def take_upload(queue: deque, limit: int) -> list[tuple[FileRecord, int]]:
    """The next upload: consecutive (record, offset) from ``queue``, about ``limit`` bytes (one
    file, or the rest of one, even when bigger)."""
    group, size = [], 0
    while queue:
        record, offset = queue[0]
        if group and size + record.file_size - offset > limit:
            break
        group.append(queue.popleft())
        size += record.file_size - offset
    return group
