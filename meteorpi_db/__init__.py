"""meteorpi_db: PostgreSQL storage, the file store and the export queue (the exporter is meteorpi_export).

The public face is ``MeteorDatabase``; configuration is ``load_config()``.
"""
from .config import Config, load_config
from .database import MeteorDatabase, embedded_url
from .errors import (Conflict, ConfigError, DatabaseError, EmbeddedServerError,
                     FileStoreError, NotFound, StorageUnavailable, TooManyPending)
from .file_store import (FileStore, FileTooLarge, Md5Mismatch, ResendFromStart, SourceNotRegular, StoreFull, StoreWriteFailed,
                         TruncatedUpload, UploadCut)
from .imports import AlreadyHeld, ImportOutcome, NeedsBytes, NeedsStatus, Refused, Stored
from .records import md5_contradiction

__all__ = ["AlreadyHeld", "Config", "ConfigError", "Conflict", "DatabaseError", "EmbeddedServerError",
           "FileStore", "FileStoreError", "FileTooLarge", "ImportOutcome", "Md5Mismatch",
           "MeteorDatabase", "NeedsBytes", "NeedsStatus", "NotFound", "Refused", "ResendFromStart", "SourceNotRegular",
           "StorageUnavailable", "Stored", "StoreFull", "StoreWriteFailed", "TooManyPending", "TruncatedUpload", "UploadCut",
           "embedded_url", "load_config", "md5_contradiction"]
