"""A node replicating to a central server in the background while a test breaks things.

``BackgroundExporter`` runs the real ``MeteorExporter`` in a thread, round after round (mark,
export what is due, a short pause), the way ``meteorpi export run`` does with a short interval;
failed tasks are retried at once (no deferral) so faults are met again and again. ``more_work``
registers another small night on the node (a camera of its own), so a long fault loop never
runs out of entities in flight.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path

from meteorpi_db import MeteorDatabase
from meteorpi_export import ExportTotals, MeteorExporter
from meteorpi_server.synthetic_night import generate_night
from tests.export_fixtures import add_export

ROUND_PAUSE_SECONDS = 0.05


def more_work(node: MeteorDatabase, tmp: Path, events: int, files_per_event: int, standalone: int,
              file_size: int, seed: int):
    """Register a small night of a new camera on ``node``; returns it."""
    camera = f"cam-{seed}-{uuid.uuid4().hex[:6]}"
    night = generate_night(node, tmp / f"incoming-{camera}", camera_id=camera, events=events,
                           files_per_event=files_per_event, file_size=file_size, standalone=standalone, seed=seed)
    mark(node)
    return night


def mark(node: MeteorDatabase) -> None:
    """Queue what is new for every export configuration now, as the exporter's next round would,
    so ``pending`` counts it at once (marking is serialised by the database: safe beside it)."""
    for config in node.get_export_configurations():
        node.mark_entities_to_export(config)


def export_to(node: MeteorDatabase, import_url: str, auth, name_suffix: str = "") -> None:
    """Export every event and every stand-alone file of ``node`` to ``import_url``."""
    add_export(node, import_url, "event", name=f"events{name_suffix}", auth=auth)
    add_export(node, import_url, "file", name=f"files{name_suffix}", auth=auth)


def pending(node: MeteorDatabase) -> int:
    return sum(p.pending for p in node.get_export_progress())


class BackgroundExporter:
    """The node's exporter, exporting round after round in a thread until ``stop()``."""

    def __init__(self, node: MeteorDatabase, fast_path: bool = True, read_timeout: float = 15.0,
                 rate_limit: float | None = None, **settings):
        self.node, self.rate_limit = node, rate_limit
        self.settings = dataclasses.replace(node.config.export, defer_on_failure_seconds=0,
                                            max_failures_before_disable=0, connect_timeout_seconds=2.0,
                                            read_timeout_seconds=read_timeout, fast_path=fast_path, **settings)
        self.totals = ExportTotals()
        self.rounds = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-exporter", daemon=True)

    def __enter__(self) -> "BackgroundExporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the exporter did not stop within 60 s"

    def _run(self) -> None:
        try:
            with MeteorExporter(self.node, self.settings, rate_limit=self.rate_limit) as exporter:
                while not self._stop.is_set():
                    exporter.mark_all()
                    self.totals.merge(exporter.export_due(self._stop))
                    self.rounds += 1
                    self._stop.wait(ROUND_PAUSE_SECONDS)
        except BaseException as e:  # surfaced by wait_converged / the test
            self.error = e

    def wait_converged(self, timeout: float) -> float:
        """Wait until nothing is pending on the node; seconds it took."""
        started = time.monotonic()
        mark(self.node)
        while pending(self.node):
            assert self.error is None, f"the exporter died: {self.error!r}"
            assert time.monotonic() - started < timeout, (
                f"{pending(self.node)} tasks still pending after {timeout:g}s; failures: {self.totals.failures[-5:]}")
            time.sleep(0.05)
        assert self.error is None, f"the exporter died: {self.error!r}"
        return time.monotonic() - started
