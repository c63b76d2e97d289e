"""Configuration: one typed object, loaded once from config.yml and the environment.

Precedence (last wins): built-in defaults (documented in the repository's config.yml), the YAML
file (``--config PATH`` or ``METEORPI_CONFIG``), then environment variables: every key
``section.key`` is ``METEORPI_SECTION_KEY`` (``METEORPI_DATABASE_URL``), top-level keys are
``METEORPI_KEY`` (``METEORPI_DATA_DIR``). Unknown keys (in the file, and ``METEORPI_*`` variables
that name no key), duplicate keys, wrong types and numbers outside their declared range are
one-line errors, raised here when the configuration is loaded: a typo in a camera's config never
silently falls back to a default, and a bad value never surfaces later as a crash or a spin.
Messages about a secret-bearing key (``SECRET_KEYS``) never quote its value.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

DEFAULT_DATA_DIR = "~/.local/share/meteorpi"
# Keys whose values are credentials: no message ever quotes them (database.url may hold a password).
SECRET_KEYS = frozenset({"database.url", "notify.smtp_password"})
# METEORPI_* variables that are not settings, so the check for misspelt ones leaves them alone:
# the configuration file's path, and those the test suite reads for itself.
NOT_SETTINGS = frozenset({"METEORPI_CONFIG", "METEORPI_TEST_DATABASE_URL", "METEORPI_SCREENSHOTS",
                          "METEORPI_RELIABILITY_RESULTS"})
YEAR_SECONDS = 365 * 24 * 3600  # the longest duration any setting takes: beyond it, a typo


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting: ``low`` (excluded when ``above``) up to ``high``."""
    low: float
    high: float | None = None
    above: bool = False  # low itself is not allowed (a timeout of 0 is no timeout at all)

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if value < self.low or (self.above and value == self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = f"more than {_number(self.low)}" if self.above else f"at least {_number(self.low)}"
        if self.high is None:
            return low
        if self.above:
            return f"{low} and at most {_number(self.high)}"
        return f"between {_number(self.low)} and {_number(self.high)}"


def _number(x: float) -> str:
    """A bound as people write it: 1000000, not 1e+06."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def setting(default: Any, low: float, high: float | None = None, above: bool = False) -> Any:
    """A numeric setting with its declared valid range, checked by ``check_config`` when the
    configuration is loaded (one place: the code using a value may rely on its range)."""
    return field(default=default, metadata={"range": Range(low, high, above)})


def seconds(default: float, low: float = 0, above: bool = True) -> Any:
    """A duration in seconds: more than 0 (unless ``above=False``) and at most a year."""
    return setting(default, low, YEAR_SECONDS, above)


@dataclass
class DatabaseConfig:
    url: str | None = None          # None: the embedded PostgreSQL under data_dir
    pool_max: int = setting(20, 1, 1000)              # connections per process


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = setting(12080, 0, 65535)  # 0 picks a free one (as --port does)
    workers: int = setting(2, 1, 64)                # gunicorn worker processes (gevent: one OS thread each)
    threads: int = setting(8, 1, 1024)                # real threads per worker for fsyncs and password hashes
    worker_connections: int = setting(1000, 1, 1_000_000)  # connections each worker holds at once (greenlets)
    public_read: bool = False       # open the read API to anonymous clients
    entity_cache_size: int = setting(1000, 0, 10_000_000)   # entities per worker kept for cached_entity requests
    max_body_bytes: int = setting(16 * 1024 * 1024, 1, 2 ** 40)           # JSON bodies of /import
    max_upload_bytes: int = setting(16 * 1024 * 1024 * 1024, 1, 2 ** 50)  # one file's bytes on /import/data
    max_failed_uploads: int = setting(3, 1, 1_000_000)     # refused uploads of a file by one account before its entity is refused
    min_free_bytes: int = setting(1024 ** 3, 0, 2 ** 50)  # an upload that would leave less free on the store's disk: 507
    timeout_seconds: int = seconds(120)      # a read or write waiting longer than this fails
    header_timeout_seconds: float = seconds(20.0)  # whole request head (and TLS handshake); keep-alive idle
    body_timeout_seconds: float = seconds(60.0)    # a body's deadline, extended as its bytes arrive:
    body_min_rate: int = setting(500, 0, above=True)              # one more second per this many bytes received
    tls_cert: str | None = None     # PEM certificate chain: serve HTTPS (with tls_key)
    tls_key: str | None = None      # PEM private key of tls_cert
    auth_cache_seconds: float = seconds(60.0, above=False)  # a verified login is remembered this long (0: never)


@dataclass
class ExportConfig:
    interval_seconds: int = seconds(300)
    defer_on_failure_seconds: int = seconds(600, above=False)
    max_failures_before_disable: int = setting(10, 0, 1_000_000)  # 0: never disable
    connect_timeout_seconds: float = seconds(10.0)
    read_timeout_seconds: float = seconds(120.0)  # for an answer to begin, and for all of its body
    max_repeats: int = setting(5, 1, 1_000_000)            # the same request answered the same way this often: failed
    fast_path: bool = True          # use protocol version 2 (batches) when the target offers it
    ca_bundle: str | None = None    # PEM CA certificates trusted for https targets (None: the system's)


@dataclass
class FeedConfig:
    retention_days: float = setting(30.0, 0, 36_500, above=True)    # feed rows kept; an older cursor must start over
    heartbeat_seconds: float = seconds(15.0)  # a comment line on quiet streams, so proxies keep them
    max_wait_seconds: int = seconds(60, above=False)      # longest ?wait= a long-poll may ask for
    stream_seconds: int = seconds(3600)      # a stream ends after this; EventSource resumes by itself


@dataclass
class NotifyConfig:
    enabled: bool = True            # `meteorpi serve` also runs matching and delivery
    base_url: str = "http://127.0.0.1:12080"  # links in notifications point here
    coincidence_seconds: float = seconds(3.0, above=False)  # events this close in time ...
    coincidence_km: float = setting(300.0, 0, 40_075)   # ... from cameras this close form a coincidence group
    allow_private_targets: bool = False  # webhooks to loopback/private addresses (tests, LANs)
    connect_timeout_seconds: float = seconds(5.0)
    read_timeout_seconds: float = seconds(10.0)
    poll_seconds: float = seconds(5.0)       # look for work this often even without a NOTIFY
    retry_scale: float = setting(1.0, 0, 1000, above=True)        # multiplies the retry schedule (tests shrink it)
    max_attempts: int = setting(8, 1, 1000)           # then a delivery is given up as failed
    rate_window_seconds: float = seconds(3600.0)  # max_per_hour counts within this window
    absence_check_seconds: float = seconds(300.0)
    smtp_host: str = "localhost"
    smtp_port: int = setting(25, 1, 65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "meteorpi@localhost"
    smtp_starttls: bool = False
    # Nothing is mailed to an address that did not agree: every e-mail watch waits for its link.
    confirm_hours: float = setting(24.0, 0, 24 * 365, above=True)  # an unopened link expires (its watch is removed)
    max_pending_anonymous: int = setting(100, 0, 1_000_000)  # unopened links asked for without login, archive-wide
    max_pending_per_user: int = setting(20, 0, 1_000_000)    # unopened links one signed-in user may have asked for


@dataclass
class LoggingConfig:
    level: str = "INFO"


@dataclass
class Config:
    data_dir: str = DEFAULT_DATA_DIR
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def data_path(self) -> Path:
        """The data directory, user-expanded and absolute."""
        return Path(os.path.expanduser(self.data_dir)).absolute()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _shown(value: Any, where: str) -> str:
    """How a message may show ``value`` of key ``where``: never for a secret-bearing key, nor a
    list or mapping (which may hold anything); a string only with any URL password redacted."""
    if where in SECRET_KEYS or not isinstance(value, (str, int, float, bool, type(None))):
        return type(value).__name__
    if isinstance(value, str):
        from meteorpi_model.urls import redact_url
        value = redact_url(value)
    return f"{type(value).__name__} {value!r}"


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check a YAML value against the declared type; ints are accepted where floats are."""
    allowed = tuple(t for t in (str, int, float, bool) if t.__name__ in str(typ))
    allowed += (type(None),) if "None" in str(typ) else ()  # `url: null` as config.yml shows it
    if "float" in str(typ) and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int YAML reads fine but no float holds
            raise ConfigError(f"{where}: the number is too large") from None
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where}: expected {typ}, got a boolean")
    if not isinstance(value, allowed):
        hint = " (quote it in YAML)" if str in allowed and isinstance(value, (int, float)) else ""
        raise ConfigError(f"{where}: expected {typ}, got {_shown(value, where)}{hint}")
    if isinstance(value, str) and "\x00" in value:  # no path or URL holds one; os calls would raise
        raise ConfigError(f"{where}: must not contain a NUL character")
    return value


def _apply(target: Any, values: Mapping, prefix: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys")
    known = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown configuration key {where!r} (known: {', '.join(sorted(known))})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value or {}, f"{where}.")
        else:
            setattr(target, key, _coerce(value, known[key].type, where))


def _env_names() -> dict[str, tuple[str, ...]]:
    """Every setting's environment variable and the key path it sets."""
    names: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(Config):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            for g in dataclasses.fields(sub):
                names[f"METEORPI_{f.name}_{g.name}".upper()] = (f.name, g.name)
        else:
            names[f"METEORPI_{f.name}".upper()] = (f.name,)
    return names


def _field_type(path: tuple[str, ...]) -> str:
    target: Any = Config()
    for name in path[:-1]:
        target = getattr(target, name)
    return str({f.name: f.type for f in dataclasses.fields(target)}[path[-1]])


def _from_env(env: Mapping[str, str]) -> dict:
    """The settings the environment gives. A ``METEORPI_*`` variable that names no setting is an
    error, not ignored: METEORPI_DATABASE_ULR would otherwise leave the embedded database in
    use without a word."""
    names = _env_names()
    for name in sorted(env):
        if name.startswith("METEORPI_") and name not in names and name not in NOT_SETTINGS:
            import difflib
            close = difflib.get_close_matches(name, [*names, *NOT_SETTINGS], n=1)
            hint = f"; did you mean {close[0]}?" if close else " (see config.yml for every key)"
            raise ConfigError(f"unknown environment variable {name}: it names no configuration key{hint}")
    out: dict = {}
    for name, path in names.items():
        if name in env:
            value = _parse_env(env[name], name, _field_type(path)) if len(path) > 1 else env[name]
            target = out
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return out


YAML_NULLS = ("", "~", "null", "Null", "NULL")


def _parse_env(text: str, name: str, typ: str) -> Any:
    """An environment value as its setting's declared type reads it. A string setting takes the
    text as it is (an all-digit password stays a string; YAML null unsets an optional one), so
    no text of it ever needs parsing (and so quoting in an error); numbers and booleans are
    read as YAML scalars."""
    if "str" in typ:
        return None if text.strip() in YAML_NULLS and "None" in typ else text
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{name}: cannot parse {text!r}") from None
    # Anything but a scalar stays text, for _coerce to refuse with the text shown.
    return value if isinstance(value, (bool, int, float, type(None))) else text


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key given twice in one mapping: PyYAML keeps the later
    silently, so an edit near the top of a long file could be overridden unseen further down."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base class says so
                continue
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str | os.PathLike) -> Any:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"configuration file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as e:
        raise ConfigError(f"configuration file {path}: key {str(e.key)!r} given twice "
                          f"(again at line {e.line})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"configuration file {path} is not valid YAML{where}") from None


# Reasons libpq gives for a DSN it cannot parse that name an option, never the text around it
# (others quote the DSN, password and all, so they are not passed on).
_SAFE_DSN_REASON = re.compile(r'invalid (URI query parameter|connection option):? "[A-Za-z0-9_]*"')


def check_database_url(url: str, where: str = "database.url") -> None:
    """Refuse a URL libpq cannot parse, here and on one line without its text: psycopg2's own
    error quotes the whole DSN, password included."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme and scheme.group(1).lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"{where}: scheme {scheme.group(1)!r} is not PostgreSQL's "
                          "(postgresql://user:password@host:port/database)")
    try:
        parse_dsn(url)
    except ProgrammingError as e:
        reason = _SAFE_DSN_REASON.search(str(e))
        raise ConfigError(f"{where}: not a PostgreSQL URL (postgresql://user:password@host:port/database) "
                          f"nor a key=value connection string{': ' + reason.group(0) if reason else ''}") from None


def _check_ranges(target: Any, prefix: str) -> None:
    for f in dataclasses.fields(target):
        value = getattr(target, f.name)
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{prefix}{f.name}.")
        elif "range" in f.metadata and value not in f.metadata["range"]:
            raise ConfigError(f"{prefix}{f.name}: must be {f.metadata['range']}, got {value!r}")


def check_config(cfg: Config) -> Config:
    """Every check of values beyond their type, in one place: each numeric setting's declared
    range, a data directory that is not empty, a database URL libpq can parse, a log level.
    Run on every loaded configuration; ``meteorpi serve`` runs it again on what it is given."""
    if not cfg.data_dir.strip():
        raise ConfigError("data_dir: must not be empty (unset METEORPI_DATA_DIR for the default)")
    if cfg.database.url is not None:
        check_database_url(cfg.database.url)
    _check_ranges(cfg, "")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"logging.level: unknown level {cfg.logging.level!r}")
    return cfg


def prepare_data_dir(path: Path) -> Path:
    """Create the data directory if needed and prove it writable, or say on one line why it
    cannot be used (a file, a path under a file, /proc, no permission) before anything is
    written into it."""
    import tempfile
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise ConfigError(f"data_dir: {path} is not a directory") from None
    except OSError as e:
        raise ConfigError(f"data_dir: cannot create or write in {path}: {e.strerror or e}") from None
    return path


def config_from_dict(data: Mapping) -> Config:
    """A configuration from ``Config.as_dict()``'s form (how ``meteorpi serve`` hands its own
    to the notifier process), checked like a YAML file."""
    cfg = Config()
    _apply(cfg, data, "")
    return check_config(cfg)


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``METEORPI_*`` environment variables."""
    env = os.environ if env is None else env
    cfg = Config()
    path = path or env.get("METEORPI_CONFIG")
    if path:
        _apply(cfg, _read_yaml(path), "")
    _apply(cfg, _from_env(env), "")
    return check_config(cfg)
