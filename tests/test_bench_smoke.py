"""The benchmark's own machinery, quickly: the link emulator keeps its promises and the harness
turns timings into figures correctly; and ``python -m bench --quick`` end to end, as CI's smoke
run of the benchmark (about a minute): every figure gets a value and nothing failed. Its values
are never judged here: speed is judged by the figures of a full run, never by a test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import (Figure, alternate, goal_met, history_row, median_ratio, pairwise_ratios,
                           percentile, read_history, write_results)
from bench.figures import ALL_NAMES
from bench.link import Pacer, calibrate

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)  # a fresh machine may first have to install rsync with apt-get
def test_quick_bench_gives_every_figure_a_value_and_counts_no_errors(tmp_path):
    """What a full run would report, in small: a change that breaks a figure (a baseline that no
    longer copies what it should, an export run that fails) shows here, not weeks later."""
    results = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(results)], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    missing = set(ALL_NAMES) - set(figures)
    assert not missing, f"no line for {sorted(missing)}:\n{proc.stdout}"
    broken = {name: value for name, value in figures.items() if value.startswith("n/a")}
    assert not broken, f"{broken}\n{proc.stderr[-3000:]}"
    assert figures["errors"] == "0", proc.stderr[-3000:]
    assert "| `replication_vs_rsync_fsync` |" in results.read_text()


def test_link_emulator_calibration_meets_its_rate_and_round_trip():
    """A bulk transfer reaches the configured rate within 10% and a small request-response
    takes the configured round trip (small sizes: this runs in about half a second). One retry:
    a CPU-starved test machine may stall the emulator's thread once, which is not what this
    test is about."""
    c = calibrate(rate_mbit=40, rtt_ms=50, bulk_bytes=1_000_000, pings=5)
    if not c.ok:
        c = calibrate(rate_mbit=40, rtt_ms=50, bulk_bytes=1_000_000, pings=5)
    assert c.ok, c.describe()


def test_pacer_spaces_chunks_at_the_rate_then_delays_them():
    """Back-to-back chunks leave one serialisation time apart, each a half round trip late."""
    pacer = Pacer(rate_bytes_per_s=1000.0, delay_s=0.02, burst_bytes=100)
    first, _ = pacer.admit(0.0, 100)
    second, wait = pacer.admit(0.0, 100)
    assert first == pytest.approx(0.1 + 0.02)
    assert second == pytest.approx(0.2 + 0.02)
    assert wait == pytest.approx(0.1)  # the bucket holds one chunk: pause until it drains


@pytest.mark.parametrize("ours, baseline, expected", [
    ([2.0, 3.0, 4.0], [1.0, 1.0, 1.0], 3.0),
    ([1.0, 1.0, 10.0], [1.0, 1.0, 1.0], 1.0),      # one odd pair does not move the median
    ([1.2, 2.4, 3.6], [1.0, 2.0, 3.0], 1.2),       # drift that hits both sides cancels
    ([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], 2.5),
])
def test_median_of_pairwise_ratios(ours, baseline, expected):
    """The figure is the median of per-pair ratios, not a ratio of medians."""
    assert median_ratio(ours, baseline) == pytest.approx(expected)


@pytest.mark.parametrize("ours, baseline", [([1.0], [1.0, 2.0]), ([1.0], [0.0]), ([], [])])
def test_ratios_refuse_unpaired_or_empty_measurements(ours, baseline):
    with pytest.raises(ValueError):
        median_ratio(ours, baseline)


def test_pairwise_ratios_keep_pair_order():
    assert pairwise_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]


def test_alternate_rotates_which_side_goes_first():
    """Each round starts with a different side, and every side runs once per round."""
    calls = []
    sides = {name: (lambda i, name=name: calls.append((i, name)) or 1.0) for name in ("a", "b", "c")}
    out = alternate(sides, pairs=3)
    assert out == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    firsts = [calls[i * 3][1] for i in range(3)]
    assert firsts == ["a", "b", "c"]


@pytest.mark.parametrize("value, goal, met", [
    (1.1, "<= 1.2", True), (1.3, "<= 1.2", False), (0.5, ">= 0.5", True), (0.0, "== 0", True),
    (1.0, "== 0", False), (3.0, "reported", None), (None, "<= 1", None),
])
def test_goal_met(value, goal, met):
    assert goal_met(value, goal) is met


def test_percentile_interpolates():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)


@pytest.mark.parametrize("figure, line", [
    (Figure("replication_vs_rsync_fsync", 1.23456), "replication_vs_rsync_fsync: 1.23"),
    (Figure("errors", 0.0), "errors: 0"),
    (Figure("errors", 3.0), "errors: 3"),
    (Figure("import_vs_raw_sql", None, reason="server missing"), "import_vs_raw_sql: n/a (server missing)"),
])
def test_figure_lines_are_exactly_name_colon_value(figure, line):
    assert figure.line() == line


def test_results_keep_every_full_run_of_the_tracked_figures(tmp_path):
    """results.md shows the replication figures' range over full runs, not one good run: each
    full run adds a row (median and pair range, a missed goal marked) to those already there."""
    path = tmp_path / "results.md"
    runs = [([1.1, 1.3, 1.0], [1.0, 1.0, 1.0]), ([1.5, 1.4, 1.6], [1.0, 1.0, 1.0])]
    for ours, baseline in runs:
        figures = [Figure("replication_vs_rsync_fsync", median_ratio(ours, baseline), "<= 1.2", unit="s",
                          ours=ours, baseline=baseline),
                   Figure("replication_vs_rsync", None, reason="rsync missing")]
        history = read_history(path) + [history_row(figures, "3.0 → 4.5 on 2 cores")]
        write_results(path, figures, {"cores": "2"}, "default sizes", history=history)
    rows = read_history(path)
    assert len(rows) == 2
    assert "| 1.1 (1–1.3) | n/a | 3.0 → 4.5 on 2 cores |" in rows[0]
    assert "1.5 (1.4–1.6) **missed**" in rows[1]
    assert "| `replication_vs_rsync_fsync` | 1.5 | 1.4–1.6 | <= 1.2 | **no** |" in path.read_text()
