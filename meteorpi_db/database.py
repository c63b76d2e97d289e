"""MeteorDatabase: the one object through which meteorpi reads and writes what cameras record.

PostgreSQL holds the records, the file store holds the bytes. ``MeteorDatabase()`` follows the
configuration (the embedded server under the data directory unless ``database.url`` is set);
``MeteorDatabase(url=..., file_store_path=...)`` is explicit. Every public method runs in its own
transaction and may be called from several threads; the table families live in the mixins
(``statuses``, ``records``, ``imports``, ``batches``, ``searches``, ``users``, ``export_configs``, ``export_marking``,
``export_queue``, ``upload_failures``,
``registrations``, ``feed``, ``overview``, ``watches``, ``coincidences``, ``notifications``, ``matcher``),
each with its SQL beside it.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping

import psycopg2
import psycopg2.errors

from meteorpi_model.urls import redact_url

from .batches import BatchStore
from .config import Config, load_config, prepare_data_dir
from .errors import ConfigError, StorageUnavailable
from .export_configs import ExportConfigStore
from .export_marking import ExportMarkingStore
from .export_queue import ExportQueueStore
from .coincidences import CoincidenceStore
from .feed import FeedStore
from .file_store import FileStore
from .imports import ImportStore
from .matcher import MatcherStore
from .migrations import migrate
from .overview import OverviewStore
from .notifications import NotificationStore
from .pool import ConnectionPool
from .records import RecordStore
from .registrations import RegistrationStore
from .searches import SearchStore
from .statuses import StatusStore
from .upload_failures import UploadFailureStore
from .users import UserStore
from .watches import WatchStore

log = logging.getLogger("meteorpi.db")
DEFAULT_DATABASE = "meteorpi"
# Truncated by clear_database(); schema_version stays.
TABLES = ("delivery_attempt", "delivery", "notification", "coincidence_member", "coincidence_group",
          "watch_cursor", "confirmation_pending", "watch", "feed_log", "feed_horizon", "upload_failure", "export_task", "export_config", "import_record", "event_file", "event_meta", "event",
          "file_meta", "file_record", "status_region", "camera_status", "app_user")


def embedded_url(data_dir: str | os.PathLike, database: str = DEFAULT_DATABASE) -> str:
    """Start or attach to the embedded server under ``data_dir``; URL of ``database`` on it
    (created if missing)."""
    from . import embedded
    server = embedded.attach(data_dir)
    ensure_database(server.uri("postgres"), database)
    return server.uri(database)


def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` unless it exists (two processes racing to create it both succeed)."""
    try:
        conn = psycopg2.connect(admin_url, connect_timeout=10)
    except psycopg2.OperationalError as e:
        raise StorageUnavailable(f"database unreachable: {str(e).strip()}", e) from e
    except psycopg2.ProgrammingError:  # unparseable DSN: libpq's message quotes its password
        raise ConfigError("database URL: not a PostgreSQL URL or key=value connection string") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": database})
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{database}"')
                except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                    pass
    finally:
        conn.close()


class MeteorDatabase(StatusStore, RecordStore, ImportStore, BatchStore, SearchStore, UserStore, ExportConfigStore,
                     ExportMarkingStore, ExportQueueStore,
                     RegistrationStore, UploadFailureStore, FeedStore, OverviewStore, WatchStore,
                     CoincidenceStore, NotificationStore, MatcherStore):
    """Records in PostgreSQL, bytes in the file store; one transaction per public method."""

    def __init__(self, url: str | None = None, file_store_path: str | os.PathLike | None = None,
                 config: Config | None = None):
        self.config = config or load_config()
        data_dir = self.config.data_path
        if file_store_path is None:
            prepare_data_dir(data_dir)  # before the embedded server or the file store write there
        if url is None:
            url = self.config.database.url or embedded_url(data_dir)
        self.url = url
        self.file_store = FileStore(file_store_path or data_dir / "files")
        self.pool = ConnectionPool(url, maxconn=self.config.database.pool_max)
        self.schema_version = migrate(self.pool)

    def transaction(self):
        """``with db.transaction() as cur:`` — commit on success, roll back on error."""
        return self.pool.transaction()

    def close(self) -> None:
        """Close pooled connections (the embedded server stops when its last client exits)."""
        self.pool.close()

    def __repr__(self) -> str:
        return f"MeteorDatabase(url={redact_url(self.url)!r}, file_store={str(self.file_store.root)!r})"

    def clear_database(self) -> None:
        """Delete every row and every stored file. For tests: there is no undo."""
        with self.transaction() as cur:
            cur.execute("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE")
        self.file_store.clear()

    # -- file bytes -------------------------------------------------------------------------
    def file_path_for_id(self, file_id) -> Path | None:
        """Where the held bytes of ``file_id`` are, or None when they are not held."""
        from meteorpi_model import as_uuid
        file_id = as_uuid(file_id)
        record = self.get_file(file_id)
        if record is not None:
            path = self.file_store.path(file_id, record.md5)
            return path if path.is_file() else None
        return self.file_store.find(file_id)

    def has_file_data(self, file_id, md5: str | None = None) -> bool:
        """Whether verified bytes of ``file_id`` are held (with ``md5`` when given)."""
        from meteorpi_model import as_uuid
        if md5 is not None:
            return self.file_store.has(as_uuid(file_id), md5)
        return self.file_path_for_id(file_id) is not None

    # What import receivers take in. They go through these, not the file store itself: where and
    # how bytes are kept (temp names, flushing, partial prefixes of cut uploads) is this
    # package's business, and a receiver written for another store keeps working.
    def missing_file_data(self, file_data: Iterable[tuple[uuid.UUID, str]],
                          settle: bool = False) -> list[tuple[uuid.UUID, str]]:
        """The (file_id, md5) pairs whose bytes are not held, in order; with ``settle``, once
        uploads of them still in progress have ended (FileStore.settle: a check right after a
        cut upload then sees what that upload kept)."""
        missing = [(file_id, md5) for file_id, md5 in file_data if not self.file_store.has(file_id, md5)]
        if settle and missing:
            self.file_store.settle([file_id for file_id, _ in missing])
            missing = [(file_id, md5) for file_id, md5 in missing if not self.file_store.has(file_id, md5)]
        return missing

    def resumable_uploads(self, file_data: Iterable[tuple[uuid.UUID, str]], owner: str) -> dict[uuid.UUID, int]:
        """How many bytes of each file ``owner``'s cut uploads left here (FileStore.resumable)."""
        return self.file_store.resumable(file_data, owner)

    def make_room_for_upload(self, incoming: int) -> None:
        """StoreFull (answered 507) when ``incoming`` more bytes would leave the file store's disk
        with less than ``server.min_free_bytes`` free: asked before an upload's bytes are read."""
        self.file_store.make_room(incoming, self.config.server.min_free_bytes)

    def store_file_data(self, file_id: uuid.UUID, md5: str, chunks: Iterable[bytes] | BinaryIO,
                          max_bytes: int | None = None) -> int:
        """Keep one file's bytes as they arrive, checked against ``md5`` (FileStore.store_stream)."""
        return self.file_store.store_stream(file_id, md5, chunks, max_bytes=max_bytes)

    def store_uploaded_files(self, manifest: Iterable[tuple[uuid.UUID, str, int]], stream: BinaryIO,
                      refused: Mapping[uuid.UUID, str] | None = None, offsets: Mapping[uuid.UUID, int] | None = None,
                      owner: str | None = None) -> dict[uuid.UUID, str | None]:
        """Keep several files sent back to back on ``stream`` (FileStore.store_many)."""
        return self.file_store.store_many(manifest, stream, refused, offsets=offsets, owner=owner)
