"""``meteorpi export``: where this node sends what it records, and the exporter that sends it.

Thin like the rest of the CLI: options become an ExportConfiguration or a MeteorExporter call,
domain errors become one ``Error: ...`` line; progress is shown by progress.py. Imported by
cli.py only (it imports cli.py's helpers, and cli.py registers it).
"""
from __future__ import annotations

import datetime as _dt
import logging
import signal
import threading

import click

from meteorpi_export import ExportTotals, MeteorExporter, exporter_lock
from meteorpi_export.targets import BadTarget, parse_target
from meteorpi_model import EventSearch, ExportConfiguration, FileRecordSearch, MeteorpiError, ValidationError
from meteorpi_model.admin import EXPORT_DESCRIPTION
from meteorpi_model.urls import redact_url

from .cli import Context, read_password, domain_errors, pass_ctx
from .cli_checks import check_type, printable
from .progress import ProgressDisplay, parse_size, summary_line

log = logging.getLogger("meteorpi.export")


def _instant(ctx, param, text: str | None) -> _dt.datetime | None:
    """ISO 8601 (``2015-06-30T02:00``, ``2015-06-30``); without a zone it is UTC."""
    if text is None:
        return None
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2015-06-30T02:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def type_option(text: str, option: str) -> str:
    """An event or semantic type, checked as the model checks types (cli_checks.check_type):
    a typo is refused in one line instead of stored as a filter that never matches."""
    try:
        return check_type(text, option)
    except ValidationError as e:
        raise click.ClickException(printable(str(e))) from None


def description_option(text: str | None) -> str | None:
    """``--description`` as the model takes it for display on one line: no control characters."""
    if text is None:
        return None
    try:
        return EXPORT_DESCRIPTION.decode(text, "--description")
    except ValidationError as e:
        bad = next((c for c in text if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f), None)
        if bad is not None:
            raise click.ClickException(f"--description contains a control character ({ascii(bad)[1:-1]}): "
                                   f"give one line of text") from None
        raise click.ClickException(printable(str(e))) from None



@click.group("export")
def export() -> None:
    """Configure and run exports of this node's events and files to other servers."""


@export.command("add")
@click.argument("name")
@click.option("--target", required=True, help="The /import URL of the receiving server.")
@click.option("--user", "user_id", required=True, help="A user with the import role on the target.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--type", "export_type", type=click.Choice(["event", "file"]), required=True,
              help="Export events (with their files) or stand-alone files.")
@click.option("--camera", "cameras", multiple=True, help="Only this camera; repeat for several.")
@click.option("--after", callback=_instant, help="Only entities at or after this time (ISO 8601, UTC).")
@click.option("--before", callback=_instant, help="Only entities before this time (ISO 8601, UTC).")
@click.option("--event-type", help="Only events of this type (type event), e.g. meteorpi:meteor.")
@click.option("--semantic-type", help="Only files of this semantic type (type file).")
@click.option("--exclude-imported", is_flag=True, help="Do not relay what this node imported from elsewhere.")
@click.option("--description", help="A note shown by `export list`.")
@click.option("--replace", is_flag=True, help="Replace the configuration NAME if it exists (keeps its progress).")
@click.option("--insecure-http", is_flag=True,
              help="Accept a plain http:// target beyond loopback and private addresses (the password "
                   "then crosses the network in clear; every export run warns).")
@pass_ctx
@domain_errors
def export_add(ctx: Context, name: str, target: str, user_id: str, password_stdin: bool, export_type: str,
               cameras: tuple[str, ...], after, before, event_type: str | None, semantic_type: str | None,
               exclude_imported: bool, description: str | None, replace: bool, insecure_http: bool) -> None:
    """Export to TARGET as USER everything matching the search options, from now on."""
    try:
        parse_target(target, "--target", allow_plain_http_to_public=insecure_http)
    except BadTarget as e:
        raise click.ClickException(str(e)) from None
    if event_type is not None and export_type != "event":
        raise click.UsageError("--event-type applies to --type event only")
    if semantic_type is not None and export_type != "file":
        raise click.UsageError("--semantic-type applies to --type file only")
    event_type = type_option(event_type, "--event-type") if event_type is not None else None
    semantic_type = type_option(semantic_type, "--semantic-type") if semantic_type is not None else None
    description = description_option(description)
    common = {"camera_ids": list(cameras) or None, "after": after, "before": before,
              "exclude_imported": exclude_imported or None}
    try:
        search = (EventSearch(event_type=event_type, **common) if export_type == "event"
                  else FileRecordSearch(semantic_type=semantic_type, **common))
    except MeteorpiError as e:
        raise click.UsageError(str(e)) from None
    password = read_password(password_stdin)
    config = ExportConfiguration(name=name, target_url=target, user_id=user_id, password=password,
                                 type=export_type, search=search, description=description)
    db = ctx.db
    if replace and name in {c.name for c in db.get_export_configurations()}:
        config.config_id = db.get_export_configuration(name).config_id
        db.update_export_configuration(config)
        click.echo(f"export {name} replaced: {export_type}s to {redact_url(target)} as {user_id}")
    else:
        db.create_export_configuration(config)
        click.echo(f"export {name} added: {export_type}s to {redact_url(target)} as {user_id}")


@export.command("list")
@pass_ctx
@domain_errors
def export_list(ctx: Context) -> None:
    """List export configurations and their progress (never their passwords)."""
    from meteorpi_model import search_to_query
    rows = ctx.db.get_export_progress()
    if not rows:
        click.echo("no export configurations (add one with `meteorpi export add`)")
        return
    table = [("NAME", "TYPE", "STATE", "TARGET", "USER", "DONE", "PENDING", "FAILURES", "SEARCH")]
    for p in rows:
        c = p.config
        query = {k: v for k, v in search_to_query(c.search).items() if k not in ("limit", "skip")}
        for name in ("after", "before"):  # readable times, not milliseconds
            if getattr(c.search, name) is not None:
                query[name] = getattr(c.search, name).isoformat().replace("+00:00", "Z")
        table.append((c.name, c.type, "enabled" if c.enabled else "disabled", redact_url(c.target_url),
                      c.user_id, str(p.complete), str(p.pending), str(p.consecutive_failures),
                      " ".join(f"{k}={v}" for k, v in query.items()) or "(everything)"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for p in rows:
        if p.config.description:  # escaped: one stored before control characters were refused
            click.echo(f"{p.config.name}: {printable(p.config.description)}")
    for p in rows:
        if p.last_error:
            click.echo(f"{p.config.name}: last failure: {p.last_error}")
        if p.retrying:  # the task tried most often: a record the target refuses shows here
            click.echo(f"{p.config.name}: {p.retrying} task(s) waiting to be tried again; the most tried: "
                       f"{printable(p.most_tried or '(no message)')}")


@export.command("enable")
@click.argument("name")
@pass_ctx
@domain_errors
def export_enable(ctx: Context, name: str) -> None:
    """Enable export NAME (its failure count starts again from zero)."""
    ctx.db.set_export_enabled(name, True)
    click.echo(f"export {name} enabled")


@export.command("disable")
@click.argument("name")
@pass_ctx
@domain_errors
def export_disable(ctx: Context, name: str) -> None:
    """Disable export NAME; its pending tasks wait until it is enabled again."""
    ctx.db.set_export_enabled(name, False)
    click.echo(f"export {name} disabled")


@export.command("delete")
@click.argument("name")
@pass_ctx
@domain_errors
def export_delete(ctx: Context, name: str) -> None:
    """Delete export NAME and its record of what was sent."""
    ctx.db.delete_export_configuration(name)
    click.echo(f"export {name} deleted")


@export.command("run")
@click.option("--once", is_flag=True, help="Mark, export what is due, and exit (non-zero if anything failed).")
@click.option("--limit-rate", callback=lambda c, p, v: parse_size(v),
              help="Cap the upload speed, in bytes per second (e.g. 500K, 2M).")
@pass_ctx
@domain_errors
def export_run(ctx: Context, once: bool, limit_rate: int | None) -> None:
    """Export every `export.interval_seconds` until SIGTERM or SIGINT (uploads in flight end at once;
    what the target did not receive whole stays due).

    One exporter per node: `--once` refuses to start while another is sending; the long-running
    form waits for it to finish.
    """
    db = ctx.db
    stop = threading.Event()
    _stop_on_signals(stop)
    with exporter_lock(db, wait=None if once else stop) as held:
        if held:
            _export(db, once, limit_rate, stop)
        else:
            click.echo("export run stopped before another exporter on this node finished", err=True)


def _export(db, once: bool, limit_rate: int | None, stop: threading.Event) -> None:
    with ProgressDisplay() as display, MeteorExporter(db, on_task=display.on_task, on_bytes=display.on_bytes,
                                                      rate_limit=limit_rate,
                                                      on_try=lambda line: click.echo(line, err=True)) as exporter:
        if once:
            exporter.mark_all()
            display.start_round(exporter.due_count())
            totals = exporter.export_due(stop)
            display.end_round()
            click.echo(summary_line(totals), err=True)
            _exit_status(totals, stop, exporter)
            return
        log.info("exporting every %ss; SIGTERM to stop", db.config.export.interval_seconds)

        def on_round_end(totals: ExportTotals) -> None:
            display.end_round()
            if totals.completed or totals.failed or totals.confused:
                log.info("export round: %s", summary_line(totals))

        overall = exporter.run(stop, on_round_start=display.start_round, on_round_end=on_round_end)
        click.echo(f"export run stopped: {summary_line(overall)}", err=True)


def _exit_status(totals: ExportTotals, stop: threading.Event, exporter: MeteorExporter) -> None:
    """Non-zero, with one line saying why, unless everything due was exported. A stop that
    came after the last task finished says so and exits zero: the message must be true."""
    if not totals.ok:
        first = totals.failures[0]
        raise click.ClickException(f"{totals.failed + totals.confused} export(s) failed; first: {first}")
    if stop.is_set():
        due = exporter.due_count()
        if due:
            raise click.ClickException(f"stopped by a signal with {due} export(s) still due "
                                       f"(the next run sends them; what the target received whole it keeps)")
        click.echo("stopped by a signal after everything due was exported", err=True)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT end the run: uploads in flight end at their next piece (the target
    keeps the files it received whole; the rest stays due), then the run reports and exits."""
    def handler(signum, frame):
        stop.set()  # only this: logging from a signal handler can deadlock on the handler's lock
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
