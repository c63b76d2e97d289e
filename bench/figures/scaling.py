"""Many cameras at once: 16 exporters (separate processes, separate cameras) against 1.

A central archive serves a whole network; the night's uploads overlap. Each of 16 nodes has
its own database, file store and camera; ours starts 16 ``meteorpi export run --once`` at the
same moment and measures the aggregate rate (all their entities over the wall time until the
last exits); the baseline is node 0's exporter alone. The ratio says how much the server gains
from concurrency (>= 1.5 on 2 cores).

The latencies of every import request during the 16-exporter runs are read from the server's
access log (``meteorpi serve`` logs each request's duration): ``p50_ms`` and ``p99_ms``.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .. import ours
from ..harness import Figure, alternate, median_ratio, percentile
from ..night import NightSpec
from . import SEED, Context, log
from .replication import EXPORTS, build_node


# The one-exporter side lasts about 0.2 s, much of it the process starting, so one slow start
# moves a pair's ratio by a quarter (1.41 to 1.91 seen between full runs of 3 pairs); a pair
# costs about 3 s, so this figure takes more of them than the others.
MIN_SCALING_PAIRS = 7


class Fleet:
    """``ctx.sizes.exporters`` nodes exporting to one server."""

    def __init__(self, ctx: Context, spec: NightSpec, server: ours.ServerProcess, central_db, prefix: str = "node-s"):
        self.ctx, self.spec, self.server, self.central_db = ctx, spec, server, central_db
        # Each group builds nodes of its own (``prefix``): a run's cluster is shared by every group.
        self.nodes = [build_node(ctx, f"{prefix}{i:02d}", spec, SEED + 100 + i) for i in range(ctx.sizes.exporters)]
        # `meteorpi export add` x 32 costs half a minute in sequence; a few at a time is enough.
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda args: ours.export_add(*args),
                          [(node, name, server.url + "/import", export_type)
                           for node in self.nodes for name, export_type in EXPORTS]))
        self.dbs = [node.open() for node in self.nodes]
        self.latencies_ms: list[float] = []

    def close(self) -> None:
        for db in self.dbs:
            db.close()

    def _reset(self, count: int) -> None:
        ours.reset_central(self.central_db)
        for db in self.dbs[:count]:
            ours.reset_exports(db)

    def run(self, count: int) -> float:
        """Entities per second with ``count`` exporters started together."""
        self._reset(count)
        offset = self.server.log_offset()
        t0 = time.perf_counter()
        started = [ours.start_export(node) for node in self.nodes[:count]]
        results = [ours.finish_export(proc, t) for proc, t in started]
        wall = time.perf_counter() - t0
        if count > 1:
            self.latencies_ms += self.server.import_latencies_ms(offset)
        self._check(results, count)
        return count * self.spec.entities / wall

    def _check(self, results: list[ours.ExportRun], count: int) -> None:
        for node, result, db in zip(self.nodes, results, self.dbs):
            if not result.ok:
                self.ctx.error(f"{node.name}: export run exited {result.returncode}: {result.stderr}",
                               result.failed or 1)
            left = ours.task_problems(db)
            if left:
                self.ctx.error(f"{node.name}: {left} export task(s) not complete", left)
        held = tuple(ours.count_held(self.central_db))
        expected = (count * self.spec.events, count * self.spec.files)
        if held != expected:
            self.ctx.error(f"scaling x{count}: archive holds {held}, expected {expected}")


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    spec = ctx.sizes.scaling_node
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    pairs = ctx.pairs if ctx.quick else max(ctx.pairs, MIN_SCALING_PAIRS)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-scaling.log") as server:
            fleet = Fleet(ctx, spec, server, central_db)
            try:
                log(f"scaling: {ctx.sizes.exporters} nodes x {spec.describe()}")
                out = alternate({"ours": lambda i: fleet.run(ctx.sizes.exporters),
                                 "baseline": lambda i: fleet.run(1)}, pairs)
            finally:
                fleet.close()
    finally:
        central_db.close()
    data = f"{ctx.sizes.exporters} nodes, each {spec.describe()}; rate = (events + file records)/s; {pairs} pairs"
    figures = [Figure("scaling_16_vs_1", median_ratio(out["ours"], out["baseline"]), ">= 1.5", data,
                      "entities/s", ours=out["ours"], baseline=out["baseline"])]
    lat = fleet.latencies_ms
    if lat:
        note = f"{len(lat)} POST /import... requests in the {ctx.sizes.exporters}-exporter runs (server side, %(D)s)"
        figures += [Figure("p50_ms", round(percentile(lat, 50), 1), data=note),
                    Figure("p99_ms", round(percentile(lat, 99), 1), data=note)]
    else:
        reason = "no request durations in the access log"
        figures += [Figure("p50_ms", None, reason=reason), Figure("p99_ms", None, reason=reason)]
    return figures
