"""``meteorpi serve``: the import service under gunicorn, started programmatically.

Why gunicorn: pre-forked worker processes use every core for the MD5 and fsync work of uploads,
and SIGTERM is a graceful stop (requests in flight finish, exit status 0). Each worker is
``worker.MeteorWorker``: gevent, so a slow client or an open stream costs a greenlet rather than
a thread, with whole-request deadlines for request heads and bodies (see worker.py).
With ``server.tls_cert`` and ``server.tls_key`` it serves HTTPS itself.
The app is loaded in each worker after the fork (no preload), so every worker opens its own
database pool. With the embedded database the master attaches to it first and hands the
workers its URL: the server then outlives worker restarts and stops when the master exits.
The Flask development server is never used.
"""
from __future__ import annotations

import copy
import errno
import json
import logging
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger, SafeAtoms

from meteorpi_db import Config, ConfigError, embedded_url
from meteorpi_db.config import check_config
from meteorpi_model.logtext import EscapedFaults, escape_log_text

from .allocator import return_large_blocks
from .app import create_app
from .errors import ServeError
from .redact import redact_query, redact_uri

log = logging.getLogger("meteorpi.server")
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s"'
# Seconds a worker gets to finish requests in flight after SIGTERM.
GRACEFUL_TIMEOUT_SECONDS = 30


class MeteorGunicorn(BaseApplication):
    """gunicorn running ``create_app(config)`` in each worker process."""

    def __init__(self, config: Config, options: dict[str, Any]):
        self.meteor_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        return_large_blocks()  # in each worker: big request buffers go back to the system
        return create_app(self.meteor_config)


class EscapedAtoms(SafeAtoms):
    """The atoms of one access line, each string printed with its control characters and
    backslashes escaped (``escape_log_text``) and its double quotes as ``\\"`` (gunicorn's own
    rule, kept). Why: the client writes most atoms (the user name of any Basic header, valid
    login or not; the request line; the user agent; the referer; every ``{header}i`` and most
    ``{environ}e``) and a CR/LF, ESC or NUL in one would forge log lines or drive the terminal
    of whoever reads the log. Every atom is escaped, whoever wrote it, so an atom added to the
    format later cannot be forgotten. Escaped when the format asks for it, not before: only the
    atoms the format prints cost anything."""

    def __init__(self, atoms: dict):
        dict.__init__(self, atoms)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is None or isinstance(value, (int, float)):
            return value  # numbers stay numbers (a format may say %(D)d)
        return escape_log_text(value).replace('"', '\\"')


class RedactingLogger(Logger):
    """gunicorn's logger whose access lines never hold a secret of a URL (redact.py): a watch's
    confirmation link carries its ``?secret=``, and any route may be sent a token or password
    in its query. Every atom a format could print a URL or credentials through is redacted:
    the request line, the query string, the referer, and the same as environ or header atoms.
    And whatever a client sent is printed escaped (``EscapedAtoms``): one request, one line."""

    atoms_wrapper_class = EscapedAtoms

    def setup(self, cfg) -> None:
        """gunicorn's setup (run again on a configuration reload), and the error log's
        tracebacks written with their exception text escaped (``EscapedFaults``): a fault
        outside any view may quote what the client sent."""
        super().setup(cfg)
        if not any(isinstance(f, EscapedFaults) for f in self.error_log.filters):
            self.error_log.addFilter(EscapedFaults())

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        raw_uri = environ.get("RAW_URI") or ""
        if "?" in raw_uri:
            atoms["r"] = "%s %s %s" % (environ.get("REQUEST_METHOD"), redact_uri(raw_uri),
                                       environ.get("SERVER_PROTOCOL"))
        for key in ("q", "{query_string}e"):
            if atoms.get(key):
                atoms[key] = redact_query(atoms[key])
        for key in ("f", "{raw_uri}e", "{http_referer}e", "{referer}i", "{request_uri}e"):
            if atoms.get(key):
                atoms[key] = redact_uri(atoms[key])
        for key in ("{authorization}i", "{cookie}i", "{http_authorization}e", "{http_cookie}e"):
            if key in atoms:
                atoms[key] = "REDACTED"
        return atoms


def _end_streams_on_stop(worker) -> None:
    """gunicorn post_worker_init hook: on SIGTERM, end the feed's streams before draining, so
    a graceful stop takes as long as imports in flight, not as long as the longest stream."""
    meteor_app = worker.wsgi.extensions["meteorpi"]
    stop = worker.handle_exit

    def handle_exit(sig, frame):
        stop(sig, frame)
        if meteor_app._feed_hub is not None:
            # gevent runs this handler in its event loop's callback, where nothing may block
            # (starting a thread does): the streams are ended from a greenlet of their own.
            import gevent
            gevent.spawn(meteor_app._feed_hub.close_readers)
    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)


def gunicorn_options(config: Config, host: str, port: int, workers: int) -> dict[str, Any]:
    """gunicorn settings from the configuration (and the command line's overrides)."""
    check_config(config)  # ranges, again: a Config built in code has not been through load_config
    server = config.server
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "meteorpi_server.worker.MeteorWorker",
        "worker_connections": server.worker_connections,
        # gunicorn bounds each request head by its keep-alive time; MeteorWorker uses the exact
        # server.header_timeout_seconds, and a keep-alive of 0 would turn that bound off.
        "keepalive": max(1, math.ceil(server.header_timeout_seconds)),
        "timeout": server.timeout_seconds,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "preload_app": False,
        "loglevel": config.logging.level.lower(),
        "errorlog": "-",
        "accesslog": "-",
        # gunicorn's usual line plus the time each request took (microseconds), for operators
        # (and the benchmark's latency percentiles).
        "access_log_format": ACCESS_LOG_FORMAT,
        # Secrets in query strings (a watch's confirmation link) never reach the access log.
        "logger_class": RedactingLogger,
        "proc_name": "meteorpi-serve",
        # Newer gunicorn opens a control socket at one fixed per-user path: two servers collide.
        "control_socket_disable": True,
        "post_worker_init": _end_streams_on_stop,
        **tls_options(config),
    }


def tls_options(config: Config) -> dict[str, Any]:
    """gunicorn's TLS settings from ``server.tls_cert``/``server.tls_key`` ({} for plain HTTP)."""
    cert, key = config.server.tls_cert, config.server.tls_key
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ConfigError("server.tls_cert and server.tls_key go together: set both to serve HTTPS, or neither")
    for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        if os.path.isdir(os.path.expanduser(path)):
            raise ConfigError(f"{name}: {path} is a directory, not a PEM file")
        if not os.access(os.path.expanduser(path), os.R_OK):
            raise ConfigError(f"{name}: cannot read {path}")
    check_certificate_pair(cert, key)
    from .worker import deferred_handshake_context
    return {"certfile": os.path.expanduser(cert), "keyfile": os.path.expanduser(key),
            "ssl_context": deferred_handshake_context}


def check_certificate_pair(cert: str, key: str) -> None:
    """Load the pair as each worker will, here in the master and once: gunicorn loads it only
    in workers, so a pair that does not load kills every worker at boot and gunicorn restarts
    them for ever. The message names the file at fault."""
    cert_path, key_path = os.path.expanduser(cert), os.path.expanduser(key)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_path)
    except (ssl.SSLError, OSError, ValueError):
        raise ConfigError(f"server.tls_cert: {cert} holds no PEM certificate") from None

    def encrypted() -> bytes:
        # gunicorn cannot ask for a passphrase; ssl would prompt on the terminal instead.
        raise ConfigError(f"server.tls_key: {key} is encrypted; give it unencrypted (readable by meteorpi only)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path, password=encrypted)
    except ssl.SSLError as e:
        if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"server.tls_key: {key} is not the private key of the certificate in {cert}") from None
        raise ConfigError(f"server.tls_key: {key} holds no PEM private key") from None
    except OSError as e:
        raise ConfigError(f"server.tls_key: cannot load {key}: {e.strerror or e}") from None


def check_can_listen(bind: str) -> None:
    """Bind the address once, as gunicorn will (SO_REUSEADDR), and let it go: one line naming
    the address and the reason when it cannot be had.

    Why: gunicorn meets a port in use by retrying five times a second apart and logging two
    lines each time, after the database was started; an operator reads nine lines of errors
    for one cause. (A port taken between this check and gunicorn's bind still gets gunicorn's
    own lines.)"""
    host, _, port_text = bind.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    if port == 0:
        return  # any free port: nothing to be refused
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {bind}: {host!r} is not a known host or address ({e.strerror})") from None
    except OSError as e:
        hint = {errno.EADDRINUSE: " (is another server running there? choose another --port or server.port)",
                errno.EACCES: " (ports below 1024 need privileges: choose a port of 1024 or above)",
                errno.EADDRNOTAVAIL: " (no interface of this machine has that address: check --host or server.host)"}
        raise ServeError(f"cannot listen on {bind}: {e.strerror or e}{hint.get(e.errno, '')}") from None


def run(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT; returns normally on a clean stop."""
    config = copy.deepcopy(config)  # the caller's object keeps its own database.url
    # Settings (TLS files included) first: a wrong one is refused before anything starts.
    options = gunicorn_options(config, host or config.server.host,
                               config.server.port if port is None else port,
                               workers or config.server.workers)
    check_can_listen(options["bind"])
    if config.database.url is None:
        # Attach here, in the master, and give the workers the URL (see the module docstring).
        config.database.url = embedded_url(config.data_path)
    log.info("serving meteorpi on %s%s with %d worker(s)", "https://" if "certfile" in options else "http://",
             options["bind"], options["workers"])
    notifier = start_notifier(config) if config.notify.enabled else None
    master = os.getpid()
    try:
        MeteorGunicorn(config, options).run()
    except SystemExit as e:  # gunicorn ends its master with sys.exit; 0 is a clean stop
        if e.code not in (0, None):
            raise
    finally:
        if notifier is not None and os.getpid() == master:  # workers leave through here too
            stop_notifier(notifier)


def start_notifier(config: Config) -> subprocess.Popen:
    """Matching and delivery in ONE process beside the workers (not one per worker), started
    fresh (no fork: it shares no database socket with gunicorn's workers). It is handed the
    configuration on stdin, never on its command line, and ends when the master does."""
    process = subprocess.Popen([sys.executable, "-m", "meteorpi_server.notify"], stdin=subprocess.PIPE)
    process.stdin.write(json.dumps(config.as_dict()).encode("utf-8"))
    process.stdin.close()
    return process


def stop_notifier(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
