"""The web pages' server time on a big archive: 100 cameras, 100,000 events.

* ``page_index_p95_ms``: ``GET /`` as a browser asks for it (the overview: cameras with last
  status and last seen, last night's counts, the newest events, coincidences, the map).
* ``page_event_search_p95_ms``: ``GET /events`` with a camera and one night, the search a
  person makes most, rendered as the results page.

The archive is written set-wise (bench/page_archive.py) and ANALYZEd. Requests go through the
app in process (Flask's test client), so the figure is the server's time: queries and
rendering, without sockets or a browser. p95 over the requests after a warm-up.
"""
from __future__ import annotations

import datetime as _dt
import time
import urllib.parse

from ..harness import Figure, percentile
from ..page_archive import fill
from . import Context, log

BROWSER_ACCEPT = "text/html,application/xhtml+xml,*/*;q=0.8"
WARM_UP = 5


def _timed(client, path: str, count: int) -> list[float]:
    times = []
    for i in range(WARM_UP + count):
        started = time.perf_counter()
        answer = client.get(path, headers={"Accept": BROWSER_ACCEPT})
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200 or not answer.mimetype == "text/html":
            raise RuntimeError(f"GET {path} answered {answer.status_code} {answer.mimetype}")
        if i >= WARM_UP:
            times.append(elapsed)
    return times


def run(ctx: Context) -> list[Figure]:
    from meteorpi_server import create_app
    cameras, events, requests = (20, 5_000, 30) if ctx.quick else (100, 100_000, 200)
    db = ctx.cluster.site("pages").open()
    try:
        db.clear_database()
        log(f"pages: writing {cameras} cameras, {events} events")
        start = fill(db, cameras=cameras, events=events, nights=100)
        db.config.server.public_read = True
        client = create_app(db=db).test_client()
        night = start + _dt.timedelta(days=50)
        query = urllib.parse.urlencode({"camera_ids": "bench-0007", "after": night.strftime("%Y-%m-%dT12:00"),
                                        "before": (night + _dt.timedelta(days=1)).strftime("%Y-%m-%dT12:00")})
        log(f"pages: {requests} x GET / and GET /events?{query}")
        index = _timed(client, "/", requests)
        search = _timed(client, "/events?" + query, requests)
    finally:
        db.close()
    data = f"{cameras} cameras, {events} events over 100 nights; {requests} requests after {WARM_UP} warm-up"
    return [Figure("page_index_p95_ms", round(percentile(index, 95), 1), "<= 100", data, "ms", ours=index),
            Figure("page_event_search_p95_ms", round(percentile(search, 95), 1), "<= 100",
                   data + "; one camera, one night", "ms", ours=search)]
