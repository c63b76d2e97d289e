"""The figures, grouped by what they share (one data set, one server), and what they run on.

Each group is a function ``run(ctx) -> list[Figure]``; a group that cannot run yet raises
``NotAvailable`` and all its figures print ``n/a (reason)``, so the harness is usable before
every part of ours exists. Sizes live here, side by side, so ``--quick`` and the default are
easy to compare: the default is what ``bench/results.md`` reports.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

from ..cluster import Cluster
from ..harness import Figure
from ..night import NightSpec

KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3


@dataclass(frozen=True)
class Sizes:
    """How much data each figure moves."""
    loopback: NightSpec
    wan: NightSpec
    import_events: int
    scaling_node: NightSpec
    upload_bytes: int
    rms_night: tuple[int, int]  # RMS night to ingest: (detections, FF file size)
    flaky: NightSpec | None = None  # the night over a link that resets (None: the WAN night)
    exporters: int = 16  # nodes exporting at once in the scaling and feed figures


DEFAULT = Sizes(loopback=NightSpec(300, 4, 512 * KIB, 50), wan=NightSpec(40, 4, 256 * KIB, 10),
                import_events=2000, scaling_node=NightSpec(20, 2, 64 * KIB, 5), upload_bytes=GIB,
                rms_night=(300, int(3.7 * MIB)), flaky=NightSpec(40, 4, 256 * KIB, 10))
# --quick: a smoke test (< 3 minutes on 2 cores), its figures are not the judged ones.
QUICK = Sizes(loopback=NightSpec(5, 4, 64 * KIB, 3), wan=NightSpec(2, 4, 64 * KIB, 2),
              import_events=40, scaling_node=NightSpec(1, 1, 16 * KIB, 0), upload_bytes=256 * MIB,
              rms_night=(20, 256 * KIB), flaky=NightSpec(2, 4, 256 * KIB, 1), exporters=4)

WAN_RATE_MBIT = 20.0
WAN_RTT_MS = 40.0
SEED = 20260115


@dataclass
class Context:
    """What every figure group gets: the run's cluster, sizes, pair count and error tally."""
    cluster: Cluster
    sizes: Sizes
    pairs: int
    quick: bool
    errors: int = 0
    error_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: dict[str, str] = field(default_factory=dict)  # first figure of a group -> its load average

    def error(self, message: str, count: int = 1) -> None:
        """``count`` failed or confused tasks, or a run that did not replicate everything."""
        self.errors += max(count, 1)
        self.error_notes.append(message)
        log(f"ERROR: {message}")


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only ``name: value`` lines."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Group:
    names: tuple[str, ...]
    run: Callable[[Context], list[Figure]]


def groups() -> list[Group]:
    """Every figure group, in the order they run (cheap checks first)."""
    from . import alerts, feed, flaky, import_rate, pages, replication, rms_ingest, scaling, slow_clients, upload_rss, wan
    return [
        Group(("replication_vs_rsync_fsync", "replication_vs_rsync", "requests_per_entity"), replication.run),
        Group(("wan_replication_vs_rsync", "link_calibration_rate_mbit", "link_calibration_rtt_ms"), wan.run),
        Group(("flaky_8mb_replication_vs_rsync_partial", "flaky_2mb_replication_vs_rsync_partial",
               "flaky_bytes_sent_ratio"), flaky.run),
        Group(("import_vs_raw_sql", "import_v1_vs_raw_sql"), import_rate.run),
        Group(("scaling_16_vs_1", "p50_ms", "p99_ms"), scaling.run),
        Group(("upload_peak_rss_mb_over_idle",), upload_rss.run),
        Group(("ingest_vs_cp_fsync", "ingest_vs_cp_md5sum_fsync"), rms_ingest.run),
        Group(("feed_latency_p50_ms", "feed_latency_p99_ms", "feed_subscribers_import_ratio",
               "feed_memory_per_subscriber_kib"), feed.run),
        Group(("page_index_p95_ms", "page_event_search_p95_ms"), pages.run),
        Group(("slow_clients_import_p99_ms",), slow_clients.run),
        Group(("alert_latency_p99_ms", "coincidence_matching_events_per_s"), alerts.run),
    ]


ALL_NAMES = [n for g in groups() for n in g.names] + ["errors"]
