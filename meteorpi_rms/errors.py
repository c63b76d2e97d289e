"""Exceptions raised while reading what RMS left on disk.

    MeteorpiError                 (meteorpi_model) root of everything meteorpi raises
    └── RmsError                  something about an RMS night stops its ingest
        ├── FormatError           a file is garbled or truncated: names the file and the line
        │   └── NotRegularFile    a night's file is a link, FIFO, device or folder: refused
        ├── NightInProgress       RMS is still capturing or processing: try again later
        └── NightVanished         RMS housekeeping deleted a file while we read it: retry later

Every message names the file (and line, where there is one), so an operator can open it.
"""
from __future__ import annotations

from pathlib import Path

from meteorpi_model.errors import MeteorpiError


class RmsError(MeteorpiError):
    """Root of meteorpi_rms's exceptions."""


class FormatError(RmsError):
    """A file RMS wrote does not have the format we read; ``path`` and ``line`` say where."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"{self.path.name} line {line}" if line is not None else self.path.name
        super().__init__(f"{where}: {problem}")


class NotRegularFile(FormatError):
    """A file of the night is not a regular file (a symbolic link, dangling or not, a FIFO, a
    device, a folder): RMS writes none of these, and reading one could hang, never end, or
    take another file's bytes as the night's. The night is refused, not retried."""

    def __init__(self, path: str | Path, kind: str):
        self.kind = kind
        super().__init__(path, None, f"not a regular file ({kind}): RMS writes only regular files, "
                                     f"so the night is refused")


class NightInProgress(RmsError):
    """The night is not finished (no FTPdetectinfo yet, or RMS's queue backup remains)."""


class NightVanished(RmsError):
    """A file of the night disappeared while it was read (RMS deleting old nights)."""
