"""Finding RMS nights on disk, telling finished ones from those in progress, and naming files.

RMS writes each night to ``CapturedFiles/<night>/`` and keeps the part worth keeping in
``ArchivedFiles/<night>/`` (deleting the oldest folders when the disk fills). A night is
finished when its ``FTPdetectinfo_<night>.txt`` exists and RMS's processing queue backup
(``rms_queue_bkup_*.pickle``) is gone. Given RMS's data folder, each night is taken once: from
ArchivedFiles when it is there (it holds the calibrated products), else from CapturedFiles.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from meteorpi_db.file_store import file_kind

from .errors import NightInProgress, NightVanished, NotRegularFile
from .names import ftpdetectinfo_night, parse_ff_name, parse_fr_name, parse_night_name

QUEUE_BACKUP_PREFIX = "rms_queue_bkup_"
NIGHT_PARENTS = ("ArchivedFiles", "CapturedFiles")

# Night-level files kept as stand-alone files: (how to recognise the name, semantic type, MIME type).
MIME = {".txt": "text/plain", ".cal": "application/json", ".json": "application/json", ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4", ".log": "text/plain",
        ".fits": "application/fits", ".bin": "application/octet-stream"}


def night_file_type(name: str) -> str | None:
    """The semantic type of a night-level file, or None when we do not keep it."""
    lower = name.lower()
    if ftpdetectinfo_night(name):
        return "rms:ftpdetectinfo"
    if name == ".config":
        return "rms:config"
    if name == "platepar_cmn2010.cal":
        return "rms:platepar"
    if name == "platepars_all_recalibrated.json":
        return "rms:platepars_recalibrated"
    if name.startswith("CALSTARS") and lower.endswith(".txt"):
        return "rms:calstars"
    if lower.endswith((".jpg", ".jpeg", ".png")):
        return "rms:thumbnails" if "thumb" in lower else "rms:stack" if "stack" in lower else None
    if lower.endswith(".mp4"):
        return "rms:timelapse"
    if lower.endswith(".log"):
        return "rms:log"
    return None


def mime_type(name: str) -> str:
    return MIME.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


@dataclass
class NightFolder:
    """The files of one night folder, sorted by kind (names only; paths via ``path``)."""
    root: Path
    ftpdetectinfo: str | None = None
    night: str | None = None
    ff: dict[str, Path] = field(default_factory=dict)       # FF name -> path
    fr: list[Path] = field(default_factory=list)
    night_files: list[tuple[Path, str]] = field(default_factory=list)  # (path, semantic type)
    in_progress_marker: str | None = None
    # Files we would read that are no regular files (name -> what they are): see files.py.
    irregular: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.ftpdetectinfo is not None and self.in_progress_marker is None

    def require_finished(self) -> None:
        """NightInProgress, saying why, unless RMS is done with this night."""
        if self.ftpdetectinfo is None:
            raise NightInProgress(f"{self.root}: in progress (no FTPdetectinfo yet)")
        if self.in_progress_marker is not None:
            raise NightInProgress(f"{self.root}: in progress (RMS's queue backup {self.in_progress_marker} remains)")

    def require_regular(self) -> None:
        """NotRegularFile, naming the first, when a file we would read is a link, FIFO, device..."""
        for name, kind in sorted(self.irregular.items()):
            raise NotRegularFile(self.root / name, kind)


def scan_night(root: Path) -> NightFolder:
    """List a night folder; NightVanished when it disappears while listed. Files to read that
    are no regular files are noted in ``irregular`` (the listing's file types: no extra call
    per file), so the night is refused before anything is read."""
    folder = NightFolder(Path(root))
    try:
        with os.scandir(root) as listing:
            entries = {entry.name: entry for entry in listing}
    except FileNotFoundError:
        raise NightVanished(f"{root}: the folder disappeared (RMS housekeeping?)") from None
    names = sorted(entries)
    candidates = []
    for name in names:
        if name.startswith(QUEUE_BACKUP_PREFIX) and name.endswith(".pickle"):
            folder.in_progress_marker = name
        elif parse_ff_name(name):
            folder.ff[name] = folder.root / name
        elif parse_fr_name(name):
            folder.fr.append(folder.root / name)
        elif (kind := night_file_type(name)) is not None:
            folder.night_files.append((folder.root / name, kind))
            if kind == "rms:ftpdetectinfo":
                candidates.append(name)
    if candidates:
        # RMS's own rule when several remain: the one of the folder's station (never a CAMS-style copy).
        station = folder.root.name.split("_")[0]
        chosen = next((c for c in candidates if ftpdetectinfo_night(c).split("_")[0] == station), candidates[0])
        folder.ftpdetectinfo = chosen
        folder.night = ftpdetectinfo_night(chosen)
        # Other FTPdetectinfo files (another station's) are not this night's answer.
        folder.night_files = [(p, k) for p, k in folder.night_files if k != "rms:ftpdetectinfo" or p.name == chosen]
    kept = [*folder.ff, *(p.name for p in folder.fr), *(p.name for p, _ in folder.night_files)]
    for name in kept:
        try:
            if not entries[name].is_file(follow_symlinks=False):
                folder.irregular[name] = _describe(folder.root / name)
        except FileNotFoundError:
            continue  # gone since listed: the open will say so
    return folder


def _describe(path: Path) -> str:
    """What a file that is not regular is, for the refusal: a dangling link named as such."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) and not path.exists():
        return "a dangling symbolic link"
    return file_kind(mode)


def is_night_folder(path: Path) -> bool:
    return path.is_dir() and parse_night_name(path.name) is not None


def find_nights(path: Path) -> list[Path]:
    """Night folders under ``path``: the folder itself when it is a night, else those of an RMS
    data folder (ArchivedFiles preferred over CapturedFiles for the same night), else any
    night folders directly inside it. Sorted by night name, oldest first."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: not a folder (give a night folder or RMS's data folder)")
    parents = [path / p for p in NIGHT_PARENTS if (path / p).is_dir()]
    if not parents:
        if is_night_folder(path) or (path / ".config").is_file() or \
                any(f.startswith("FTPdetectinfo_") for f in os.listdir(path)):
            return [path]  # a night folder (perhaps a copy under a name of its own)
        parents = [path]
    chosen: dict[str, Path] = {}
    for parent in parents:  # ArchivedFiles first: setdefault keeps it
        for child in sorted(parent.iterdir()):
            if is_night_folder(child):
                chosen.setdefault(child.name, child)
    return [chosen[name] for name in sorted(chosen)]


def in_progress_elsewhere(night: Path) -> str | None:
    """RMS's queue backup in the night's other folder (Captured vs Archived), if any."""
    if night.parent.name not in NIGHT_PARENTS:
        return None
    for parent in NIGHT_PARENTS:
        other = night.parent.parent / parent / night.name
        if other != night and other.is_dir():
            for name in os.listdir(other):
                if name.startswith(QUEUE_BACKUP_PREFIX) and name.endswith(".pickle"):
                    return f"{other}: in progress (RMS's queue backup {name} remains)"
    return None
