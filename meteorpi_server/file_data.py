"""The uploaded bytes a receiver's ``receive_file_data`` is handed.

Receivers written today iterate over it; receivers written for the original importer called
``file_data.save(path)`` on what was then werkzeug's ``FileStorage``. One object serves both,
and neither way holds the file in memory: the bytes come from the socket once, chunk by chunk.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator

from meteorpi_db.file_store import fsync_directory


class FileData:
    """The bytes of one upload, readable once, as they arrive.

    A malformed, truncated or oversized upload raises from inside the iteration (or from
    ``save``), so nothing half-received is ever taken for the whole file.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def save(self, dst: str | os.PathLike | BinaryIO, buffer_size: int | None = None) -> None:
        """Write the bytes to ``dst``: a path, or a binary file opened for writing.

        A path is written under a temporary name beside it, fsynced and renamed into place,
        so it holds either nothing new or the whole upload, never part of one. ``buffer_size``
        is accepted as werkzeug's ``FileStorage.save`` took it; the chunks are written as they
        arrive whatever it says.
        """
        if hasattr(dst, "write"):
            for chunk in self._chunks:
                dst.write(chunk)
            return
        target = os.fspath(dst)
        directory = os.path.dirname(target) or "."
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        fsync_directory(directory)


