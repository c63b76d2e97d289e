"""Configuration: one typed object, loaded once from config.yml and the environment.

Precedence (last wins): built-in defaults (documented in the repository's config.yml), the YAML
file (``--config PATH`` or ``METEORPI_CONFIG``), then environment variables: every key
``section.key`` is ``METEORPI_SECTION_KEY`` (``METEORPI_DATABASE_URL``), top-level keys are
``METEORPI_KEY`` (``METEORPI_DATA_DIR``). Unknown keys and wrong types are one-line errors, so
a typo in a camera's config never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

DEFAULT_DATA_DIR = "~/.local/share/meteorpi"


@dataclass
class DatabaseConfig:
    url: str | None = None          # None: the embedded PostgreSQL under data_dir
    pool_max: int = 20              # connections per process


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 12080
    workers: int = 2                # gunicorn worker processes (gevent: one OS thread each)
    threads: int = 8                # real threads per worker for fsyncs and password hashes
    worker_connections: int = 1000  # connections each worker holds at once (greenlets)
    public_read: bool = False       # open the read API to anonymous clients
    entity_cache_size: int = 1000   # entities per worker kept for cached_entity requests
    max_body_bytes: int = 16 * 1024 * 1024           # JSON bodies of /import
    max_upload_bytes: int = 16 * 1024 * 1024 * 1024  # one file's bytes on /import/data
    max_failed_uploads: int = 3     # refused uploads of a file by one account before its entity is refused
    timeout_seconds: int = 120      # a read or write waiting longer than this fails
    header_timeout_seconds: float = 20.0  # whole request head (and TLS handshake); keep-alive idle
    body_timeout_seconds: float = 60.0    # a body's deadline, extended as its bytes arrive:
    body_min_rate: int = 500              # one more second per this many bytes received
    tls_cert: str | None = None     # PEM certificate chain: serve HTTPS (with tls_key)
    tls_key: str | None = None      # PEM private key of tls_cert
    auth_cache_seconds: float = 60.0  # a verified login is remembered this long (0: never)


@dataclass
class ExportConfig:
    interval_seconds: int = 300
    defer_on_failure_seconds: int = 600
    max_failures_before_disable: int = 10
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    max_repeats: int = 5            # the same request answered the same way this often: failed
    fast_path: bool = True          # use protocol version 2 (batches) when the target offers it
    ca_bundle: str | None = None    # PEM CA certificates trusted for https targets (None: the system's)


@dataclass
class FeedConfig:
    retention_days: float = 30.0    # feed rows kept; an older cursor must start over
    heartbeat_seconds: float = 15.0  # a comment line on quiet streams, so proxies keep them
    max_wait_seconds: int = 60      # longest ?wait= a long-poll may ask for
    stream_seconds: int = 3600      # a stream ends after this; EventSource resumes by itself


@dataclass
class NotifyConfig:
    enabled: bool = True            # `meteorpi serve` also runs matching and delivery
    base_url: str = "http://127.0.0.1:12080"  # links in notifications point here
    coincidence_seconds: float = 3.0  # events this close in time ...
    coincidence_km: float = 300.0   # ... from cameras this close form a coincidence group
    allow_private_targets: bool = False  # webhooks to loopback/private addresses (tests, LANs)
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0
    poll_seconds: float = 5.0       # look for work this often even without a NOTIFY
    retry_scale: float = 1.0        # multiplies the retry schedule (tests shrink it)
    max_attempts: int = 8           # then a delivery is given up as failed
    rate_window_seconds: float = 3600.0  # max_per_hour counts within this window
    absence_check_seconds: float = 300.0
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "meteorpi@localhost"
    smtp_starttls: bool = False
    # Nothing is mailed to an address that did not agree: every e-mail watch waits for its link.
    confirm_hours: float = 24.0      # an unopened link expires (its watch is removed) after this
    max_pending_anonymous: int = 100  # unopened links asked for without login, archive-wide
    max_pending_per_user: int = 20   # unopened links one signed-in user may have asked for


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


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check a YAML value against the declared type; ints are accepted where floats are."""
    allowed = tuple(t for t in (str, int, float, bool) if t.__name__ in str(typ))
    allowed += (type(None),) if "None" in str(typ) else ()  # `url: null` as config.yml shows it
    if "float" in str(typ) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where}: expected {typ}, got a boolean")
    if not isinstance(value, allowed):
        raise ConfigError(f"{where}: expected {typ}, got {type(value).__name__} {value!r}")
    return value


def _apply(target: Any, values: Mapping, prefix: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys")
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


def _from_env(env: Mapping[str, str]) -> dict:
    out: dict = {}
    cfg = Config()
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub):
            for g in dataclasses.fields(sub):
                name = f"METEORPI_{f.name}_{g.name}".upper()
                if name in env:
                    out.setdefault(f.name, {})[g.name] = _parse_env(env[name], name)
        else:
            name = f"METEORPI_{f.name}".upper()
            if name in env:
                out[f.name] = env[name]
    return out


def _parse_env(text: str, name: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{name}: cannot parse {text!r}") from None
    # A URL or path that YAML would read as something else stays a string.
    return value if isinstance(value, (bool, int, float, type(None))) else text


def config_from_dict(data: Mapping) -> Config:
    """A configuration from ``Config.as_dict()``'s form (how ``meteorpi serve`` hands its own
    to the notifier process), checked like a YAML file."""
    cfg = Config()
    _apply(cfg, data, "")
    return cfg


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``METEORPI_*`` environment variables."""
    env = os.environ if env is None else env
    cfg = Config()
    path = path or env.get("METEORPI_CONFIG")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"configuration file {path} is not valid YAML{where}") from None
        _apply(cfg, data, "")
    _apply(cfg, _from_env(env), "")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"logging.level: unknown level {cfg.logging.level!r}")
    return cfg
