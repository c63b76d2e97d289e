"""The rsync baselines: ``rsync -a [--fsync]`` into an rsync daemon on loopback.

Why a daemon and not ``rsync src dst`` on one machine: a local copy skips the network and the
protocol; a daemon on 127.0.0.1 is what a camera pushing to an archive would run, and it can be
reached through the link emulator exactly like our server. ``--fsync`` (rsync >= 3.2.4) makes
the receiver fsync every file, which our server does before a file counts as held, so the
headline baseline is as durable as we are.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .harness import NotAvailable

INSTALL_HINT = "install rsync >= 3.2.4: apt-get install -y rsync (Debian/Ubuntu)"
START_TIMEOUT_SECONDS = 10.0
TRANSFER_TIMEOUT_SECONDS = 3600


def ensure_rsync(install: bool = True) -> str:
    """The rsync binary, installed with apt-get when missing and we are root on Debian.

    Raises NotAvailable with the one-line hint when it cannot be had or is too old for --fsync.
    """
    path = shutil.which("rsync")
    if path is None and install and shutil.which("apt-get") and _is_root():
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "rsync"]):
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=600, check=False)
        path = shutil.which("rsync")
    if path is None:
        raise NotAvailable(INSTALL_HINT)
    if rsync_version() < (3, 2, 4):
        raise NotAvailable(f"rsync {'.'.join(map(str, rsync_version()))} lacks --fsync; {INSTALL_HINT}")
    return path


def _is_root() -> bool:
    import os
    return os.geteuid() == 0


def rsync_version() -> tuple[int, ...]:
    out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"version\s+(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = START_TIMEOUT_SECONDS, proc: subprocess.Popen | None = None) -> None:
    """Until something accepts on 127.0.0.1:port (or the process died, or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class RsyncDaemon:
    """``rsync --daemon --no-detach`` on 127.0.0.1 with one writable module ``bench``.

    ``reset()`` empties the module's directory, so each run starts into an empty destination.
    """

    MODULE = "bench"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.dest = workdir / "dest"
        self.port = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "RsyncDaemon":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dest.mkdir(exist_ok=True)
        conf = self.workdir / "rsyncd.conf"
        # As root the daemon would write as "nobody"; keep the invoking user instead.
        identity = "    uid = 0\n    gid = 0\n" if _is_root() else ""
        conf.write_text(f"pid file = {self.workdir / 'rsyncd.pid'}\n"
                        "use chroot = no\n"
                        f"log file = {self.workdir / 'rsyncd.log'}\n"
                        f"[{self.MODULE}]\n"
                        f"    path = {self.dest}\n"
                        "    read only = no\n" + identity)
        self.port = free_port()
        self._proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
             f"--port={self.port}"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, proc=self._proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def reset(self) -> None:
        """Empty the destination (outside any timing)."""
        shutil.rmtree(self.dest, ignore_errors=True)
        self.dest.mkdir()

    def url(self, port: int | None = None) -> str:
        """The module's URL, on the daemon's port or on ``port`` (a link emulator in front)."""
        return f"rsync://127.0.0.1:{port or self.port}/{self.MODULE}/"


# What a node's file store holds beside the night's files: bytes in flight, prefixes of cut
# uploads and the exporter's lock. None is part of the night, and the copy is checked file by file.
STORE_EXTRAS = ["--exclude=/tmp/", "--exclude=/partial/", "--exclude=/exporter.lock"]


def timed_push(source: Path, url: str, fsync: bool) -> float:
    """Seconds for ``rsync -a [--fsync] source/ url`` (a node's file store: its files alone);
    raises on a failed transfer."""
    argv = ["rsync", "-a"] + (["--fsync"] if fsync else []) + STORE_EXTRAS + [f"{source}/", url]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TRANSFER_TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return elapsed


def count_files(root: Path) -> int:
    """Regular files under ``root`` (to check a baseline copied everything)."""
    return sum(1 for p in root.rglob("*") if p.is_file())
