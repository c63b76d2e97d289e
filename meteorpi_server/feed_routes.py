"""The live feed over HTTP: ``GET /feed`` (long-poll JSON, for scripts) and ``GET /feed/stream``
(Server-Sent Events, for pages and dashboards). Same access rules as the read API.

Both read through the process's one ``FeedHub`` (meteorpi_db.feed_hub), never the database per
client on each commit. A cursor is the position after the last item a client saw: sent back as
``?after=`` (or the ``Last-Event-ID`` an EventSource sends by itself on reconnecting), it resumes
with nothing lost and nothing repeated. No cursor means "from now on"; ``after=0-0`` means
"everything still kept" (``feed.retention_days``).
"""
from __future__ import annotations

import json
import time
from typing import Iterator

from flask import Blueprint, Response, current_app, request, stream_with_context

from meteorpi_db.feed import KINDS, Cursor, FeedFilter
from meteorpi_db.feed_hub import FeedHub, FeedResult
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.fields import NS, Choice, Float, Int

from .jsonp import JSONP_PARAMETERS, jsonify, unpadded
from .params import each, one, refuse_unknown, single
from .read_routes import readable

feed_api = Blueprint("meteorpi_feed", __name__)
PARAMETERS = {"after", "wait", "camera", "event_type", "kind", "limit"}
MAX_LIMIT = 1000
READY_SECONDS = 10.0


def _hub() -> FeedHub:
    return current_app.extensions["meteorpi"].feed_hub


def _feed_config():
    return current_app.extensions["meteorpi"].config.feed


def _parameters(stream: bool) -> tuple[Cursor | None, FeedFilter, float, int]:
    """What the query asks for, read through params (ASCII digits, one value each, ids by their
    codec): ``camera``, ``event_type`` and ``kind`` are lists (repeat them), the rest single."""
    args = request.args
    refuse_unknown(args, PARAMETERS, tolerated=() if stream else JSONP_PARAMETERS)
    after = None
    last_event_id = request.headers.get("Last-Event-ID") if stream else None
    sent_after = single(args, "after")
    if sent_after is not None:
        after = Cursor.parse(sent_after, "after")
    elif last_event_id is not None:
        after = Cursor.parse(last_event_id, "Last-Event-ID")
    wanted = FeedFilter.of(cameras=each(args, "camera", CAMERA_ID),
                           event_types=[str(t) for t in each(args, "event_type", NS())],
                           kinds=each(args, "kind", Choice(*KINDS)))
    wait = one(args, "wait", Float(0, _feed_config().max_wait_seconds), default=0.0)
    limit = one(args, "limit", Int(1, MAX_LIMIT), default=500)
    return after, wanted, wait, limit


# Why a reader must start again, sent with ``must_refetch`` and the cursor to start from.
EXPIRED = ("the cursor is older than the feed keeps (feed.retention_days): read what you need "
           "afresh, then follow from the cursor given")
AHEAD = ("the cursor is ahead of this feed's newest item, so it did not come from this feed (another "
         "archive's, or this one's before it was restored from a backup): read what you need afresh, "
         "then follow from the cursor given")


def _start(hub: FeedHub, after: Cursor | None) -> tuple[Cursor, str | None]:
    """Where a reader starts, and why it must refetch instead, if it must.

    A cursor past what the hub holds once it holds everything committed before this request
    cannot be one this feed gave out (every cursor given out was committed before): answered
    as if up to date, its reader would skip every import until the feed's transaction ids
    passed it, perhaps never."""
    if not hub.ready(READY_SECONDS):
        from meteorpi_db import StorageUnavailable
        raise StorageUnavailable("the feed cannot reach the database")
    synced = hub.sync()
    if after is None:
        return hub.cursor, None
    if synced and after > hub.cursor:
        return after, AHEAD
    return after, None


def _refetch(hub: FeedHub, why: str) -> dict:
    return {"must_refetch": True, "cursor": str(hub.cursor), "message": why}


@feed_api.route("/feed")
@readable
def feed() -> Response:
    """Long-poll: what came after ``after``, waiting up to ``wait`` seconds for something."""
    after, wanted, wait, limit = _parameters(stream=False)
    hub = _hub()
    deadline = time.monotonic() + wait
    start, why = _start(hub, after)
    if why:
        return jsonify(_refetch(hub, why))
    with hub.subscribe(start, wanted) as subscription:
        while True:
            result = subscription.read(limit)
            if result.must_refetch:
                return jsonify(_refetch(hub, EXPIRED))
            left = deadline - time.monotonic()
            if result.items or not result.up_to_date or left <= 0 or hub.closing:
                return jsonify({"items": [i.as_dict() for i in result.items], "cursor": str(result.cursor),
                                "up_to_date": result.up_to_date})
            subscription.wait(left)


@feed_api.route("/feed/stream")
@readable
@unpadded
def feed_stream() -> Response:
    """Server-Sent Events: the backlog after the cursor, ``up-to-date``, then items as they commit."""
    after, wanted, _, limit = _parameters(stream=True)
    hub = _hub()
    cursor, why = _start(hub, after)
    config = _feed_config()
    response = Response(stream_with_context(_events(hub, cursor, wanted, limit, config.heartbeat_seconds,
                                                    config.stream_seconds, why)),
                        mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events on as they come
    return response


def _events(hub: FeedHub, cursor: Cursor, wanted: FeedFilter, limit: int, heartbeat: float,
            lifetime: float, refetch: str | None = None) -> Iterator[str]:
    """The stream's body. It sleeps until the hub has an item for its filter or a heartbeat is
    due: commits it does not want never wake it (README, "The live feed")."""
    end_at = time.monotonic() + lifetime
    yield "retry: 2000\n\n"
    if refetch:
        yield _event("must-refetch", _refetch(hub, refetch))
        return
    told_up_to_date = False
    with hub.subscribe(cursor, wanted) as subscription:
        while time.monotonic() < end_at and not hub.closing:
            result: FeedResult = subscription.read(limit)
            if result.must_refetch:
                yield _event("must-refetch", _refetch(hub, EXPIRED))
                return
            if result.items:
                # One write for what one read gave (an import's items arrive together): a write
                # per item cost the server a send and the client a wake-up for each.
                yield "".join(f"id: {item.cursor}\ndata: {json.dumps(item.as_dict(), separators=(',', ':'))}\n\n"
                              for item in result.items)
            if result.up_to_date and not told_up_to_date:
                told_up_to_date = True
                yield _event("up-to-date", {"cursor": str(result.cursor)})
            if result.up_to_date and not subscription.wait(min(heartbeat, max(end_at - time.monotonic(), 0))):
                yield ": keep-alive\n\n"


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
