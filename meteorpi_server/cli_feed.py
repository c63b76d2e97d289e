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
import time
from typing import Iterator

import click

from meteorpi_db.feed import START, Cursor, FeedFilter
from meteorpi_model import ValidationError
from meteorpi_model.urls import redact_url

from .cli import Context, domain_errors, pass_ctx, read_password
from .cli_checks import check_camera, check_type, printable

WAIT_SECONDS = 30
CONNECT_TIMEOUT = 10.0
ANSWER_SECONDS = WAIT_SECONDS + 30   # a long-poll's answer, in all (its wait included)
# A page of the feed holds at most 1,000 items of a few hundred bytes: anything far longer is
# not a feed's answer, and is not read into memory (read_answer).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# Without --follow: answers in a row whose cursor does not advance before the remote feed is
# given up on (a server that repeats itself would otherwise be printed, or polled, for ever).
MAX_STALLED_ANSWERS = 3
# With --follow: the wait after an answer that brought nothing new doubles up to this.
MAX_BACKOFF_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 0.5


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
@click.option("--insecure-http", is_flag=True,
              help="With --user, accept a plain http:// --url beyond loopback and private addresses "
                   "(the password then crosses the network in clear; a warning says so).")
@pass_ctx
@domain_errors
def feed(ctx: Context, follow: bool, after_text: str | None, cameras: tuple[str, ...], event_types: tuple[str, ...],
         kinds: tuple[str, ...], as_json: bool, url: str | None, user_id: str | None, password_stdin: bool,
         insecure_http: bool) -> None:
    """Print the archive's changes (statuses, files, events) as they were imported."""
    try:
        after = Cursor.parse(after_text, "--after") if after_text is not None else None
        cameras = tuple(check_camera(c) for c in cameras)
        event_types = tuple(check_type(t, "--event-type") for t in event_types)
        wanted = FeedFilter.of(cameras, event_types, kinds)
    except ValidationError as e:
        raise click.UsageError(printable(str(e))) from None
    if url is None and (user_id or password_stdin or insecure_http):
        raise click.UsageError("--user, --password-stdin and --insecure-http go with --url")
    items = (_remote(url, user_id, password_stdin, after, cameras, event_types, kinds, follow, insecure_http) if url
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
        _not_ahead(after, db.feed_end())
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
        _not_ahead(after, hub.cursor)
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


def _not_ahead(after: Cursor | None, end: Cursor | None) -> None:
    """A cursor past the feed's newest item did not come from this feed: said, not waited on
    in silence (it would print nothing until the feed caught up, perhaps never)."""
    if after is not None and end is not None and after > end:
        raise click.UsageError(f"--after: cursor {after} is ahead of this feed's newest item ({end}): "
                               f"it did not come from this feed")


def _remote(url: str, user_id: str | None, password_stdin: bool, after: Cursor | None, cameras, event_types,
            kinds, follow: bool, insecure_http: bool) -> Iterator[dict]:
    """Items of a remote archive's ``GET /feed``.

    The URL is judged as requests will send it (meteorpi_export.targets), as `export add`
    judges a target: a password goes in clear to a public host only with --insecure-http, and
    messages show the URL redacted. Without --follow it ends once caught up; a server whose
    cursor does not advance is given up on after MAX_STALLED_ANSWERS answers (without --follow)
    or asked again after a growing pause (with it), never polled in a tight loop."""
    import requests
    from meteorpi_export.link import AnswerTooSlow, read_answer
    from meteorpi_export.targets import BadTarget, parse_target
    try:
        target = parse_target(url, "--url", allow_plain_http_to_public=insecure_http or not user_id)
    except BadTarget as e:
        raise click.UsageError(str(e)) from None
    session = requests.Session()
    if user_id:
        if target.plain_http_to_public:
            click.echo(f"Warning: the password of {user_id} goes in clear over plain HTTP to "
                       f"{redact_url(url)}, which is not a loopback or private address", err=True)
        password = read_password(password_stdin, f"Password for {user_id}", confirm=False)
        session.auth = (user_id, password)
    endpoint = url.rstrip("/") + "/feed"
    shown = redact_url(endpoint)
    params: dict = {"camera": list(cameras), "event_type": list(event_types), "kind": list(kinds)}
    if after is not None:
        params["after"] = str(after)
    elif not follow:
        params["after"] = str(START)
    stalled, backoff = 0, FIRST_BACKOFF_SECONDS
    while True:
        params["wait"] = WAIT_SECONDS if follow else 0
        try:
            with session.get(endpoint, params=params, timeout=(CONNECT_TIMEOUT, ANSWER_SECONDS), stream=True) as response:
                text = read_answer(response, MAX_ANSWER_BYTES, ANSWER_SECONDS)
        except AnswerTooSlow:
            raise click.ClickException(f"{shown}: its answer did not arrive within {ANSWER_SECONDS}s") from None
        except requests.RequestException as e:
            raise click.ClickException(f"{shown}: {type(e).__name__}: the archive could not be reached") from None
        body = _answer(shown, response, text)
        if body.get("must_refetch"):
            raise click.ClickException(_refetch_message(shown, body))
        sent = Cursor.parse(params["after"]) if "after" in params else None
        cursor = _cursor_of(shown, body)
        if sent is not None and cursor < sent:
            raise click.ClickException(f"{shown} answered cursor {cursor}, before the {sent} asked after: "
                                       f"the cursor did not come from that feed")
        yield from body["items"]
        params["after"] = str(cursor)
        if not follow and body["up_to_date"]:
            return  # caught up
        if sent is None or cursor > sent:
            stalled, backoff = 0, FIRST_BACKOFF_SECONDS
            continue
        stalled += 1
        if not follow and stalled >= MAX_STALLED_ANSWERS:
            raise click.ClickException(f"{shown}: the server's cursor does not advance (still {cursor} after "
                                       f"{stalled} answers that were not up to date): giving up")
        if follow:  # a server that answers at once with nothing new: ask again later, not at once
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _refetch_message(shown: str, body: dict) -> str:
    """Why a remote feed told us to start again, as the server says it (shown as text only: a
    server's words never reach the terminal as control characters), and what to do."""
    why = body.get("message")
    why = printable(why[:500]) if isinstance(why, str) and why else "the cursor is not in the feed any more"
    return f"{shown}: {why}; without --after, --follow starts from the newest item"


def _cursor_of(shown: str, body: dict) -> Cursor:
    try:
        return Cursor.parse(body["cursor"])
    except ValidationError:
        raise click.ClickException(f"{shown} did not answer as a meteorpi feed (its cursor is not one)") from None


def _answer(endpoint: str, response, text: bytes | None) -> dict:
    """The JSON body of a feed answer (``text``, None when longer than any); ``endpoint`` is the
    URL as shown (redacted)."""
    if text is None:
        raise click.ClickException(f"{endpoint} answered with more than a feed's answer holds: not a meteorpi feed")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else None
        raise click.ClickException(f"{endpoint} answered HTTP {response.status_code}"
                                   + (f": {printable(message[:500])}" if isinstance(message, str) else ""))
    if not body.get("must_refetch") and not (isinstance(body.get("items"), list) and isinstance(body.get("cursor"), str)
                                             and isinstance(body.get("up_to_date"), bool)):
        raise click.ClickException(f"{endpoint} did not answer as a meteorpi feed")
    return body
