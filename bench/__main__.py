"""``python -m bench [--quick] [--only NAME[,NAME]] [--pairs N] [--keep]``

Prints one ``name: value`` line per figure on stdout (progress goes to stderr), then writes the
results table: ``bench/results.md`` for a full default run (the figures we are judged by),
``bench/work/results-quick.md`` or ``bench/work/results-partial.md`` otherwise, so a smoke run
never overwrites the reported figures. A full run also adds a row to the table of full runs that
``bench/results.md`` keeps (the replication figures' medians and pair ranges, and the machine's
load), so the file shows how they vary from run to run. Exit status 0 unless the harness itself broke: figures
missing their goals are reported, not failed (CI runs ``--quick`` without judging figures).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from .cluster import WORK_ROOT, Cluster
from .figures import ALL_NAMES, DEFAULT, QUICK, Context, groups, log
from .figures.replication import REPLICATION_PAIRS

# A smoke test checks that every figure gets a value and nothing fails; one pair does that, and
# the suite runs it on every CI run.
QUICK_PAIRS = 1
from .harness import (MIN_PAIRS, Figure, NotAvailable, history_row, load_average, machine_info, read_history,
                      write_results)
from .rsync import ensure_rsync

RESULTS = Path(__file__).resolve().parent / "results.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data sets: a smoke test in under 3 minutes")
    parser.add_argument("--only", type=lambda s: [n.strip() for n in s.split(",") if n.strip()], default=None,
                        metavar="NAME[,NAME]", help=f"run only these figures ({', '.join(ALL_NAMES)})")
    parser.add_argument("--pairs", type=int, default=None,
                        help=f"pairs per figure (at least {MIN_PAIRS}; --quick runs one: it judges nothing)")
    parser.add_argument("--keep", action="store_true", help=f"keep the run's data under {WORK_ROOT}")
    parser.add_argument("--results", type=Path, default=None, help="write the results table here instead")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in ALL_NAMES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(ALL_NAMES)}")
    if args.pairs is None:
        args.pairs = QUICK_PAIRS if args.quick else MIN_PAIRS
    elif args.pairs < MIN_PAIRS:
        parser.error(f"--pairs must be at least {MIN_PAIRS}")
    return args


def run_group(ctx: Context, group, wanted: set[str]) -> list[Figure]:
    """One group's figures; n/a for each of them when it cannot run or breaks."""
    t0, load_before = time.monotonic(), load_average()
    try:
        figures = group.run(ctx)
    except NotAvailable as e:
        return [Figure(n, None, reason=str(e)) for n in group.names if n in wanted]
    except Exception as e:  # a broken figure must not take the others down
        traceback.print_exc(file=sys.stderr)
        ctx.error(f"{group.names[0]}: {type(e).__name__}: {e}")
        return [Figure(n, None, reason=f"failed: {type(e).__name__}: {str(e)[:200]}")
                for n in group.names if n in wanted]
    finally:
        load = f"{load_before:.1f} → {load_average():.1f} on {os.cpu_count()} cores"
        ctx.loads[group.names[0]] = load
        ctx.notes.append(f"{group.names[0]} group: {time.monotonic() - t0:.0f} s, load average {load}")
        log(f"{group.names[0]} group took {time.monotonic() - t0:.0f}s (load average {load})")
    # The emulator's calibration goes with any figure of its group: it vouches for the link.
    return [f for f in figures if f.name in wanted or f.name.startswith("link_calibration")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = set(args.only or ALL_NAMES)
    started = time.monotonic()
    try:
        ensure_rsync()
    except NotAvailable as e:
        log(str(e))  # the rsync figures will say n/a; the others still run
    figures: list[Figure] = []
    with Cluster(keep=args.keep) as cluster:
        ctx = Context(cluster, QUICK if args.quick else DEFAULT, args.pairs, args.quick)
        info = machine_info()
        info["postgresql"] = cluster.postgres_version()
        for group in groups():
            if wanted & set(group.names):
                for figure in run_group(ctx, group, wanted):
                    print(figure.line(), flush=True)
                    figures.append(figure)
        errors = Figure("errors", float(ctx.errors), "== 0", "failed or confused tasks, incomplete replications",
                        note="; ".join(n[:200] for n in ctx.error_notes[:5]))
        print(errors.line(), flush=True)
        figures.append(errors)
        if args.keep:
            log(f"data kept in {cluster.root}")
    elapsed = time.monotonic() - started
    mode = "--quick" if args.quick else "default sizes"
    info["pairs"] = f"{args.pairs} (replication on loopback: {args.pairs if args.quick else max(args.pairs, REPLICATION_PAIRS)})"
    info["wall time"] = f"{elapsed:.0f} s"
    full = not args.quick and args.only is None
    path = args.results or (RESULTS if full else WORK_ROOT / f"results-{'quick' if args.quick else 'partial'}.md")
    history = None
    if full:  # every full run is kept in the table of runs, good or bad
        history = read_history(path) + [history_row(figures, ctx.loads.get("replication_vs_rsync_fsync", ""))]
    write_results(path, figures, info, mode, ctx.notes, history)
    log(f"{mode} run took {elapsed:.0f}s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
