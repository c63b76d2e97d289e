"""Copying a local file into a temp file of the store: in the kernel when it can, then hashing the copy.

Why: an RMS night is a gigabyte on a two-core camera node. Copied through Python, every byte
is copied twice in memory (read into a buffer, written out of it) besides being hashed.
``copy_file_range`` (same filesystem) or ``sendfile`` (any two files) keep the copy in the
kernel, as ``cp`` does; the MD5 is then taken of the copy, read back from the page cache, so it
is the hash of exactly the bytes stored even if the source changed while it was copied.

When the kernel cannot copy between these two files (another filesystem, an old kernel, a
filesystem without support), or fails in a way that does not say whose disk is at fault, the
copy starts again the plain way (read, write), whose errors say whether the source or the
store failed. Errors that can only be the store's (full, over quota, over the size limit,
read-only) raise at once, inside the store's ``disk`` context.
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
from typing import Callable, ContextManager

BUFFER_SIZE = 1024 * 1024
KERNEL_COPY_BYTES = 64 * 1024 * 1024  # per call: bounded, so a huge file is copied in steps
# A write into the store failing with these is the store's trouble whichever call made it.
STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_local = threading.local()


def _buffer() -> bytearray:
    """This thread's read buffer, kept: a fresh MiB per file cost 256 page faults and a memset."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = bytearray(BUFFER_SIZE)
    return buffer


def copy_file(src: int, dst: int, disk: Callable[[], ContextManager]) -> None:
    """Copy ``src`` (open for reading, at offset 0) into the empty ``dst``. The store's own
    failures raise inside ``disk()`` (which names them); a source that cannot be read raises
    its OSError as it is."""
    for step in _kernel_copies():
        try:
            while step(src, dst):
                pass
            return
        except OSError as e:
            if e.errno in STORE_ERRNOS:
                with disk():
                    raise
        os.lseek(src, 0, os.SEEK_SET)  # not possible here, or unclear whose fault: next way
        with disk():
            os.ftruncate(dst, 0)
            os.lseek(dst, 0, os.SEEK_SET)
    buffer = _buffer()
    while n := os.readv(src, [buffer]):
        view = memoryview(buffer)[:n]
        with disk():
            while view:
                view = view[os.write(dst, view):]


def md5_of(fd: int) -> tuple[int, str]:
    """(size, MD5) of what ``fd`` holds, read from offset 0 whatever its position."""
    digest, offset, buffer = hashlib.md5(), 0, _buffer()
    view = memoryview(buffer)
    while n := os.preadv(fd, [buffer], offset):
        digest.update(view[:n])
        offset += n
    return offset, digest.hexdigest()


def _kernel_copies() -> list[Callable[[int, int], int]]:
    """The in-kernel ways this platform offers, best first; each copies one step, 0 at the end."""
    ways = []
    if hasattr(os, "copy_file_range"):
        ways.append(lambda src, dst: os.copy_file_range(src, dst, KERNEL_COPY_BYTES))
    if hasattr(os, "sendfile"):
        ways.append(lambda src, dst: os.sendfile(dst, src, None, KERNEL_COPY_BYTES))
    return ways
