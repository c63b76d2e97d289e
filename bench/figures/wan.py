"""The same replication over a home uplink: 20 Mbit/s each way, 40 ms round trip added.

Both sides cross the same emulated link (``bench/link.py``), one emulator in front of our
server and one in front of the rsync daemon, with the same settings. The baseline is
``rsync -a --fsync``, as durable as ours. On a slow link bytes dominate, so the goal is tight
(10%): what costs here is per-request round trips, which batching removes. The emulator is
calibrated first and its measured rate and round trip are printed with the figure.
"""
from __future__ import annotations

from .. import ours
from ..harness import Figure, NotAvailable, alternate, median_ratio
from ..link import LinkEmulator, calibrate
from ..rsync import RsyncDaemon, ensure_rsync
from . import SEED, WAN_RATE_MBIT, WAN_RTT_MS, Context, log
from .replication import OursReplication, build_node, rsync_side


def calibration_figures(ctx: Context):
    """Measure the emulator itself; its rate and round trip are printed as figures."""
    calibration = calibrate(WAN_RATE_MBIT, WAN_RTT_MS)
    log(calibration.describe())
    ctx.notes.append(calibration.describe())
    if not calibration.ok:
        ctx.notes.append("the link emulator missed its calibration: the WAN figure is suspect")
    return calibration, [
        Figure("link_calibration_rate_mbit", round(calibration.measured_rate_mbit, 2),
               f"{WAN_RATE_MBIT:g} ± 10%", "bulk transfer through the emulator", "Mbit/s"),
        Figure("link_calibration_rtt_ms", round(calibration.measured_rtt_ms, 1),
               f"{WAN_RTT_MS:g} ± 10%", "1-byte request-response through the emulator", "ms"),
    ]


def run(ctx: Context) -> list[Figure]:
    calibration, figures = calibration_figures(ctx)
    try:
        ensure_rsync()
        ours.check_available()
    except NotAvailable as e:
        return figures + [Figure("wan_replication_vs_rsync", None, reason=str(e))]
    spec = ctx.sizes.wan
    node = build_node(ctx, "node-wan", spec, SEED + 1)
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    try:
        with ours.ServerProcess(central, ctx.cluster.root / "serve-wan.log") as server, \
                RsyncDaemon(ctx.cluster.root / "rsyncd-wan") as daemon, \
                LinkEmulator(server.port, WAN_RATE_MBIT, WAN_RTT_MS) as server_link, \
                LinkEmulator(daemon.port, WAN_RATE_MBIT, WAN_RTT_MS) as rsync_link:
            target = f"http://127.0.0.1:{server_link.port}/import"
            replication = OursReplication(ctx, node, central_db, spec, target, server)
            try:
                log(f"wan: {spec.describe()} through {WAN_RATE_MBIT:g} Mbit/s, {WAN_RTT_MS:g} ms")
                out = alternate({
                    "ours": replication.run,
                    "rsync_fsync": rsync_side(daemon, node.files_dir, daemon.url(rsync_link.port), True, spec.files),
                }, ctx.pairs)
            finally:
                replication.close()
    finally:
        central_db.close()
    data = (f"{spec.describe()}, link {WAN_RATE_MBIT:g} Mbit/s each way + {WAN_RTT_MS:g} ms RTT "
            f"(measured {calibration.measured_rate_mbit:.1f} Mbit/s, {calibration.measured_rtt_ms:.1f} ms)")
    return figures + [Figure("wan_replication_vs_rsync", median_ratio(out["ours"], out["rsync_fsync"]), "<= 1.1", data, "s",
                   ours=out["ours"], baseline=out["rsync_fsync"], note="baseline rsync -a --fsync",)]
