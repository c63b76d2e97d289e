"""``meteorpi feed``: the live feed in a terminal, like ``tail -f`` — from the local database, or
from a remote archive over its ``GET /feed`` long-poll.

Each line ends with the item's cursor; ``--after CURSOR`` resumes just after it. Without
``--after``, the feed starts at what is still kept (``feed.retention_days``), or at "now" with
``--follow``.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Iterator

import click

from meteorpi_db.feed import START, Cursor, FeedFilter
from meteorpi_model import ValidationError

from .cli import Context, domain_errors, pass_ctx

WAIT_SECONDS = 30
CONNECT_TIMEOUT = 10.0


@click.command("feed")
@click.option("--follow", "-f", is_flag=True, help="Keep printing items as they commit (Ctrl-C stops).")
@click.option("--after", "after_text", metavar="CURSOR", help="Start just after this cursor (printed with every item).")
@click.option("--camera", "cameras", multiple=True, metavar="ID", help="Only this camera (repeatable).")
@click.option("--event-type", "event_types", multiple=True, metavar="T",
              help="Only this event or semantic type; * wildcards, e.g. 'meteorpi:*' (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["status", "event", "file"]),
              help="Only this kind of item (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as GET /feed gives them.")
@click.option("--url", metavar="URL", help="A remote archive (e.g. https://archive.example.org) instead of the local database.")
@click.option("--user", "user_id", metavar="U", help="User to read the remote archive as (a reader).")
@click.option("--password-stdin", is_flag=True, help="Read the remote user's password from the first line of stdin.")
@pass_ctx
@domain_errors
def feed(ctx: Context, follow: bool, after_text: str | None, cameras: tuple[str, ...], event_types: tuple[str, ...],
         kinds: tuple[str, ...], as_json: bool, url: str | None, user_id: str | None, password_stdin: bool) -> None:
    """Print the archive's changes (statuses, files, events) as they were imported."""
    try:
        after = Cursor.parse(after_text, "--after") if after_text is not None else None
        wanted = FeedFilter.of(cameras, event_types, kinds)
    except ValidationError as e:
        raise click.UsageError(str(e)) from None
    if url is None and (user_id or password_stdin):
        raise click.UsageError("--user and --password-stdin go with --url")
    items = (_remote(url, user_id, password_stdin, after, cameras, event_types, kinds, follow) if url
             else _local(ctx, after, wanted, follow))
    try:
        for item in items:
            click.echo(json.dumps(item, separators=(",", ":")) if as_json else _line(item))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `meteorpi feed | head`
        sys.stderr.close()


def _line(item: dict) -> str:
    logged = _dt.datetime.fromtimestamp(item["logged_at"] / 1000, _dt.timezone.utc)
    parts = [logged.strftime("%Y-%m-%dT%H:%M:%S.") + f"{logged.microsecond // 1000:03d}Z", f"{item['kind']:<6}",
             f"{item['op']:<7}", item["camera_id"], item.get("event_type") or "-", item["id"], item["cursor"]]
    # Camera ids and types come from cameras: never let a control character reach the terminal.
    return "  ".join(p.encode("unicode_escape").decode("ascii") if not p.isprintable() else p for p in parts)


def _local(ctx: Context, after: Cursor | None, wanted: FeedFilter, follow: bool) -> Iterator[dict]:
    from meteorpi_db.feed_hub import FeedHub
    db = ctx.db
    if not follow:
        cursor = after or START
        while True:
            page = db.feed_read(cursor)
            yield from (i.as_dict() for i in page.items if wanted.matches(i))
            cursor = page.cursor
            if not page.more:
                return
    hub = FeedHub(db).start()
    try:
        if not hub.ready():
            raise click.ClickException("the feed cannot reach the database")
        hub.sync()
        cursor = after or hub.cursor
        # On stderr (``--json`` output stays clean): from here on nothing committed is missed,
        # which a script starting the follower and then importing must be able to wait for.
        click.echo(f"following the feed after {cursor}", err=True)
        while True:
            result = hub.read(cursor, wanted)
            if result.must_refetch:
                raise click.ClickException(_TOO_OLD)
            yield from (i.as_dict() for i in result.items)
            cursor = result.cursor
            if result.up_to_date:
                hub.wait(cursor, WAIT_SECONDS)
    finally:
        hub.stop()


_TOO_OLD = ("the cursor is older than the feed keeps (feed.retention_days): "
            "read what you need afresh, then follow without --after")


def _remote(url: str, user_id: str | None, password_stdin: bool, after: Cursor | None, cameras, event_types,
            kinds, follow: bool) -> Iterator[dict]:
    import requests
    session = requests.Session()
    if user_id:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt(f"Password for {user_id}", hide_input=True)
        session.auth = (user_id, password)
    endpoint = url.rstrip("/") + "/feed"
    params: dict = {"camera": list(cameras), "event_type": list(event_types), "kind": list(kinds)}
    if after is not None:
        params["after"] = str(after)
    elif not follow:
        params["after"] = str(START)
    while True:
        params["wait"] = WAIT_SECONDS if follow else 0
        try:
            response = session.get(endpoint, params=params, timeout=(CONNECT_TIMEOUT, WAIT_SECONDS + 30))
        except requests.RequestException as e:
            raise click.ClickException(f"{endpoint}: {type(e).__name__}: the archive could not be reached") from None
        body = _answer(endpoint, response)
        if body.get("must_refetch"):
            raise click.ClickException(_TOO_OLD)
        yield from body["items"]
        params["after"] = body["cursor"]
        if body["up_to_date"] and not follow and not body["items"]:
            return


def _answer(endpoint: str, response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else None
        raise click.ClickException(f"{endpoint} answered HTTP {response.status_code}"
                                   + (f": {message}" if isinstance(message, str) else ""))
    if not body.get("must_refetch") and not (isinstance(body.get("items"), list) and isinstance(body.get("cursor"), str)):
        raise click.ClickException(f"{endpoint} did not answer as a meteorpi feed")
    return body
