"""``meteorpi ingest``: register what camera software recorded, e.g. ``meteorpi ingest rms``.

Thin: finds nights and hands them to meteorpi_rms; prints one summary line per night, a
progress bar for large nights on a terminal, and one ``Error: ...`` line per night that could
not be taken (exit status 1 at the end). Imported by cli.py only, when the command is used.
"""
from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

import click

from .cli import Context, domain_errors, pass_ctx

# Nights this large get a progress bar on a terminal (smaller ones finish before it helps).
BAR_MIN_BYTES = 64 * 1024 ** 2
DEFAULT_INTERVAL = 300.0


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN (and infinities) whatever the bounds.

    Why: every comparison with NaN is false, so FloatRange(1, 86400) let ``--interval nan``
    through, and ``--follow`` then polled without a pause (97% CPU)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class NightPath(click.Path):
    """A night folder or RMS's data folder; never the empty path.

    Why: ``Path('')`` is the current folder, so ``ingest rms ''`` (an unset variable in a
    script) ingested whatever the command happened to be run in."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value == "":
            self.fail("an empty path (it would mean the current folder): give a night folder or "
                      "RMS's data folder.", param, ctx)
        return super().convert(value, param, ctx)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def summary(result) -> str:
    """One line per night."""
    if result.state != "ingested":
        return result.message
    r = result.registered
    news = [f"{r.events} new event(s)", f"{r.files} new file(s)"] + ([f"{r.statuses} new status"] if r.statuses else [])
    return (f"{result.night}: {result.detections} detection(s), {result.files} file(s) "
            f"({_human(result.bytes)}) -> {', '.join(news)} in {result.seconds:.1f} s"
            + ("" if r.events or r.files or r.statuses else " (nothing new)"))


class Bar:
    """A tqdm bar of bytes stored, for nights of BAR_MIN_BYTES or more, on a terminal only."""

    def __init__(self):
        self.bar = None

    def on_plan(self, plan) -> None:
        self.close()
        total = plan.total_bytes
        if total >= BAR_MIN_BYTES and click.get_text_stream("stderr").isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=plan.night,
                            dynamic_ncols=True, leave=False)

    def on_stored(self, _path, size: int) -> None:
        if self.bar is not None:
            self.bar.update(size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.group("ingest")
def ingest() -> None:
    """Register data recorded by camera software on this node."""


@ingest.command("rms")
@click.argument("paths", nargs=-1, required=True, type=NightPath(path_type=Path))
@click.option("--follow", is_flag=True, help="Keep polling; ingest each night once it is finished (a service).")
@click.option("--interval", type=FiniteFloatRange(1, 86400), default=DEFAULT_INTERVAL, show_default=True,
              help="Seconds between polls with --follow.")
@click.option("--settle", type=FiniteFloatRange(0, 86400), default=None,
              help="Leave a night whose files changed less than this many seconds ago for later "
                   "[60 with --follow, else 0].")
@pass_ctx
@domain_errors
def ingest_rms(ctx: Context, paths: tuple[Path, ...], follow: bool, interval: float, settle: float | None) -> None:
    """Ingest RMS nights: PATH is a night folder or RMS's data folder (every finished night in it).

    A night in progress is skipped; a garbled one is refused whole, with the file and line."""
    from meteorpi_rms import ingest_paths  # noqa: the domain loads only when used
    from meteorpi_rms.follow import DEFAULT_SETTLE_SECONDS, follow as follow_loop
    db, bar, failures = ctx.db, Bar(), []

    def report(result) -> None:
        bar.close()
        if result.state == "failed":
            failures.append(result)
            click.echo(f"Error: {result.message}", err=True)
        elif result.state == "skipped":
            click.echo(f"skipped {result.message}", err=True)
        else:
            click.echo(summary(result))

    try:
        if follow:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            follow_loop(db, list(paths), interval, stop, report, bar.on_plan, bar.on_stored,
                        DEFAULT_SETTLE_SECONDS if settle is None else settle)
            return
        for result in ingest_paths(db, list(paths), bar.on_plan, bar.on_stored, settle_seconds=settle or 0.0):
            report(result)
    finally:
        bar.close()
    if failures:
        raise click.exceptions.Exit(1)
