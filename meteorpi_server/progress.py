"""Showing an export as it happens: a tqdm bar on a terminal, one log line per entity otherwise.

Used by ``meteorpi export run`` and ``meteorpi demo``; the exporter itself never prints, it
calls ``on_task``/``on_bytes``.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from contextlib import ExitStack

import click

from meteorpi_export import ExportState, ExportTotals, TaskReport

log = logging.getLogger("meteorpi.export")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)(i?[bB])?\s*", re.ASCII)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
# How often the bar's byte count and rate are redrawn during an upload.
BAR_REFRESH_SECONDS = 0.2


def parse_size(text: str | int | None) -> int | None:
    """``262144``, ``256K``, ``256KiB``, ``1.5M`` -> bytes (binary units)."""
    if text is None or isinstance(text, int):
        return text
    m = _SIZE.fullmatch(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size such as 262144, 256K or 1.5MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressDisplay:
    """Shows what the exporter does: a bar (entities, bytes, rate) on a terminal, else one log
    line per entity. ``on_task``/``on_bytes`` are the exporter's callbacks."""

    def __init__(self, bar: bool | None = None, out=None):
        self.out = out or sys.stderr
        self.use_bar = self.out.isatty() if bar is None else bar
        self.bar = None
        self._bytes = 0
        self._round_started = time.monotonic()
        self._drawn = 0.0
        self._stack = ExitStack()

    def __enter__(self) -> "ProgressDisplay":
        if self.use_bar:
            from tqdm.contrib.logging import logging_redirect_tqdm
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc) -> None:
        self.end_round()
        self._stack.close()

    def start_round(self, total: int) -> None:
        """A new batch of ``total`` entities begins."""
        self.end_round()
        self._bytes, self._round_started = 0, time.monotonic()
        if self.use_bar and total:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="entity", desc="exporting", file=self.out, dynamic_ncols=True)

    def end_round(self) -> None:
        if self.bar is not None:
            self._draw_bytes(force=True)
            self.bar.close()
            self.bar = None

    def on_bytes(self, n: int) -> None:
        self._bytes += n
        self._draw_bytes()

    def on_task(self, report: TaskReport) -> None:
        task = report.task
        if self.bar is not None:
            if report.state not in (ExportState.COMPLETE, ExportState.SKIPPED):
                self.bar.set_description("exporting (with failures)", refresh=False)
            self.bar.update(1)
            self._draw_bytes(force=True)
        elif report.state == ExportState.COMPLETE:
            log.info("%s %s -> %s: complete (%d requests, %s sent, %.2fs)", task.entity_type, task.entity_id.hex,
                     task.config.name, report.requests, human_bytes(report.bytes_sent), report.seconds)
        elif report.state == ExportState.SKIPPED:
            log.info("%s %s -> %s: skipped (%s)", task.entity_type, task.entity_id.hex, task.config.name,
                     report.message)
        # failed and confused tasks are logged as warnings by the exporter itself

    def _draw_bytes(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is None or (not force and now - self._drawn < BAR_REFRESH_SECONDS):
            return
        self._drawn = now
        rate = self._bytes / max(now - self._round_started, 1e-6)
        self.bar.set_postfix_str(f"{human_bytes(self._bytes)}, {human_bytes(rate)}/s")


def summary_line(totals: ExportTotals) -> str:
    """The one-line account of a run."""
    rate = totals.bytes_sent / totals.seconds if totals.seconds else 0.0
    return (f"completed {totals.completed}, failed {totals.failed + totals.confused}"
            f"{f', skipped {totals.skipped}' if totals.skipped else ''}, "
            f"{human_bytes(totals.bytes_sent)} sent, {totals.requests} requests, "
            f"{totals.seconds:.1f} s ({human_bytes(rate)}/s)")
