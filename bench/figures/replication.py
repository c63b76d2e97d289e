"""A camera node replicating one night to the central server over loopback, against rsync.

Ours: ``meteorpi export run --once`` on the node (an event export and a file export), timed
from process start to exit (imports, database connection and marking included: the user waits
for them), everything durable when the command exits (the server fsyncs each file and
PostgreSQL commits with fsync on). Each pair gets a fresh central server (started, and its
workers booted, outside the timing): no login, pool or cache carried from an earlier pair, as
a cron-started exporter meets a server that has not seen it for a while. Baselines:
``rsync -a --fsync`` (as durable, the headline) and plain ``rsync -a`` of the node's file store
into an empty directory through an rsync daemon on loopback. rsync moves bytes only; ours also
moves and checks every record, so the goal allows 20%. At least REPLICATION_PAIRS pairs: the
figure is judged on every full run, so one odd pair must not decide it; the table gives the
range of the pairwise ratios beside their median. Before each side's clock starts, the disk is
flushed (``sync``): plain rsync leaves its 625 MiB dirty in the page cache, and whichever side
ran next paid for writing it back (in the rotation, ours followed plain rsync in most pairs).

``requests_per_entity`` comes from the same runs: POST /import... lines in the server's access
log per replicated entity (events plus file records).
"""
from __future__ import annotations

from collections.abc import Callable

import os
import statistics

from .. import ours
from ..cluster import Site
from ..harness import Figure, alternate, median_ratio
from ..night import NightSpec, build_night
from ..rsync import RsyncDaemon, count_files, ensure_rsync, timed_push
from . import SEED, Context, log

EXPORTS = (("night-events", "event"), ("night-files", "file"))
REPLICATION_PAIRS = 5


class OursReplication:
    """A node with a night whose exports point at ``target``; ``run()`` replicates it anew."""

    def __init__(self, ctx: Context, node: Site, central_db, spec: NightSpec, target: str,
                 server: ours.ServerProcess, fresh_server: bool = False):
        self.ctx, self.node, self.central_db, self.spec, self.server = ctx, node, central_db, spec, server
        self.fresh_server = fresh_server
        self.node_db = node.open()
        for name, export_type in EXPORTS:
            ours.export_add(node, name, target, export_type)
        self.requests: list[int] = []

    def close(self) -> None:
        self.node_db.close()

    def run(self, _round: int) -> float:
        """Reset the archive and the node's export tasks (and restart the server if each run
        gets a fresh one), then time one export run."""
        ours.reset_central(self.central_db)
        ours.reset_exports(self.node_db)
        if self.fresh_server:
            self.server.restart()
        os.sync()  # no side pays for the write-back of the one before (see the module's text)
        offset = self.server.log_offset()
        result = ours.export_once(self.node)
        self.requests.append(len(self.server.import_requests(offset)))
        self.check(result)
        return result.seconds

    def check(self, result: ours.ExportRun) -> None:
        """Count failed tasks and anything not replicated as errors."""
        where = f"{self.node.name}"
        if not result.ok:
            self.ctx.error(f"{where}: export run exited {result.returncode}: {result.stderr}", result.failed or 1)
        held = tuple(ours.count_held(self.central_db))
        if held != (self.spec.events, self.spec.files):
            self.ctx.error(f"{where}: archive holds {held[0]} events, {held[1]} files; expected "
                           f"{self.spec.events}, {self.spec.files}")
        left = ours.task_problems(self.node_db)
        if left:
            self.ctx.error(f"{where}: {left} export task(s) not complete", left)


def build_node(ctx: Context, name: str, spec: NightSpec, seed: int) -> Site:
    """A node site with ``spec``'s night registered (outside every timing)."""
    node = ctx.cluster.site(name)
    db = node.open()
    try:
        log(f"building {name}: {spec.describe()}")
        build_night(db, spec, seed, ctx.cluster.root / "scratch", camera_id=name)  # a camera per node
    finally:
        db.close()
    return node


def rsync_side(daemon: RsyncDaemon, source, url: str, fsync: bool, files: int,
               push: Callable[[str, str, bool], float] = timed_push):
    """A side for ``alternate``: empty the destination, time ``push`` (one rsync by default),
    check it is complete."""
    def run(_round: int) -> float:
        daemon.reset()
        os.sync()  # as OursReplication.run
        seconds = push(source, url, fsync)
        copied = count_files(daemon.dest)
        if copied != files:
            raise RuntimeError(f"rsync copied {copied} files, expected {files}")
        return seconds
    return run


def run(ctx: Context) -> list[Figure]:
    ensure_rsync()
    ours.check_available()
    spec = ctx.sizes.loopback
    node = build_node(ctx, "node-loopback", spec, SEED)
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-loopback.log") as server, \
                RsyncDaemon(ctx.cluster.root / "rsyncd-loopback") as daemon:
            replication = OursReplication(ctx, node, central_db, spec, server.url + "/import", server,
                                          fresh_server=True)
            try:
                out = alternate({
                    "ours": replication.run,
                    "rsync_fsync": rsync_side(daemon, node.files_dir, daemon.url(), True, spec.files),
                    "rsync": rsync_side(daemon, node.files_dir, daemon.url(), False, spec.files),
                }, ctx.pairs if ctx.quick else max(ctx.pairs, REPLICATION_PAIRS))
            finally:
                replication.close()
    finally:
        central_db.close()
    data = f"{spec.describe()}, loopback"
    per_entity = [r / spec.entities for r in replication.requests]
    return [
        Figure("replication_vs_rsync_fsync", median_ratio(out["ours"], out["rsync_fsync"]), "<= 1.2", data, "s",
               ours=out["ours"], baseline=out["rsync_fsync"]),
        Figure("replication_vs_rsync", median_ratio(out["ours"], out["rsync"]), "<= 3", data, "s",
               ours=out["ours"], baseline=out["rsync"], note="baseline without --fsync"),
        Figure("requests_per_entity", statistics.median(per_entity), "<= 0.1", data,
               ours=[float(r) for r in replication.requests],
               note=f"{spec.entities} entities (events + file records) per run; v1 needs about 2 per file"),
    ]
