"""Where a benchmark run keeps its data: one temp directory, one embedded PostgreSQL.

Every database of a run (the central archive, each camera node, the raw-SQL scratch one) lives
on one embedded server under ``<workdir>/pg``, so ours and the baselines share a PostgreSQL
with the same settings (fsync on). The work directory sits under ``bench/work/`` (on the
repository's disk, not a tmpfs: fsync must cost what it costs on a real node) and is removed
at the end unless ``--keep``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from meteorpi_db import Config, MeteorDatabase
from meteorpi_db import embedded
from meteorpi_db.database import embedded_url

WORK_ROOT = Path(__file__).resolve().parent / "work"
REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("meteorpi_model", "meteorpi_db", "meteorpi_export", "meteorpi_rms", "meteorpi_server")


def bytecode_env(root: Path) -> dict[str, str]:
    """pip compiles a package's bytecode when it installs it, so a node's ``meteorpi`` never
    compiles at start. Where PYTHONDONTWRITEBYTECODE is set (this machine, some CI images) every
    child would compile every module at every start, ~0.2 s of CPU no user pays, charged to
    ours in figures timed from process start. Bytecode goes under the run's directory, compiled
    once by the Cluster."""
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(root / "pycache")}


@dataclass
class Site:
    """One meteorpi installation in the run: its database URL and data directory."""
    name: str
    url: str
    data_dir: Path

    @property
    def files_dir(self) -> Path:
        """The file store (``<data_dir>/files``, where ``meteorpi`` commands look for it)."""
        return self.data_dir / "files"

    def env(self) -> dict[str, str]:
        """Environment for a ``meteorpi`` subprocess acting as this site, with its bytecode as
        an installed node has it (see ``bytecode_env``)."""
        return {"METEORPI_DATABASE_URL": self.url, "METEORPI_DATA_DIR": str(self.data_dir),
                "METEORPI_LOGGING_LEVEL": "WARNING", **bytecode_env(self.data_dir.parent)}

    def open(self) -> MeteorDatabase:
        """A MeteorDatabase on this site (the caller closes it)."""
        config = Config(data_dir=str(self.data_dir))
        config.database.url = self.url
        return MeteorDatabase(url=self.url, file_store_path=self.files_dir, config=config)


class Cluster:
    """The run's work directory and embedded PostgreSQL; ``site(name)`` makes a database."""

    def __init__(self, keep: bool = False):
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=WORK_ROOT))
        self.keep = keep
        self.pg_dir = self.root / "pg"
        self._server: embedded.EmbeddedPostgres | None = None

    def __enter__(self) -> "Cluster":
        self._server = embedded.attach(self.pg_dir)
        subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPOSITORY / p) for p in PACKAGES)],
                       env={**os.environ, **bytecode_env(self.root)}, check=True, capture_output=True, timeout=300)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop PostgreSQL (we are its last client) and remove the work directory unless kept."""
        if self._server is not None:
            self._server.detach()
            self._server = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def site(self, name: str) -> Site:
        """Database ``name`` (created if missing) with its own data directory."""
        data_dir = self.root / name
        (data_dir / "files").mkdir(parents=True, exist_ok=True)
        return Site(name, embedded_url(self.pg_dir, name), data_dir)

    def postgres_version(self) -> str:
        """``SELECT version()`` of the run's server, for the results file."""
        import psycopg2
        conn = psycopg2.connect(self._server.uri("postgres"), connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version()")
                return cur.fetchone()[0].split(",")[0]
        finally:
            conn.close()

    def scratch(self, name: str) -> Path:
        """An empty directory of the run (e.g. an rsync destination)."""
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path
