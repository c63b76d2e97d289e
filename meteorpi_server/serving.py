"""``meteorpi serve``: the import service under gunicorn, started programmatically.

Why gunicorn: pre-forked worker processes use every core for the MD5 and fsync work of uploads,
``gthread`` workers give each worker ``server.threads`` threads so one slow camera link does not
hold up the others, and SIGTERM is a graceful stop (requests in flight finish, exit status 0).
The app is loaded in each worker after the fork (no preload), so every worker opens its own
database pool. With the embedded database the master attaches to it first and hands the
workers its URL: the server then outlives worker restarts and stops when the master exits.
The Flask development server is never used.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from meteorpi_db import Config, embedded_url

from .app import create_app

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
        return create_app(self.meteor_config)


def _end_streams_on_stop(worker) -> None:
    """gunicorn post_worker_init hook: on SIGTERM, end the feed's streams before draining, so
    a graceful stop takes as long as imports in flight, not as long as the longest stream."""
    meteor_app = worker.wsgi.extensions["meteorpi"]
    stop = worker.handle_exit

    def handle_exit(sig, frame):
        if meteor_app._feed_hub is not None:
            meteor_app._feed_hub.close_readers()
        stop(sig, frame)
    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)


def gunicorn_options(config: Config, host: str, port: int, workers: int) -> dict[str, Any]:
    """gunicorn settings from the configuration (and the command line's overrides)."""
    server = config.server
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": server.threads,
        "timeout": server.timeout_seconds,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "preload_app": False,
        "loglevel": config.logging.level.lower(),
        "errorlog": "-",
        "accesslog": "-",
        # gunicorn's usual line plus the time each request took (microseconds), for operators
        # (and the benchmark's latency percentiles).
        "access_log_format": ACCESS_LOG_FORMAT,
        "proc_name": "meteorpi-serve",
        # Newer gunicorn opens a control socket at one fixed per-user path: two servers collide.
        "control_socket_disable": True,
        "post_worker_init": _end_streams_on_stop,
    }


def run(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT; returns normally on a clean stop."""
    config = copy.deepcopy(config)  # the caller's object keeps its own database.url
    if config.database.url is None:
        # Attach here, in the master, and give the workers the URL (see the module docstring).
        config.database.url = embedded_url(config.data_path)
    options = gunicorn_options(config, host or config.server.host,
                               config.server.port if port is None else port,
                               workers or config.server.workers)
    log.info("serving meteorpi on %s with %d worker(s)", options["bind"], options["workers"])
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
