"""How a worker process gives memory back after a large request.

glibc's malloc serves blocks over its mmap threshold (128 KiB at first) with their own mappings,
returned to the system when freed; but each time such a block is freed it raises the threshold
to that block's size (up to 32 MiB), so the next body buffer, decoded text or list array comes
from a heap arena instead and stays resident after the request, one arena per serving thread.
Measured on `meteorpi serve`: three refused 16 MiB bodies in a row left the worker 42 MiB larger.
A fixed threshold keeps large blocks mapped on their own, so a worker returns to its idle size
(issue 12 §6). Blocks under it (the 1 MiB reads of an upload) still come from the heap.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("meteorpi.server")
# mallopt(3) parameter number of M_MMAP_THRESHOLD in glibc's malloc.h.
M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 4 * 1024 * 1024


def return_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Give blocks of ``threshold`` bytes or more mappings of their own, returned when freed.

    Returns whether the allocator took the setting (False on a C library without ``mallopt``,
    e.g. musl or macOS, where nothing needs doing or can be done).
    """
    try:
        # The C library this process already runs on, by dlopen(NULL): ctypes.util.find_library
        # would start `ldconfig -p` (or a compiler) in every worker as it boots.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not taken:
        log.warning("the C library refused mallopt(M_MMAP_THRESHOLD, %d)", threshold)
    return taken
