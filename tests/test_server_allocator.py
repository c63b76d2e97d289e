"""The worker's allocator setting (allocator.py) is taken without starting any process: it
runs as every gunicorn worker boots, and a child there is a process nobody asked for (the
reliability suite counts a server's processes across a PostgreSQL outage)."""
from __future__ import annotations

import platform
import subprocess

import pytest

from meteorpi_server.allocator import return_large_blocks


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
def test_threshold_is_taken_without_starting_a_process(monkeypatch):
    started = []

    def refuse(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        raise OSError("no process may be started here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert return_large_blocks() is True
    assert started == []
