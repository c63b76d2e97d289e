"""Local files copied into the store in the kernel (copy_file_range, sendfile) when it can, and
the plain way when it cannot: the bytes stored and their MD5 are the same either way, and a
store that refuses the write is the store's error, never a half-published file."""
from __future__ import annotations

import errno
import hashlib
import os
import uuid

import pytest

from meteorpi_db import local_copy
from meteorpi_db.file_store import FileStore, StoreWriteFailed

SIZES = [0, 1, 3 * local_copy.STEP + 17]


def _sources(tmp_path):
    sources = []
    for i, size in enumerate(SIZES):
        path = tmp_path / "night" / f"FF_{i}.fits"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(size))
        sources.append(path)
    return sources


def _id_for(path, md5):
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{path.name}/{md5}")


def _store_and_check(store: FileStore, sources) -> None:
    stored = store.store_files(sources, _id_for)
    for path, (file_id, size, md5) in zip(sources, stored):
        data = path.read_bytes()
        assert (size, md5) == (len(data), hashlib.md5(data).hexdigest())
        assert store.path(file_id, md5).read_bytes() == data
    assert not list(store.tmp.iterdir())


def _failing_way(error: int, after_bytes: int):
    """A kernel copy that copies ``after_bytes`` (a partial copy) and then fails with ``error``."""
    def way(src, dst):
        if os.lseek(dst, 0, os.SEEK_CUR) >= after_bytes:
            raise OSError(error, os.strerror(error))
        return os.copy_file_range(src, dst, max(1, after_bytes)) if after_bytes else 0
    return way


def test_kernel_copy_stores_the_same_bytes_and_md5(tmp_path):
    """What the kernel offers here (copy_file_range on the same filesystem)."""
    _store_and_check(FileStore(tmp_path / "store"), _sources(tmp_path))


@pytest.mark.parametrize("error,after", [(errno.EXDEV, 0), (errno.EOPNOTSUPP, 0), (errno.EIO, 4096)],
                         ids=["other-filesystem", "unsupported", "unclear-error-after-a-partial-copy"])
def test_a_kernel_that_cannot_copy_falls_back_to_the_plain_copy(tmp_path, monkeypatch, error, after):
    """copy_file_range and sendfile both refusing (or failing part-way for a reason that does
    not say whose disk it is): the file is copied again from its start, the plain way."""
    monkeypatch.setattr(local_copy, "_kernel_copies", lambda: [_failing_way(error, after)] * 2)
    _store_and_check(FileStore(tmp_path / "store"), _sources(tmp_path))


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS])
def test_a_store_refusing_the_kernel_copy_is_the_stores_error(tmp_path, monkeypatch, error):
    """A full (over quota, read-only) store is named as such at once; nothing is published and
    no temp file is left."""
    monkeypatch.setattr(local_copy, "_kernel_copies", lambda: [_failing_way(error, 4096)])
    store = FileStore(tmp_path / "store")
    with pytest.raises(StoreWriteFailed, match="cannot write to the file store"):
        store.store_files(_sources(tmp_path), _id_for)
    assert not list(store.tmp.iterdir())
    assert not [p for p in store.root.rglob("*") if p.is_file()]
