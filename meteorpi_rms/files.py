"""Opening what RMS left in a night folder: regular files only, read to a bound.

The rule: every file of a night we read (to parse it, or to copy it into the store) must be a
regular file inside the night folder, not a symbolic link, FIFO, device, socket or folder. RMS
writes only regular files, and each of the others broke an ingest: a link to /dev/zero named
like an FF file was copied at 400 MB/s into the store's tmp for ever, a FIFO hung the ingest,
a link to /etc/shadow was ingested (and exported) as a night product, and a dangling link was
taken for RMS housekeeping and retried for ever. Links are refused rather than followed within
the folder: following them safely needs the target checked at open (openat2 RESOLVE_BENEATH),
which Python does not offer, and no RMS installation needs them.

The rule is applied where the file is opened (O_NOFOLLOW, then fstat: see
``meteorpi_db.file_store.open_regular``), so a file swapped between the folder's listing and
the open is caught too; the listing (``night.scan_night``) checks it first only to refuse the
night before anything is read.
"""
from __future__ import annotations

from pathlib import Path

from meteorpi_db.file_store import SourceNotRegular, open_regular

from .errors import FormatError, NotRegularFile

# The most we read of a file we parse (FTPdetectinfo, .config, platepars): a busy night's
# FTPdetectinfo is a few MB; past this the file is not what its name says, and reading it
# whole would only exhaust memory.
MAX_PARSED_BYTES = 256 * 1024 ** 2


def read_night_file(path: Path, limit: int = MAX_PARSED_BYTES) -> bytes:
    """The bytes of a night's file to parse: NotRegularFile unless a regular file (links are
    refused), FormatError past ``limit`` bytes; FileNotFoundError as it is (RMS housekeeping)."""
    try:
        fd = open_regular(path, follow_symlinks=False)
    except SourceNotRegular as e:
        raise NotRegularFile(path, e.kind) from None
    with open(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FormatError(path, None, f"larger than {limit // 1024 ** 2} MiB: not a file RMS writes")
    return data
