"""The file store: file bytes on disk, by id, published atomically and only once verified.

Layout: ``<root>/<aa>/<bb>/<file_id hex>_<md5>`` where ``aa``/``bb`` are the first hex digits
of the id (65,536 fan-out directories, so none grows past a few thousand entries at millions
of files), plus ``<root>/tmp/`` for bytes in flight. The MD5 is part of the name: "held" means
"these exact bytes are held", which a name alone can prove without reading them.

A file is held only after its bytes were completely written to a temp name on the same
filesystem, fsynced, hashed, compared with the expected MD5 and renamed into place (and the
directory fsynced). Every way in (one upload, many files on one stream, a local copy) writes
through one path, ``_Incoming``: hashed as written, then flushed and published, or discarded. A crash at any point leaves either nothing or a temp file that is never
counted as held (docs/protocol.md weak point 2). Temp names carry the writer's host and pid
(``<file_id hex>.<host>.<pid>.<random>``), so a store that opens (a server starting, a worker
replacing a dead one) removes at once the temp files of writers of this host that no longer
exist; anything else (another host sharing the store) is removed once untouched for six hours.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import uuid
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping

from . import green
from .errors import FileStoreError

log = logging.getLogger("meteorpi.db.file_store")
CHUNK_SIZE = 1024 * 1024
STALE_TEMP_SECONDS = 6 * 3600
# A cut upload's prefix waits this long for its sender to continue it (a camera offline all day).
STALE_PARTIAL_SECONDS = 3 * 24 * 3600
# How long a check waits for uploads of the files it asks about that are still being received
# or published (see FileStore.settle); past this it answers with what is held by then.
SETTLE_SECONDS = 5.0
# This host, as it appears in temp names (letters, digits and dashes: the name splits on dots).
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:63] or "host"


# Bytes asked of an upload stream at once (see _Pieces): from the least, growing with what the
# stream delivered, up to the most.
STREAM_READ_LEAST = 16 * 1024
STREAM_READ_MOST = 1024 * 1024
FSYNC_THREADS = 8  # fsyncs in flight at once when receiving many files together
FLUSH_GROUP_FILES, FLUSH_GROUP_BYTES = 8, 4 * 1024 * 1024  # see _FlushGroups
COPY_THREADS = 4  # local files copied at once by store_files (hashing and writing release the GIL)
# How often store_files looks whether Ctrl-C was pressed while it waits for its copies.
INTERRUPT_POLL_SECONDS = 0.05
# Direct writes (O_DIRECT) of local copies: offsets, lengths and buffers aligned to this, the
# largest common logical block size (a disk wanting more answers EINVAL: page cache then).
DIRECT_ALIGN = 4096
# Bytes read, hashed and written at once by a local copy (per copying thread): 4 MiB made fewer,
# larger disk writes than 1 MiB (an RMS FF file of 3.7 MiB in one), measured ~0.1 s less system time a night.
COPY_CHUNK_SIZE = 4 * 1024 * 1024
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_copy_buffers = threading.local()
_pool_lock = threading.Lock()
_pool: tuple[int, Executor] | None = None


def _fsync_pool() -> Executor:
    """The process's flushing threads, started once and kept.

    A pool per upload cost 8 thread starts per request, each waiting for the GIL while the
    request thread hashes bytes: measured at up to a third of a second per 32 MiB upload.
    Keyed by pid: threads do not survive a fork (gunicorn workers), so a child starts its own.
    Real threads even under gevent (green.py), or every fsync would stop the worker.
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), green.executor(FSYNC_THREADS, "meteorpi-fsync"))
        return _pool[1]


class TruncatedUpload(FileStoreError):
    """The stream ended before the bytes it announced."""


class FileTooLarge(FileStoreError):
    """More bytes arrived than the configured limit allows."""


class Md5Mismatch(FileStoreError):
    """The bytes received do not hash to the MD5 they were sent with."""


class UploadCut(TruncatedUpload):
    """A stream of several files broke part-way; ``results`` are those of the files before it
    (published), ``file_id`` the file it broke in."""

    def __init__(self, message: str, file_id: uuid.UUID):
        super().__init__(message)
        self.file_id = file_id
        self.results: dict[uuid.UUID, str | None] = {}


class OffsetNotHeld(TruncatedUpload):
    """An upload continues a file from an offset the store does not hold for its sender."""


class ResendFromStart(str):
    """Why a file sent from an offset was refused through no fault of its bytes (the prefix it
    continues is not held): not counted against the sender."""


class SourceNotRegular(OSError):
    """A local file to copy in is not a regular file (a FIFO, a device, a folder, a socket, or,
    where links are refused, a symbolic link): refused at open, before a byte is read.

    Why: a copy reads to the end of its source; /dev/zero has none (it filled the store's tmp at
    400 MB/s) and a FIFO blocks for ever. An OSError (``filename`` and ``strerror`` set), so
    callers that report unreadable sources in one line report this one too."""

    def __init__(self, source: str | os.PathLike, kind: str):
        super().__init__(errno.EINVAL, f"not a regular file ({kind}): refused", os.fspath(source))
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for a refusal."""
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a plain file"


def open_regular(source: str | os.PathLike, follow_symlinks: bool = True) -> int:
    """An fd for reading ``source``, which must be a regular file; SourceNotRegular otherwise.

    The check is made on the opened file (fstat), so a file swapped for a FIFO or a link
    between a caller's check and this open is caught too. O_NONBLOCK: opening a FIFO does not
    wait for a writer (it has no effect on regular files). Without ``follow_symlinks`` a link
    is refused (O_NOFOLLOW), whatever it points to."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(source, flags)
    except OSError as e:  # O_NOFOLLOW on a link: ELOOP (Linux), EMLINK (FreeBSD)
        if not follow_symlinks and e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(source):
            raise SourceNotRegular(source, "a symbolic link") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceNotRegular(source, file_kind(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


class StoreWriteFailed(FileStoreError):
    """The store's disk refused a write, a flush or a rename (full, read-only, failing).

    Kept apart from errors of the stream being read, so a full disk is reported as the
    server's trouble, never as the client's broken connection."""


class StoreFull(StoreWriteFailed):
    """An upload would leave the store's disk with less free space than it must keep: refused
    before its bytes are read, so nothing is sent in vain and the disk's last bytes stay for
    PostgreSQL and the logs."""


class FileStore:
    """Bytes by (file_id, md5) under one directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self._root_text = str(self.root)
        self.tmp = self.root / "tmp"
        self.partial = self.root / "partial"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.partial.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FileStoreError(f"cannot create file store at {self.root}: {e.strerror}", e) from e
        self.sweep_temp_files(STALE_TEMP_SECONDS)
        self.sweep_partials(STALE_PARTIAL_SECONDS)

    def make_room(self, incoming: int, keep_free: int) -> None:
        """StoreFull if writing ``incoming`` more bytes would leave less than ``keep_free`` bytes
        free (for this process's user) on the store's disk. A look, not a reservation: uploads
        that pass it together may still fill the disk, which then refuses a write (507 all the
        same); it spares a node sending gigabytes into a disk that cannot take them."""
        try:
            found = os.statvfs(self.root)
        except OSError:
            return  # cannot tell: the writes will say
        free = found.f_bavail * found.f_frsize
        if free - max(incoming, 0) < keep_free:
            raise StoreFull(f"the file store's disk has {_mib(free)} free and keeps {_mib(keep_free)} free "
                            f"(server.min_free_bytes): an upload of {_mib(incoming)} is refused until space is freed")

    def path(self, file_id: uuid.UUID, md5: str) -> Path:
        """Where the bytes of ``file_id`` with ``md5`` live once held."""
        return Path(self._name(file_id, md5))

    def _name(self, file_id: uuid.UUID, md5: str) -> str:
        """``path`` as a string: joined by hand, because a check asks ``has`` of every file of a
        batch (1250 for a night) and pathlib's parsing of three joins was two thirds of its time."""
        h = file_id.hex
        return f"{self._root_text}{os.sep}{h[0:2]}{os.sep}{h[2:4]}{os.sep}{h}_{md5.lower()}"

    def has(self, file_id: uuid.UUID, md5: str) -> bool:
        """Whether these exact bytes are held (published and verified)."""
        return os.path.isfile(self._name(file_id, md5))

    def find(self, file_id: uuid.UUID) -> Path | None:
        """The held bytes of ``file_id`` whatever their MD5, if any."""
        h = file_id.hex
        directory = self.root / h[0:2] / h[2:4]
        if not directory.is_dir():
            return None
        return next(iter(sorted(directory.glob(f"{h}_*"))), None)

    def held_md5(self, file_id: uuid.UUID) -> str | None:
        """The MD5 of the bytes held for ``file_id`` whatever it is, if any are."""
        found = self.find(file_id)
        return found.name.rsplit("_", 1)[-1] if found is not None else None

    def store_stream(self, file_id: uuid.UUID, md5: str, chunks: Iterable[bytes] | BinaryIO,
                     max_bytes: int | None = None) -> int:
        """Receive bytes, verify them against ``md5`` and publish them; returns the size.

        Already held: the stream is still drained (the client is sending it) but nothing is
        rewritten. Raises ``Md5Mismatch`` or ``FileTooLarge`` and keeps nothing on failure.
        """
        md5 = md5.lower()
        final = self.path(file_id, md5)
        if final.is_file():
            for _ in _chunks(chunks):
                pass
            return final.stat().st_size
        incoming = self._incoming(file_id)
        try:
            incoming.write(_chunks(chunks), max_bytes)
            incoming.close(flush=True)
            if incoming.md5 != md5:
                raise Md5Mismatch(f"file {file_id.hex}: received bytes have MD5 {incoming.md5}, expected {md5}")
            self._publish(incoming.name, final)
            return incoming.size
        except BaseException:
            incoming.discard()
            raise

    def store_many(self, items: Iterable[tuple[uuid.UUID, str, int]], stream: BinaryIO,
                   refused: Mapping[uuid.UUID, str] | None = None, offsets: Mapping[uuid.UUID, int] | None = None,
                   owner: str | None = None) -> dict[uuid.UUID, str | None]:
        """Receive several files sent back to back on one stream; {file_id: None or why not}.

        Each (file_id, md5, size) takes exactly ``size - offsets[file_id]`` bytes (``offsets``
        default to 0); those of a file in ``refused`` (file_id -> why) are read past and never
        written. A file sent from an offset continues ``owner``'s partial file (see
        ``resumable``), whose prefix is hashed again, so the MD5 checked is always the
        whole file's. Bytes are hashed as they pass and written to temp names; each file's fsync
        starts in a thread pool as soon as it is written, so the disk flushes while the next
        file arrives (group commit), and the batch is published once every fsync returned. A
        mismatching file is dropped alone.

        A stream that breaks or ends early raises ``UploadCut`` (a TruncatedUpload) after
        publishing every file that arrived whole and verified before the cut (a poor link cuts
        long uploads again and again: nothing whole may be lost to it), and, given an ``owner``,
        after keeping the cut file's received prefix durably as that owner's partial file.
        """
        results: dict[uuid.UUID, str | None] = {}
        written: list[tuple[str, Path]] = []
        pool = _fsync_pool()
        flushes = _FlushGroups(pool)
        cut: UploadCut | None = None
        offsets = offsets or {}
        pieces = _Pieces(stream)
        try:
            for file_id, md5, size in items:
                md5 = md5.lower()
                final = self.path(file_id, md5)
                offset = offsets.get(file_id, 0)
                try:
                    if refused and file_id in refused:
                        pieces.skip(size - offset)
                        results[file_id] = refused[file_id]
                        continue
                    # In a real thread: creating a file waits for the filesystem's journal, busy
                    # with the fsyncs of the files before, and would stop the worker's other
                    # uploads meanwhile (a fifth of a loopback replication's server time).
                    held, incoming = green.call(self._held_or_new, final, file_id, offset == 0)
                    if held:
                        pieces.skip(size - offset)
                        results[file_id] = None
                        continue
                    tmp_name, digest = self._receive_exactly(file_id, md5, stream, size, offset, owner, pieces,
                                                             incoming)
                except StoreWriteFailed:
                    raise
                except OffsetNotHeld as e:  # the stream is whole: read past this file, refuse it uncounted
                    try:
                        pieces.skip(size - offset)
                    except (TruncatedUpload, OSError) as broken:
                        cut = UploadCut(f"file {file_id.hex}: {broken}", file_id)
                        break
                    results[file_id] = ResendFromStart(str(e))
                    continue
                except (TruncatedUpload, OSError) as e:  # the stream's trouble, not the disk's
                    cut = UploadCut(f"file {file_id.hex}: {getattr(e, 'partial_message', None) or e}", file_id)
                    break
                if digest != md5:
                    _unlink(tmp_name)
                    self.discard_partials(file_id)
                    results[file_id] = f"file {file_id.hex}: received bytes have MD5 {digest}, expected {md5}"
                    continue
                written.append((tmp_name, final))
                flushes.add(tmp_name, size - offset)
                results[file_id] = None
            with self._disk():
                flushes.finish()
        except BaseException:
            flushes.abandon()  # no flush may still hold a name we remove
            for tmp_name, _ in written:
                _unlink(tmp_name)
            raise
        with self._disk():
            directories = green.call(self._rename_into_place, written)
            # The renames are durable once their directories are: flushed together, not in turn.
            for done in [pool.submit(fsync_directory, d) for d in directories]:
                done.result()
        if written:
            green.call(self.discard_partials, *(uuid.UUID(final.name.split("_", 1)[0]) for _, final in written))
        if cut is not None:
            cut.results = results
            raise cut
        return results

    def _held_or_new(self, final: Path, file_id: uuid.UUID, new: bool) -> tuple[bool, "_Incoming | None"]:
        """(True, None) when ``final`` is held already; else (False, a new temp file for it, or
        None when not ``new``: a continued upload takes its partial file instead)."""
        if final.is_file():
            return True, None
        return False, (self._incoming(file_id) if new else None)

    def _rename_into_place(self, renames: list[tuple[str, Path]]) -> set[Path]:
        """Rename each flushed temp file to its name; the directories whose entries changed."""
        directories: set[Path] = set()
        for tmp_name, final in renames:
            directories |= self._make_parents(final)
            os.replace(tmp_name, final)
            directories.add(final.parent)
        return directories

    def settle(self, file_ids: Iterable[uuid.UUID], most_seconds: float = SETTLE_SECONDS) -> bool:
        """Wait until no upload still in progress in a live process of this host is writing one
        of these files (its temp file, named for the file and the writer, is renamed into place,
        kept as a partial or removed when the upload ends), for at most ``most_seconds``; whether
        none is left.

        Why: a link that resets a connection tells the client at once, while the server's half of
        that upload may still be taking the last bytes the kernel received and flushing the
        files that came whole. A check sent right after the cut would find those files not yet
        held and have them sent again; waiting for their writer makes the answer say what the
        cut upload kept. Cheap when nothing is in flight: one listing of the temp folder."""
        prefixes = tuple(f"{file_id.hex}." for file_id in file_ids)
        if not prefixes:
            return True
        deadline, pause = time.monotonic() + most_seconds, 0.005
        while True:
            try:
                writing = [n for n in os.listdir(self.tmp) if n.startswith(prefixes) and not _writer_gone(n)]
            except FileNotFoundError:
                return True
            if not writing:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("a check answered while %d upload(s) of its files were still in progress", len(writing))
                return False
            time.sleep(min(pause, left))  # cooperative under gevent (its time.sleep)
            pause = min(pause * 2, 0.1)

    # -- partial files: the durable prefix of a file whose upload was cut ------------------------
    def _partial_glob(self, file_id: uuid.UUID, md5: str | None = None, owner: str | None = None) -> list[Path]:
        pattern = f"{file_id.hex}_{md5.lower() if md5 else '*'}_{_owner_key(owner) if owner is not None else '*'}_*"
        return sorted(self.partial.glob(pattern))

    def resumable(self, files: Iterable[tuple[uuid.UUID, str]], owner: str) -> dict[uuid.UUID, int]:
        """How many bytes of each (file_id, md5) this store holds durably for ``owner`` from cut
        uploads (an upload may continue from there), only those with bytes held; partial
        files of these ids with other bytes are removed meanwhile (a prefix of other bytes is
        no use). One listing of the partial folder: a check of a night's 1250 files asked for
        them one glob each, a sixth of a loopback replication's server time."""
        wanted = {file_id.hex: (file_id, md5.lower()) for file_id, md5 in files}
        try:
            names = os.listdir(self.partial) if wanted else []
        except FileNotFoundError:
            return {}
        key, held = _owner_key(owner), {}
        for name in names:
            parts = name.split("_")
            if len(parts) != 4 or parts[0] not in wanted:
                continue
            file_id, md5 = wanted[parts[0]]
            if parts[1] != md5:
                _unlink(self.partial / name)
            elif parts[2] == key and parts[3].isdigit() and int(parts[3]) > 0:
                held[file_id] = max(held.get(file_id, 0), int(parts[3]))
        return held

    def discard_partials(self, *file_ids: uuid.UUID) -> None:
        """Remove every partial file of these files (one listing of the partial folder)."""
        hex_ids = {file_id.hex for file_id in file_ids}
        try:
            names = os.listdir(self.partial)
        except FileNotFoundError:
            return
        for name in names:
            if name.split("_", 1)[0] in hex_ids:
                _unlink(self.partial / name)

    def _claim_partial(self, file_id: uuid.UUID, md5: str, owner: str | None, offset: int) -> "_Incoming":
        """Take ``owner``'s partial of this file as this writer's temp file (renamed, not
        copied: a cut 4 GB video is not rewritten per try), cut to ``offset`` bytes, which are
        hashed again, to be written on from there. OffsetNotHeld when it holds fewer bytes."""
        for path in (self._partial_glob(file_id, md5, owner) if owner is not None else []):
            held = path.name.rsplit("_", 1)[-1]
            if not held.isdigit() or int(held) < offset:
                continue
            tmp_name = str(self.tmp / f"{file_id.hex}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            try:
                os.replace(path, tmp_name)
            except FileNotFoundError:  # claimed by a concurrent upload of the same owner
                break
            fd = os.open(tmp_name, os.O_RDWR)
            try:
                digest, left = hashlib.md5(), offset
                while left:
                    chunk = os.read(fd, min(CHUNK_SIZE, left))
                    if not chunk:
                        raise OffsetNotHeld(f"file {file_id.hex}: its partial file is shorter than its name says")
                    digest.update(chunk)
                    left -= len(chunk)
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                _unlink(tmp_name)
                raise
            return _Incoming(self, file_id, fd, tmp_name, digest, offset)
        raise OffsetNotHeld(f"file {file_id.hex}: {offset} bytes of it are not held here: send it from 0")

    def _keep_partial(self, file_id: uuid.UUID, md5: str, owner: str, tmp_name: str, length: int) -> None:
        """Publish a cut file's received bytes as ``owner``'s partial (flushed first, so the length
        in its name is durable), replacing any shorter one. Flushed in the flushing threads: under
        gevent a flush in the request's own thread would stop the worker."""
        _fsync_pool().submit(_fsync_file, tmp_name).result()
        for old in self._partial_glob(file_id, None, owner):
            _unlink(old)
        os.replace(tmp_name, self.partial / f"{file_id.hex}_{md5}_{_owner_key(owner)}_{length}")
        _fsync_pool().submit(fsync_directory, self.partial).result()

    def _receive_exactly(self, file_id: uuid.UUID, md5: str, stream: BinaryIO, size: int, offset: int = 0,
                         owner: str | None = None, pieces: "_Pieces | None" = None,
                         incoming: "_Incoming | None" = None) -> tuple[str, str]:
        """(temp name, MD5) of the next ``size - offset`` bytes of ``stream``, written on from
        ``owner``'s partial when ``offset``; not flushed yet. A stream that breaks keeps what
        came as the owner's partial (its message says so), then raises on."""
        if offset:
            with self._disk():
                incoming = self._claim_partial(file_id, md5, owner, offset)
        else:
            incoming = incoming or self._incoming(file_id)
        pieces = pieces or _Pieces(stream)
        if pieces.aligned and not incoming.size % DIRECT_ALIGN:
            incoming.direct = _set_direct(incoming.fd, True)
        try:
            incoming.write(pieces.exactly(size - offset))
            incoming.close()
            return incoming.name, incoming.md5
        except (TruncatedUpload, OSError) as e:
            incoming.close()
            if owner is not None and incoming.size > 0 and not isinstance(e, (StoreWriteFailed, OffsetNotHeld)):
                try:
                    with self._disk():
                        self._keep_partial(file_id, md5, owner, incoming.name, incoming.size)
                    e.partial_message = f"{e}; its first {incoming.size} bytes are kept"
                except StoreWriteFailed:
                    incoming.discard()
            else:
                incoming.discard()
            raise
        except BaseException:
            incoming.discard()
            raise

    def _incoming(self, file_id: uuid.UUID) -> "_Incoming":
        """A new temp file for bytes of ``file_id`` (named for this writer)."""
        fd, tmp_name = self._temp(file_id)
        return _Incoming(self, file_id, fd, tmp_name)

    def _temp(self, file_id: uuid.UUID) -> tuple[int, str]:
        with self._disk():
            return tempfile.mkstemp(dir=self.tmp, prefix=f"{file_id.hex}.{_HOST}.{os.getpid()}.")

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        with self._disk():
            while view:
                view = view[os.write(fd, view):]

    @contextlib.contextmanager
    def _disk(self):
        """Turn the store's own OSErrors into StoreWriteFailed (the stream's stay OSErrors)."""
        try:
            yield
        except OSError as e:
            raise StoreWriteFailed(f"cannot write to the file store at {self.root}: {e.strerror or e}", e) from e

    def store_file(self, file_id: uuid.UUID, source: str | os.PathLike) -> tuple[int, str]:
        """Copy a local file into the store; returns (size, md5) measured while copying."""
        try:
            src = open(open_regular(source), "rb")
        except OSError as e:
            raise FileStoreError(f"cannot read {source}: {e.strerror}", e) from e
        with src:
            incoming = self._incoming(file_id)
            try:
                incoming.write(iter(lambda: src.read(CHUNK_SIZE), b""))
                incoming.close(flush=True)
                self._publish(incoming.name, self.path(file_id, incoming.md5))
                return incoming.size, incoming.md5
            except BaseException:
                incoming.discard()
                raise

    def store_files(self, sources: list[str | os.PathLike],
                    id_for: Callable[[Path, str], uuid.UUID],
                    on_stored: Callable[[Path, int], None] | None = None,
                    follow_symlinks: bool = True) -> list[tuple[uuid.UUID, int, str]]:
        """Copy local files into the store, each named by ``id_for(source, md5)``: an id that
        depends on the bytes (content-addressed), known only once they were read. Returns
        (file_id, size, md5) per source, in order.

        One read per file, hashed as it is copied, several files at once (hashing and writing
        release the GIL); each copy's fsync starts in the flushing threads as soon as it is
        written, so the disk flushes while later files are hashed, and all are published
        (renamed into place, directories flushed) only once every copy and flush succeeded: a
        failure publishes nothing and leaves no temp file. Bytes already held are not written
        again. A source that cannot be read raises its OSError as it is; one that is not a
        regular file (or is a link, without ``follow_symlinks``) raises SourceNotRegular before
        a byte of it is read; the store refusing a write raises StoreWriteFailed.

        Ctrl-C (see ``_ctrl_c_noted``): the copies not started are cancelled, those running end
        with their current file (a check per file, not per chunk: the copy loop is the
        benchmark's hot path), every temp file is removed, then KeyboardInterrupt is raised. A
        night of 1 GB left ~950 MB in tmp/ until the next start, and an interrupt raised
        inside the pool's thread start could leave a worker no one would stop (a hang at exit).
        """
        paths = [Path(s) for s in sources]
        done: list = [None] * len(paths)
        directories: set[Path] = set()  # whose entries changed: flushed once all is renamed
        flushes: list[Future] = []
        failure: BaseException | None = None
        futures: dict[Future, int] = {}
        with _ctrl_c_noted() as interrupted:
            pool = ThreadPoolExecutor(max(1, min(COPY_THREADS, len(paths))), thread_name_prefix="meteorpi-copy")
            try:
                try:
                    # Each copy hands itself over as it ends (O(1) a file; wait() on what is
                    # pending would lock every pending future at every turn).
                    completed: queue.SimpleQueue[Future] = queue.SimpleQueue()
                    for i, p in enumerate(paths):
                        future = pool.submit(self._copy_in, p, id_for, follow_symlinks, interrupted)
                        futures[future] = i
                        future.add_done_callback(completed.put)
                    left = len(futures)
                    while left and not interrupted.is_set():
                        try:
                            future = completed.get(timeout=INTERRUPT_POLL_SECONDS)
                        except queue.Empty:
                            continue
                        left -= 1
                        i = futures[future]
                        try:
                            done[i] = future.result()
                        except BaseException as e:  # keep the first; the others still finish or fail
                            failure = failure or e
                            continue
                        if done[i][3] is not None and failure is None:
                            flushes.append(_fsync_pool().submit(_fsync_file, done[i][3]))
                            directories |= done[i][4]
                        if on_stored is not None and failure is None:
                            try:
                                on_stored(paths[i], done[i][1])
                            except BaseException as e:
                                failure = e
                finally:
                    # Normally every copy is done here; interrupted, those not started never start.
                    pool.shutdown(wait=True, cancel_futures=True)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                wait(flushes)  # no flush may still hold a name we publish or remove
                if failure is None:
                    with self._disk():
                        for flushed in flushes:
                            flushed.result()
                if failure is not None:
                    raise failure
                if interrupted.is_set():  # during the flushes: nothing published yet
                    raise KeyboardInterrupt
                with self._disk():
                    for file_id, _, md5, tmp_name, _ in done:
                        if tmp_name is None:
                            continue
                        final = self.path(file_id, md5)
                        directories |= self._make_parents(final)
                        os.replace(tmp_name, final)
                        directories.add(final.parent)
                    for flushed in [_fsync_pool().submit(fsync_directory, d) for d in directories]:
                        flushed.result()
            except BaseException:
                # Every temp file written, whether its result was taken or not; a name already
                # renamed into place is gone from tmp/ and unlinking it does nothing.
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception() is None:
                        tmp_name = future.result()[3]
                        if tmp_name is not None:
                            _unlink(tmp_name)
                raise
        # Ctrl-C while publishing: published (held, registered by no one yet) and raised on exit.
        return [(file_id, size, md5) for file_id, size, md5, _, _ in done]

    def _copy_in(self, source: Path, id_for: Callable[[Path, str], uuid.UUID], follow_symlinks: bool = True,
                 interrupted: threading.Event | None = None) -> tuple[uuid.UUID, int, str, str | None, set[Path]]:
        """(file_id, size, md5, unflushed temp name or None when these bytes are held already,
        directories created whose parents need a flush). The fan-out directories are made here,
        while other files still copy, not one by one when publishing.

        The source is opened by ``open_regular``: one open and one fstat per file, so a FIFO, a
        device or (without ``follow_symlinks``) a link is refused before a temp file exists.

        Read, hashed and written through one buffer while it is in the processor's cache (see
        ``_copy_through``). A copy in the kernel (copy_file_range in steps, then reading the copy
        back to hash it) was measured slower: 0.5-0.7 s more CPU for a 1.1 GiB night, since the
        bytes must reach Python to be hashed anyway.

        ``interrupted`` (Ctrl-C) is looked at once, before the file is opened: a copy started is
        finished (its temp file is removed by store_files), none starts after."""
        if interrupted is not None and interrupted.is_set():
            raise KeyboardInterrupt
        with open(open_regular(source, follow_symlinks), "rb", buffering=0) as src:
            incoming = self._incoming(uuid.uuid4())
            try:
                self._copy_through(src, incoming)
                incoming.close()
                file_id = id_for(source, incoming.md5)
                if self.has(file_id, incoming.md5):
                    incoming.discard()
                    return file_id, incoming.size, incoming.md5, None, set()
                with self._disk():
                    created = self._make_parents(self.path(file_id, incoming.md5))
                return file_id, incoming.size, incoming.md5, incoming.name, created
            except BaseException:
                incoming.discard()
                raise

    def _copy_through(self, source: BinaryIO, incoming: "_Incoming") -> None:
        """Hash ``source``'s bytes and write them into ``incoming``, through this thread's buffer
        and around the page cache (O_DIRECT) where the store's filesystem allows it.

        Why direct: a buffered write copies every byte into the page cache, and the fsync then
        writes the dirty pages back in our own thread; both were charged to ingest's CPU (for a
        1.1 GiB night, 2-4 s of system time against 0.5-0.8 s direct, measured side by side).
        A direct write goes from our buffer to the disk. The file is still fsynced by name
        before it is published: that flushes its metadata and the disk's write cache. A piece
        that is not aligned (a file's tail) or a filesystem that refuses the alignment goes
        through the page cache instead."""
        buffer = _copy_buffer()
        view = memoryview(buffer)
        direct = _set_direct(incoming.fd, True)
        while n := source.readinto(buffer):
            piece = view[:n]
            incoming.digest.update(piece)
            direct = self._write_copy(incoming.fd, piece, direct)
            incoming.size += n

    def _write_copy(self, fd: int, piece: memoryview, direct: bool) -> bool:
        """Write all of ``piece``; whether ``fd`` still writes directly afterwards. Direct writes
        need aligned offsets and lengths: a piece's aligned head is written directly, and once
        something cannot be (a file's tail, a short write), the rest of the file goes through
        the page cache."""
        with self._disk():
            while piece:
                size = len(piece)
                if direct:
                    size -= size % DIRECT_ALIGN
                    if not size:
                        direct = _set_direct(fd, False)
                        continue
                try:
                    written = os.write(fd, piece[:size])
                except OSError as e:
                    if not (direct and e.errno == errno.EINVAL):
                        raise
                    direct = _set_direct(fd, False)  # the filesystem wants another alignment
                    continue
                piece = piece[written:]
                if direct and written % DIRECT_ALIGN:
                    direct = _set_direct(fd, False)
        return direct

    def verify(self, file_id: uuid.UUID, md5: str) -> bool:
        """Re-hash held bytes: whether they still match (disks do rot)."""
        path = self.path(file_id, md5)
        if not path.is_file():
            return False
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
                digest.update(chunk)
        return digest.hexdigest() == md5.lower()

    def remove(self, file_id: uuid.UUID, md5: str) -> None:
        _unlink(self.path(file_id, md5))

    def clear(self) -> None:
        """Delete every held file (tests only)."""
        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        """Remove temp files left by crashed writers, returning how many: at once those of a
        process of this host that no longer exists, any other once untouched for
        ``older_than_seconds`` (a killed server's half-received uploads would otherwise fill
        the disk kill by kill: 749 left by 200 kills before this)."""
        cutoff, removed = time.time() - older_than_seconds, 0
        for entry in self.tmp.iterdir():
            try:
                if _writer_gone(entry.name) or entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed %d temp file(s) left by writers that died in %s", removed, self.tmp)
        return removed

    def sweep_partials(self, older_than_seconds: float) -> int:
        """Remove partial files untouched for ``older_than_seconds`` (their sender gave up, or
        the file was sent whole since), returning how many."""
        cutoff, removed = time.time() - older_than_seconds, 0
        for entry in self.partial.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def _make_parents(self, final: Path) -> set[Path]:
        """Create the fan-out directories of ``final``; the directories whose entries changed
        (a new directory is durable only once its parent is flushed too)."""
        changed = set()
        for directory in (final.parent.parent, final.parent):
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                changed.add(directory.parent)
        return changed

    def _publish(self, tmp_name: str, final: Path) -> None:
        with self._disk():
            changed = self._make_parents(final)
            os.replace(tmp_name, final)
            for directory in changed | {final.parent}:
                fsync_directory(directory)


@contextlib.contextmanager
def _ctrl_c_noted() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) noted in the event yielded instead of raised wherever the main thread is;
    KeyboardInterrupt raised on leaving when it was pressed (and nothing else is raised).

    Why: a KeyboardInterrupt raised at an arbitrary point of store_files lost what the caller
    must clean up: in the middle of submitting the copies, the futures of copies already
    running (their temp files stayed), and inside ThreadPoolExecutor's start of a worker, a
    worker its shutdown never stops (the process hung at exit). Noted, it is acted on at one
    place. Only in the main thread, and only where SIGINT raises KeyboardInterrupt (a program
    with a handler of its own, such as ``ingest rms --follow``'s, keeps it)."""
    event = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if event.is_set():
        raise KeyboardInterrupt


class _Incoming:
    """Bytes on their way into the store: a temp file on the store's filesystem, hashed as they
    are written. Every way in (an upload, many files on one stream, a local copy) writes through
    here; the caller then flushes and publishes it (renamed into place) or discards it."""

    def __init__(self, store: FileStore, file_id: uuid.UUID, fd: int, name: str,
                 digest: "hashlib._Hash | None" = None, size: int = 0):
        self.store, self.file_id, self.fd, self.name = store, file_id, fd, name
        self.digest = digest or hashlib.md5()
        self.size = size  # bytes in the file (a claimed partial's prefix included)
        # Written around the page cache (see FileStore._copy_through): uploads read into
        # _Pieces' aligned buffer. The copy into the page cache was the largest part of the
        # server's system time receiving a night (a loopback replication of 625 MiB: 1.0-1.1 s
        # of the machine's system time direct, 1.6-3.0 s buffered). A direct write of a MiB
        # waits for the disk (0.5 ms here) in the worker's own thread, as long as a buffered
        # one waited for the copy. Under gevent the hash and the write of a piece run in a real
        # thread while the worker gathers the next (the write alone there: 2.12-2.66 s over
        # seven runs, against 2.34-2.49 s over four with it in the worker; see _hash_and_write).
        self.direct = False

    def write(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> None:
        """Hash and write each chunk; FileTooLarge, before writing it, at the chunk that would
        take the file past ``max_bytes``. Errors of the disk are StoreWriteFailed; those of
        ``chunks`` (a stream that broke) pass as they are."""
        writing = None  # a direct write still running in a real thread (under gevent)
        try:
            for chunk in chunks:
                if max_bytes is not None and self.size + len(chunk) > max_bytes:
                    raise FileTooLarge(f"file {self.file_id.hex} is larger than the limit of {max_bytes} bytes")
                if writing is not None:
                    self.direct, writing = green.finish(writing), None
                if self.direct:
                    writing = green.start(self._hash_and_write, chunk)
                    if writing is None:  # not under gevent: hashed and written here
                        self.direct = self._hash_and_write(chunk)
                else:
                    self.digest.update(chunk)
                    self.store._write(self.fd, chunk)
                self.size += len(chunk)
        finally:
            if writing is not None:  # the fd is closed next: never under a running write
                self.direct = green.finish(writing)

    def _hash_and_write(self, chunk: bytes | memoryview) -> bool:
        """Hash a piece and write it directly; whether the file still writes directly. Both in
        one real thread under gevent: hashlib releases the GIL, so the worker's loop gathers
        the next piece (and serves its other uploads) while this piece is hashed, instead of
        every upload of a worker waiting its turn for the one thread that hashed them all."""
        self.digest.update(chunk)
        return self.store._write_copy(self.fd, chunk, True)

    @property
    def md5(self) -> str:
        return self.digest.hexdigest()

    def close(self, flush: bool = False) -> None:
        """Close the file, flushed to disk first when ``flush`` (else the caller flushes it by
        name, in the flushing threads). Closing again does nothing."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            if flush:
                with self.store._disk():
                    os.fsync(fd)
            else:
                _start_writeback(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temp file (gone already, e.g. kept as a partial: nothing to do)."""
        try:
            self.close()
        finally:
            _unlink(self.name)


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def _owner_key(owner: str) -> str:
    """A file-name-safe key for the account a partial file belongs to."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def _chunks(source: Iterable[bytes] | BinaryIO) -> Iterable[bytes]:
    if hasattr(source, "read"):
        return iter(lambda: source.read(CHUNK_SIZE), b"")
    return source


class _Pieces:
    """How an upload stream is read: how many bytes to ask of it at once, and into what.

    How many: a WSGI server's read(n) loses every byte it gathered of the n when the
    connection breaks inside it, and what a cut upload keeps is what was read before the cut;
    but each read costs (16 KiB reads made a loopback replication of 625 MiB take 19 s instead
    of 6). So a read asks for at most an eighth of what the stream has delivered so far, within
    [STREAM_READ_LEAST, STREAM_READ_MOST]: a cut loses at most about an eighth of what its
    connection carried (a link cut every 64 KB still makes progress), and a healthy upload reads
    a MiB at a time after its first 8 MiB.

    Into what: a stream that offers ``readinto`` (``meteorpi serve``'s body reads the socket
    straight into it) fills one buffer reused for every piece of every file, so each byte is
    copied once on its way from the socket to the hash and the disk; read() would hand over a
    new bytes object per piece, assembled from the server's own buffers (three more copies of
    every byte, on the CPU that also hashes them). The buffer is page-aligned and each piece is
    gathered whole, in multiples of DIRECT_ALIGN, over as many socket reads as it takes, so it
    can be written around the page cache (``_Incoming.direct``); a read that breaks hands on
    what the piece had gathered first, so a cut still keeps every byte that arrived.
    """

    def __init__(self, stream: BinaryIO | None = None):
        self.delivered = 0
        self.stream = stream
        readinto = getattr(stream, "readinto", None)
        self._readinto = readinto if callable(readinto) else None
        # Two page-aligned buffers (anonymous memory), filled in aligned pieces so that they can
        # be written directly, taken in turn: one piece is written (in a real thread, under
        # gevent) while the next is gathered into the other (see _Incoming.write).
        self._buffers = [memoryview(mmap.mmap(-1, STREAM_READ_MOST)) for _ in range(2)] if self._readinto else []
        self._turn = 0

    @property
    def aligned(self) -> bool:
        """Whether the pieces are views of a page-aligned buffer, in multiples of DIRECT_ALIGN
        (but a file's last)."""
        return bool(self._buffers)

    def next(self, left: int) -> int:
        want = max(STREAM_READ_LEAST, min(STREAM_READ_MOST, self.delivered // 8))
        return min(left, want - want % DIRECT_ALIGN)

    def exactly(self, size: int) -> Iterable[bytes | memoryview]:
        """The next ``size`` bytes of the stream; TruncatedUpload if it ends first. A piece
        may be a view of a reused buffer: valid until the piece after the next is asked for."""
        left = size
        while left:
            if self._readinto is None:
                chunk = self.stream.read(self.next(left))
            else:
                chunk = yield from self._fill(self.next(left))
            if not chunk:
                raise TruncatedUpload(f"the body ended {left} bytes early")
            left -= len(chunk)
            self.delivered += len(chunk)
            yield chunk

    def _fill(self, want: int):
        """The next ``want`` bytes in the buffer (fewer only where the stream ended), read in as
        many reads as the socket needs. Where a read breaks, what the buffer holds is handed on
        first, so a cut loses nothing that arrived."""
        self._turn ^= 1
        buffer, filled = self._buffers[self._turn], 0
        while filled < want:
            try:
                n = self._readinto(buffer[filled:want])
            except BaseException:
                if filled:
                    self.delivered += filled
                    yield buffer[:filled]
                raise
            if not n:
                break
            filled += n
        return buffer[:filled]

    def skip(self, size: int) -> None:
        """Read past the next ``size`` bytes (a file refused or already held)."""
        for _ in self.exactly(size):
            pass


def _copy_buffer() -> mmap.mmap:
    """This thread's copy buffer: page-aligned (anonymous memory), as direct writes need, and
    kept for the thread's life (a fresh buffer per file would fault in its pages each time)."""
    buffer = getattr(_copy_buffers, "buffer", None)
    if buffer is None:
        buffer = _copy_buffers.buffer = mmap.mmap(-1, COPY_CHUNK_SIZE)
    return buffer


def _set_direct(fd: int, on: bool) -> bool:
    """Switch direct I/O (O_DIRECT) on or off for ``fd``; whether it is on now. Switching on
    fails soft: without O_DIRECT (macOS) or on a filesystem without direct I/O (tmpfs, some
    FUSE), writes go through the page cache. Switching off raises if it cannot be done."""
    if not _O_DIRECT:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
    except OSError:
        if on:
            return False
        raise
    return on


class _FlushGroups:
    """The fsyncs of a batch's files, handed to the flushing threads a few files at a time.

    Why groups: each hand-over wakes a thread that must take the GIL from the request's thread,
    which is hashing the next file; one per file (1250 in a night of 512 KiB files) cost the
    worker an eighth of its time in hand-overs. A group of FLUSH_GROUP_FILES files or
    FLUSH_GROUP_BYTES bytes keeps the disk flushing while later files arrive, and eight groups
    in flight still let the filesystem commit their flushes together."""

    def __init__(self, pool: Executor):
        self.pool, self.names, self.size, self.futures = pool, [], 0, []

    def add(self, name: str, size: int) -> None:
        self.names.append(name)
        self.size += size
        if len(self.names) >= FLUSH_GROUP_FILES or self.size >= FLUSH_GROUP_BYTES:
            self._send()

    def _send(self) -> None:
        if self.names:
            self.futures.append(self.pool.submit(_fsync_files, self.names))
            self.names, self.size = [], 0

    def finish(self) -> None:
        """Every file flushed (the first flush's OSError raised)."""
        self._send()
        wait(self.futures)
        for done in self.futures:
            done.result()

    def abandon(self) -> None:
        """Wait for the flushes in flight, whatever they give (their files are being removed)."""
        wait(self.futures)


def _start_writeback(fd: int) -> None:
    """Have the kernel start writing a finished file to disk now, without waiting for it.

    Why: the file is fsynced later, in the flushing threads, with the files after it; left to
    itself the kernel would write it back only when those fsyncs ask, so a large upload ended
    with seconds of writing still to do while the client waited for its answer. Linux starts
    writeback of a file's dirty pages on POSIX_FADV_DONTNEED (and drops its clean ones: the
    server does not read what it just received). Measured on a loopback replication of 625 MiB:
    4.56-4.64 s with it, 5.30-5.67 s without, alternating. Only a hint: where the call does
    not exist or fails, the fsync does all the work, as before."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def _fsync_files(paths: list[str]) -> None:
    for path in paths:
        _fsync_file(path)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``path`` durable: the directory itself must reach the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writer_gone(temp_name: str) -> bool:
    """Whether the temp file was written by a process of this host that has exited.

    A killed server's workers may linger a moment as zombies (their parent died with them):
    those count as gone, since a zombie writes nothing more. A pid reused since looks alive, and
    its temp waits for the age rule: this errs on the side of never removing bytes in writing."""
    parts = temp_name.split(".")
    if len(parts) < 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    try:  # Linux: "<pid> (<name>) <state> ..."; elsewhere the age rule alone
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return False


def _unlink(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
