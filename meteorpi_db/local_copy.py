"""Copying a local file into a temp file of the store, in the kernel when it can, hashing as it goes.

Why: an RMS night is a gigabyte on a two-core camera node, and its MD5 alone costs four times
what ``cp`` spends copying it; every other cost of an ingest should be what ``cp`` pays.
``copy_file_range`` (same filesystem) or ``sendfile`` (any two files) copy a step of 1 MiB in
the kernel, as ``cp`` does, and that step is read back from the page cache and hashed while
it is still in the processor's cache (copying a whole file first and hashing it after was
measured slower: the bytes had left the cache). The MD5 is so of exactly the bytes stored.

When the kernel cannot copy between these two files (another filesystem, an old kernel, a
filesystem without support), or fails in a way that does not say whose disk is at fault, the
copy starts again the plain way (read, hash, write), whose errors say whether the source or
the store failed. Errors that can only be the store's (full, over quota, over the size limit,
read-only) raise at once, inside the store's ``disk`` context.
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
from typing import Callable, ContextManager

STEP = 1024 * 1024
# A write into the store failing with these is the store's trouble whichever call made it.
STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_local = threading.local()


def copy_and_hash(src: int, dst: int, disk: Callable[[], ContextManager]) -> tuple[int, str]:
    """Copy ``src`` (open for reading, at offset 0) into the empty ``dst`` (open for reading and
    writing); (size, MD5) of the bytes stored. The store's own failures raise inside ``disk()``
    (which names them); a source that cannot be read raises its OSError as it is."""
    buffer = _buffer()
    for step in _kernel_copies():
        digest, size = hashlib.md5(), 0
        try:
            while n := step(src, dst):
                with disk():
                    _hash_back(dst, size, n, digest, buffer)
                size += n
            return size, digest.hexdigest()
        except OSError as e:
            if e.errno in STORE_ERRNOS:
                with disk():
                    raise
        os.lseek(src, 0, os.SEEK_SET)  # not possible here, or unclear whose fault: next way
        with disk():
            os.ftruncate(dst, 0)
            os.lseek(dst, 0, os.SEEK_SET)
    digest, size = hashlib.md5(), 0
    while n := os.readv(src, [buffer]):
        view = memoryview(buffer)[:n]
        digest.update(view)
        size += n
        with disk():
            while view:
                view = view[os.write(dst, view):]
    return size, digest.hexdigest()


def _hash_back(fd: int, offset: int, length: int, digest, buffer: bytearray) -> None:
    """Hash ``length`` bytes of ``fd`` from ``offset``: the step just copied, from the page cache."""
    view = memoryview(buffer)
    while length:
        n = os.preadv(fd, [view[:min(length, len(buffer))]], offset)
        if not n:
            raise OSError(errno.EIO, "the copy is shorter than the kernel said")
        digest.update(view[:n])
        offset += n
        length -= n


def _buffer() -> bytearray:
    """This thread's buffer, kept: a fresh MiB per file cost page faults and a memset each."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = bytearray(STEP)
    return buffer


def _kernel_copies() -> list[Callable[[int, int], int]]:
    """The in-kernel ways this platform offers, best first; each copies one step, 0 at the end."""
    ways = []
    if hasattr(os, "copy_file_range"):
        ways.append(lambda src, dst: os.copy_file_range(src, dst, STEP))
    if hasattr(os, "sendfile"):
        ways.append(lambda src, dst: os.sendfile(dst, src, None, STEP))
    return ways
