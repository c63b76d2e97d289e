"""A night over a flaky home uplink (issue 18): 20 Mbit/s, 40 ms, and every TCP connection reset
after a random 0.75–1.25 × N bytes (N about 8 MB, then about 2 MB), as a poor DSL or 4G line.

Each side is retried at once until it succeeds, as a cron job or an operator would:
``meteorpi export run --once`` (tasks a failed run deferred are made due again between tries)
against ``rsync -a --fsync --partial`` (which keeps a cut file's prefix and continues it). The
time of a side is from its first try's start to its last try's end. ``flaky_bytes_sent_ratio``
is what our exporter put on the link (headers and JSON included) over the night's file bytes.
"""
from __future__ import annotations

import subprocess
import time

from .. import ours
from ..harness import Figure, NotAvailable, alternate, median_ratio
from ..link import LinkEmulator
from ..rsync import STORE_EXTRAS, TRANSFER_TIMEOUT_SECONDS, RsyncDaemon, ensure_rsync
from . import DEFAULT, SEED, WAN_RATE_MBIT, WAN_RTT_MS, Context, log
from .replication import OursReplication, build_node, rsync_side

RESETS = (("8mb", 8_000_000), ("2mb", 2_000_000))
MAX_TRIES = 200


class FlakyOurs(OursReplication):
    """Our side: ``export run --once`` retried at once until the archive holds the night."""

    def __init__(self, ctx, node, *args, link: LinkEmulator, **kwargs):
        db = node.open()
        try:  # the exports of the previous reset size point at another link
            for config in db.get_export_configurations():
                db.delete_export_configuration(config.name)
        finally:
            db.close()
        super().__init__(ctx, node, *args, **kwargs)
        self.link, self.sent, self.tries = link, [], []

    def run(self, _round: int) -> float:
        ours.reset_central(self.central_db)
        ours.reset_exports(self.node_db)
        before, started = self.link.bytes_up, time.perf_counter()
        for tries in range(1, MAX_TRIES + 1):
            result = ours.export_once(self.node)
            if result.ok and not ours.task_problems(self.node_db):
                break
            for config in self.node_db.get_export_configurations():
                self.node_db.defer_export_tasks(config.config_id, 0)  # retried at once
        seconds = time.perf_counter() - started
        self.sent.append(self.link.bytes_up - before)
        self.tries.append(tries)
        self.check(result)
        return seconds


def partial_push(source, url: str, fsync: bool = True) -> float:
    """``rsync -a --fsync --partial`` retried at once until it exits 0; seconds for all tries."""
    argv = ["rsync", "-a", "--fsync", "--partial"] + STORE_EXTRAS + [f"{source}/", url]
    started = time.perf_counter()
    for _ in range(MAX_TRIES):
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TRANSFER_TIMEOUT_SECONDS)
        if proc.returncode == 0:
            return time.perf_counter() - started
    raise RuntimeError(f"rsync --partial did not complete in {MAX_TRIES} tries: {proc.stderr[-300:]}")


def run(ctx: Context) -> list[Figure]:
    names = [f"flaky_{label}_replication_vs_rsync_partial" for label, _ in RESETS] + ["flaky_bytes_sent_ratio"]
    try:
        ensure_rsync()
        ours.check_available()
    except NotAvailable as e:
        return [Figure(name, None, reason=str(e)) for name in names]
    spec = ctx.sizes.flaky
    # --quick moves a small night: resets scaled with it, so it is still cut several times.
    scale = spec.total_bytes / DEFAULT.flaky.total_bytes if ctx.quick else 1.0
    node = build_node(ctx, "node-flaky", spec, SEED + 18)
    central = ctx.cluster.site("central")
    central_db = central.open()
    figures, sent_ratios = [], []
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-flaky.log") as server, \
                RsyncDaemon(ctx.cluster.root / "rsyncd-flaky") as daemon:
            for label, every in RESETS:
                every = max(512 * 1024, int(every * scale))
                with LinkEmulator(server.port, WAN_RATE_MBIT, WAN_RTT_MS, reset_every=every, seed=SEED) as server_link, \
                        LinkEmulator(daemon.port, WAN_RATE_MBIT, WAN_RTT_MS, reset_every=every, seed=SEED) as rsync_link:
                    target = f"http://127.0.0.1:{server_link.port}/import"
                    replication = FlakyOurs(ctx, node, central_db, spec, target, server, link=server_link)
                    try:
                        log(f"flaky {label}: {spec.describe()}, resets every ~{every:,} bytes")
                        out = alternate({
                            "ours": replication.run,
                            "rsync_partial": rsync_side(daemon, node.files_dir, daemon.url(rsync_link.port), True,
                                                        spec.files, push=partial_push),
                        }, ctx.pairs)
                    finally:
                        replication.close()
                sent_ratios += [s / spec.total_bytes for s in replication.sent]
                data = (f"{spec.describe()}, link {WAN_RATE_MBIT:g} Mbit/s + {WAN_RTT_MS:g} ms, each connection reset "
                        f"after 0.75-1.25 x {every:,} bytes; tries of ours {replication.tries}")
                figures.append(Figure(f"flaky_{label}_replication_vs_rsync_partial",
                                      median_ratio(out["ours"], out["rsync_partial"]), "<= 1.1", data, "s",
                                      ours=out["ours"], baseline=out["rsync_partial"],
                                      note="baseline rsync -a --fsync --partial, both retried at once until done"))
    finally:
        central_db.close()
    sent_ratios.sort()
    median = sent_ratios[len(sent_ratios) // 2] if sent_ratios else None
    figures.append(Figure("flaky_bytes_sent_ratio", round(median, 3) if median is not None else None, "<= 1.3",
                          f"bytes our exporter sent over the link / the night's file bytes "
                          f"(runs: {', '.join(f'{r:.2f}' for r in sent_ratios)})", ""))
    return figures
