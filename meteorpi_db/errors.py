"""Exceptions raised by meteorpi_db.

    MeteorpiError                     (meteorpi_model) root of everything meteorpi raises
    ├── ValidationError               (meteorpi_model) bad input, names the field path
    ├── ConfigError                   configuration file or environment is wrong: fix it, not the storage
    └── DatabaseError                 something about storage went wrong
        ├── StorageUnavailable        PostgreSQL cannot be reached: retry later (HTTP 503)
        ├── EmbeddedServerError       the embedded PostgreSQL would not start
        ├── NotFound                  the named entity / user / export does not exist
        ├── Conflict                  the write contradicts what is held (e.g. time outside status)
        ├── TooManyPending            an e-mail watch over a limit on unopened confirmation links (HTTP 429)
        └── FileStoreError            bytes could not be stored or did not match their MD5
            ├── Md5Mismatch, FileTooLarge, TruncatedUpload   (file_store) what was sent is wrong
            └── StoreWriteFailed      (file_store) the store's disk refused a write: full, failing

The exporter's own (``ExporterBusy``) are meteorpi_export's.
Driver exceptions are kept as ``.original`` and chained (``raise ... from e``).
"""
from meteorpi_model.errors import MeteorpiError


class ConfigError(MeteorpiError):
    """The configuration is wrong; the message names the key. Not a DatabaseError: retrying or
    checking the database does not help, the file or the environment must change."""


class DatabaseError(MeteorpiError):
    """Root of meteorpi_db's storage exceptions."""

    def __init__(self, message: str, original: BaseException | None = None):
        super().__init__(message)
        self.original = original


class StorageUnavailable(DatabaseError):
    """PostgreSQL cannot be reached right now; the same call may succeed later."""


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL server could not be initialised or started."""


class NotFound(DatabaseError):
    """The named thing does not exist."""


class Conflict(DatabaseError):
    """The write contradicts what is already held."""


class TooManyPending(DatabaseError):
    """An e-mail watch refused because confirmation links already wait: one for its address, or
    as many as the archive allows (anonymously, or for one user). Retrying later may succeed."""


class FileStoreError(DatabaseError):
    """File bytes could not be stored, or did not match their MD5."""
