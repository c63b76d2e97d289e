"""Streaming MD5 of files: files can be gigabytes, memory must not grow with them."""
from __future__ import annotations

import hashlib
import os

CHUNK_SIZE = 1024 * 1024


def get_md5_hash(path: str | os.PathLike) -> str:
    """Hex MD5 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()
