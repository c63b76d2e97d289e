"""Pairs, ratios, result records and the results file.

Why pairs and medians of ratios: the machine's speed drifts during a run (page cache, CPU
frequency, other tenants). Running ours and its baseline back to back, alternating which goes
first, and taking the median of the per-pair ratios cancels most of that drift and ignores one
odd pair, where a ratio of medians would not. The pure functions here (``pairwise_ratios``,
``median_ratio``, ``goal_met``) are what the smoke test checks.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

MIN_PAIRS = 3


class NotAvailable(Exception):
    """A figure cannot be measured yet (e.g. our server or exporter is not there): ``n/a``."""


@dataclass
class Figure:
    """One printed figure: ``name: value`` plus what the results table needs."""
    name: str
    value: float | None
    goal: str = "reported"
    data: str = ""
    unit: str = ""
    reason: str | None = None       # why the value is n/a
    ours: list[float] = field(default_factory=list)      # raw measurements, for the table
    baseline: list[float] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        """Exactly ``name: value`` (or ``name: n/a (reason)``), as the issue asks."""
        if self.value is None:
            reason = " ".join((self.reason or "not measured").split())  # one line, whatever it quotes
            return f"{self.name}: n/a ({reason})"
        return f"{self.name}: {format_value(self.value)}"

    @property
    def met(self) -> bool | None:
        return goal_met(self.value, self.goal)

    @property
    def pair_range(self) -> tuple[float, float] | None:
        """Lowest and highest pairwise ratio, for a figure that is a median of them."""
        if not self.ours or len(self.ours) != len(self.baseline):
            return None
        ratios = pairwise_ratios(self.ours, self.baseline)
        return min(ratios), max(ratios)

    def range_text(self) -> str:
        """``low–high`` of the pairwise ratios, or ``—``."""
        spread = self.pair_range
        return f"{format_value(spread[0])}–{format_value(spread[1])}" if spread else "—"


def format_value(value: float) -> str:
    """Integers as integers, large values without decimals, the rest to three significant digits
    (never in exponent form: the lines are read by people and by simple parsers)."""
    if float(value).is_integer() or abs(value) >= 100:
        return str(round(value))
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) >= 0.001 else f"{value:.2e}"


def pairwise_ratios(ours: list[float], baseline: list[float]) -> list[float]:
    """ours[i] / baseline[i] for each pair; the lists must pair up."""
    if len(ours) != len(baseline):
        raise ValueError(f"{len(ours)} measurements of ours but {len(baseline)} of the baseline")
    if any(b <= 0 for b in baseline):
        raise ValueError("a baseline measurement is not positive; cannot form a ratio")
    return [o / b for o, b in zip(ours, baseline)]


def median_ratio(ours: list[float], baseline: list[float]) -> float:
    """The median of the pairwise ratios (not the ratio of medians: see the module docstring)."""
    ratios = pairwise_ratios(ours, baseline)
    if not ratios:
        raise ValueError("no pairs measured")
    return statistics.median(ratios)


def goal_met(value: float | None, goal: str) -> bool | None:
    """Whether ``value`` meets a goal written ``<= 1.2``, ``>= 0.5`` or ``== 0``; None if no goal."""
    m = re.fullmatch(r"\s*(<=|>=|==)\s*([0-9.]+)\s*", goal or "")
    if value is None or m is None:
        return None
    op, bound = m.group(1), float(m.group(2))
    return {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default does."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def alternate(sides: dict[str, Callable[[int], float]], pairs: int) -> dict[str, list[float]]:
    """Run every side once per round for ``pairs`` rounds, rotating which side goes first.

    Each side gets the round index and returns its measurement (seconds or a rate); it resets
    its own target before it starts its clock. Returns the measurements by side, in round
    order, so ``median_ratio(out["ours"], out["baseline"])`` pairs them up.
    """
    names = list(sides)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(max(pairs, 1)):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(sides[name](i))
    return out


# -- the results file -------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    """Cores, memory and the versions a reader needs to compare runs."""
    import psutil
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2 ** 30:.1f} GiB",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "meteorpi": _package_version("meteorpi"),
        "rsync": _first_line(["rsync", "--version"]),
    }


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.splitlines()[0].strip() if out else "unknown"


# Figures judged on every full run (issue 12): each full run adds a row to a table that
# results.md keeps, so the file shows their range over runs, not one good run.
TRACKED = ("replication_vs_rsync_fsync", "replication_vs_rsync")
HISTORY_HEADING = "## Replication over full runs"
HISTORY_ROWS = 10


def write_results(path: Path, figures: list[Figure], info: dict[str, str], mode: str,
                  extra: list[str] | None = None, history: list[str] | None = None) -> None:
    """A markdown table of the figures, their goals and data, then ``history`` (rows of the
    full-run table, see ``history_row``), the machine and versions."""
    date = _now()
    lines = [
        "# meteorpi benchmark results",
        "",
        f"Written by `python -m bench` ({mode}) on {date}. Each ratio is the median of pairwise "
        "ratios ours/baseline over alternating pairs, `pair range` the lowest and highest of "
        "them; `ours`/`baseline` columns show the median of each side's raw measurements.",
        "",
        "| figure | value | pair range | goal | met | ours (median) | baseline (median) | data |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        value = format_value(f.value) if f.value is not None else f"n/a ({f.reason})"
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        ours = _median_text(f.ours, f.unit)
        base = _median_text(f.baseline, f.unit)
        data = _cell(f.data + (f"; {f.note}" if f.note else ""))
        lines.append(f"| `{f.name}` | {value} | {f.range_text()} | {f.goal} | {met} | {ours} | {base} | {data} |")
    if history:
        lines += ["", HISTORY_HEADING, "",
                  "Each full run (`python -m bench`, default sizes) adds a row; the newest is the table "
                  f"above. Median (pair range) of each figure, and the 1-minute load average of the machine "
                  f"(shared with other work) at the start and end of the figure's group. Last {HISTORY_ROWS} runs.",
                  "", "| run (UTC) | pairs | " + " | ".join(f"`{n}`" for n in TRACKED) + " | load average |",
                  "| --- | --- | " + " | ".join("---" for _ in TRACKED) + " | --- |"]
        lines += history[-HISTORY_ROWS:]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    if extra:
        lines += ["", "## Notes", ""] + [f"- {e}" for e in extra]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def history_row(figures: list[Figure], load: str) -> str:
    """This run's row of the full-run table: each tracked figure's median (pair range)."""
    by_name = {f.name: f for f in figures}
    cells = []
    for name in TRACKED:
        f = by_name.get(name)
        if f is None or f.value is None:
            cells.append("n/a")
        else:
            cells.append(f"{format_value(f.value)} ({f.range_text()}){'' if f.met is not False else ' **missed**'}")
    pairs = by_name[TRACKED[0]].ours if TRACKED[0] in by_name else []
    return f"| {_now()} | {len(pairs) or '—'} | " + " | ".join(cells) + f" | {load or '—'} |"


def read_history(path: Path) -> list[str]:
    """The full-run table's rows in an existing results file (none if it has no such table)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    if HISTORY_HEADING not in lines:
        return []
    rows = []
    for line in lines[lines.index(HISTORY_HEADING) + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("| ") and not line.startswith(("| run ", "| ---")):
            rows.append(line)
    return rows


def load_average() -> float:
    """The machine's 1-minute load average (other tenants' work included)."""
    return os.getloadavg()[0]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cell(text: str) -> str:
    """Text fit for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _median_text(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.3g} {unit}".strip()
