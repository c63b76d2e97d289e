"""``python -m bench.serve_timed``: ``meteorpi serve`` with request durations in the access log.

Why this exists: the 16-exporter figure reports p50/p99 of import requests, measured where
they are served, and ``meteorpi serve`` offers no access-log format option (gunicorn's default
line has no duration). This runs the very same ``meteorpi_server.serving.serve`` command with
one extra gunicorn setting, ``access_log_format``; nothing else changes.
"""
from __future__ import annotations

import meteorpi_server.serving as serving

ACCESS_LOG_FORMAT = 'BENCH %(s)s %(D)s "%(r)s"'


def main() -> None:
    original = serving.gunicorn_options

    def with_durations(*args, **kwargs):
        options = original(*args, **kwargs)
        options["access_log_format"] = ACCESS_LOG_FORMAT
        return options

    serving.gunicorn_options = with_durations
    serving.serve(prog_name="meteorpi serve")


if __name__ == "__main__":
    main()
