"""The counts the reliability tests record, and RESULTS.md rendered from them.

Each test adds to its ``Tally`` (the ``tally`` fixture): kills survived, faults injected, inputs
tried, 5xx answers seen, entities lost, plus measurements worth reading. At the end of a session
the conftest writes the tallies of the tests that ran to ``last-run.json`` in ``RUN_DIR``
(outside the repository: a test run never dirties a checkout), with the committed results
merged in and rendered to ``RUN_DIR/RESULTS.md`` for reading.

``python -m tests.reliability.results --update`` is the one way to change the committed report:
it merges the last run into ``results.json`` (under ``ci`` or ``long``, so a partial run
updates only its own tests) and re-renders ``RESULTS.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
# Where a test session writes what it measured (METEORPI_RELIABILITY_RESULTS overrides).
RUN_DIR = Path(os.environ.get("METEORPI_RELIABILITY_RESULTS",
                              Path(tempfile.gettempdir()) / "meteorpi-reliability"))
LAST_RUN = RUN_DIR / "last-run.json"
# The standard columns, in order; anything else a test records goes to "measured".
COLUMNS = [("kills", "kills survived"), ("faults", "faults injected"), ("inputs", "inputs tried"),
           ("server_errors", "5xx seen"), ("lost", "entities lost"), ("duplicated", "duplicated")]
COUNTED = {key for key, _ in COLUMNS}


class Tally:
    """What one test did: counters (added up) and measurements (last value wins)."""

    def __init__(self, title: str, area: str):
        self.title, self.area = title, area
        self.counts: dict[str, int] = defaultdict(int)
        self.measured: dict[str, Any] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def measure(self, key: str, value: Any) -> None:
        self.measured[key] = value

    def as_dict(self) -> dict:
        return {"title": self.title, "area": self.area, "counts": dict(self.counts), "measured": self.measured}


def merge(mode: str, ran: dict[str, dict], into: Path = RESULTS_JSON) -> dict:
    """The results of ``into`` with this session's tallies (nodeid -> tally with outcome/seconds)."""
    try:
        data = json.loads(into.read_text())
    except (OSError, ValueError):
        data = {}
    section = data.setdefault(mode, {})
    section.update(ran)
    data[f"{mode}_environment"] = {"python": platform.python_version(), "machine": platform.machine(),
                                   "updated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    return data


def save_run(mode: str, ran: dict[str, dict]) -> Path:
    """Record a session's tallies in RUN_DIR (never in the repository); RUN_DIR/RESULTS.md shows them."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LAST_RUN.write_text(json.dumps({"mode": mode, "ran": ran}, indent=1, sort_keys=True) + "\n")
    (RUN_DIR / "RESULTS.md").write_text(render(merge(mode, ran)))
    return RUN_DIR / "RESULTS.md"


def update_committed(run: Path = LAST_RUN) -> None:
    """Merge a recorded run into the committed results.json and RESULTS.md."""
    last = json.loads(run.read_text())
    data = merge(last["mode"], last["ran"])
    RESULTS_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    write_markdown(data)


def _cell(value) -> str:
    return "" if value in (None, 0, "") else str(value)


def _grouped(section: dict) -> dict[str, dict]:
    """Parametrised cases of one test function added up into one row."""
    rows: dict[str, dict] = {}
    for nodeid, entry in section.items():
        name = nodeid.split("::", 1)[-1].split("[", 1)[0]
        row = rows.setdefault(name, {"area": entry["area"], "title": entry["title"], "cases": 0, "seconds": 0.0,
                                     "counts": defaultdict(int), "outcomes": set()})
        row["cases"] += 1
        row["seconds"] += entry["seconds"]
        row["outcomes"].add(entry["outcome"])
        for key, value in entry["counts"].items():
            row["counts"][key] += value
    return rows


def _table(section: dict) -> list[str]:
    lines = ["| area | test | cases | " + " | ".join(label for _, label in COLUMNS) + " | outcome | seconds |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " | --- | ---: |"]
    totals: dict[str, int] = defaultdict(int)
    for name, row in sorted(_grouped(section).items(), key=lambda kv: (kv[1]["area"], kv[0])):
        counts = row["counts"]
        for key in COUNTED:
            totals[key] += counts.get(key, 0)
        cells = [str(counts.get(key, 0)) if key in ("server_errors", "lost") else _cell(counts.get(key))
                 for key, _ in COLUMNS]
        outcome = "passed" if row["outcomes"] == {"passed"} else "/".join(sorted(row["outcomes"]))
        lines.append(f"| {row['area']} | `{name}` — {row['title']} | {row['cases']} | " + " | ".join(cells)
                     + f" | {outcome} | {row['seconds']:.1f} |")
    lines.append(f"| **total** | | {len(section)} | " + " | ".join(f"**{totals[key]}**" for key, _ in COLUMNS)
                 + f" | | {sum(e['seconds'] for e in section.values()):.0f} |")
    return lines


def _measurements(section: dict) -> list[str]:
    lines = []
    for nodeid, entry in sorted(section.items()):
        for key, value in sorted(entry["measured"].items()):
            lines.append(f"- `{nodeid.split('::', 1)[-1]}` {key}: {value}")
    return lines


def _extra_counts(section: dict) -> list[str]:
    extra: dict[str, int] = defaultdict(int)
    for entry in section.values():
        for key, value in entry["counts"].items():
            if key not in COUNTED:
                extra[key] += value
    return [f"- {key}: {value}" for key, value in sorted(extra.items())]


def render(data: dict) -> str:
    """RESULTS.md from the merged results."""
    out = [HEADER.strip(), ""]
    for mode, title in (("ci", "Default run (CI)"), ("long", "`--long` run")):
        section = data.get(mode)
        env = data.get(f"{mode}_environment", {})
        if not section:
            out += [f"## {title}", "", "Not run yet.", ""]
            continue
        failed = [n for n, e in section.items() if e["outcome"] != "passed"]
        out += [f"## {title}", "",
                f"Last updated {env.get('updated', '?')} (Python {env.get('python', '?')}). "
                f"{len(section)} tests, {len(section) - len(failed)} passed"
                + (f", **{len(failed)} not passed: {', '.join(failed)}**" if failed else "") + ".", ""]
        out += _table(section) + [""]
        extra = _extra_counts(section)
        if extra:
            out += ["Other answers counted (not failures; see Decisions and limits):", ""] + extra + [""]
        measured = _measurements(section)
        if measured:
            out += ["Measurements:", ""] + measured + [""]
    out.append(FOOTER.strip())
    return "\n".join(out) + "\n"


def write_markdown(data: dict) -> None:
    RESULTS_MD.write_text(render(data))


HEADER = """
# Reliability and security results

Generated by the suite in `tests/reliability/` (`python -m pytest tests/reliability` for the
default numbers, `--long` for the big ones) from `results.json`; do not edit by hand —
`python -m tests.reliability.results` re-renders it. Every number below was counted by the test
named beside it during the run shown. "5xx seen" counts answers with a status of 500 or more
that were not an expected 503 during a database outage; "entities lost" counts entities the
node holds that the central archive did not end up holding whole and byte-identical;
"duplicated" counts rows held more than once.

What each area does (the tests' docstrings say more):

- **kill server** — `meteorpi serve` (gunicorn) SIGKILLed at seeded random moments while a
  node's exporter replicates to it, restarted each time; then node and central are compared
  entity by entity and byte by byte (`archive_check`), rows are counted per table, and the
  killed servers' half-received uploads must be neither held nor left on disk (each restart
  removes them).
- **kill exporter** — `meteorpi export run --once` SIGKILLed mid-upload and restarted, repeatedly.
- **postgres** — the central's embedded PostgreSQL stopped with `pg_ctl stop -m immediate` under
  a running `meteorpi serve`, then started: 503 JSON with Retry-After meanwhile, recovery without
  a server restart, nothing half-imported.
- **network** — a TCP fault proxy (`fault_proxy.py`) between exporter and server: connection
  reset mid-upload, a stalled connection (both sides' timeouts), slow drip clients beside fast ones.
- **concurrency** — 8 exporters delivering the same entities at the same moment.
- **fuzz** — hypothesis: valid bodies mutated field by field, raw bytes, data-route paths and
  multipart bodies, in process (Flask test client, real database and file store) and over a
  real socket; every rejected request must leave the database and the file store unchanged.
- **openapi** — `GET /openapi.json` validated as OpenAPI 3.1 and shown to follow the model;
  schemathesis against the live server.
- **hostile input** — nesting, huge strings, oversized bodies, invalid UTF-8, NUL bytes,
  out-of-range numbers, duplicate keys against `meteorpi serve`, timing and worker memory.
- **security** — route coverage of the auth matrix, password hashes in a database dump, export
  passwords in logs and CLI output, login refusal timing, path traversal, SQL metacharacters.

Already proven elsewhere and not repeated here: the per-route auth matrix
(`tests/test_server_auth.py::test_auth_matrix`), the message of each bad-body class
(`tests/test_server_input.py`), one exporter kill and one server kill
(`tests/test_exporter_crash.py`), two concurrent deliveries (`tests/test_server_protocol.py::
test_same_event_delivered_by_two_nodes_at_once_is_stored_once`), the database cut through a TCP
relay (`tests/test_server_resilience.py`), a stalled body on gunicorn and a 1 GiB upload with
flat memory (`tests/test_server_serving.py`).
"""

FOOTER = """
## Found and fixed while building this suite

- A lone surrogate in any string field (JSON `"\\ud800"`) reached PostgreSQL and answered 500
  (`UnicodeEncodeError` in psycopg2). Fixed in `meteorpi_model/fields.py` (`Str.decode` refuses it
  with a 400 naming the field). Found by the field-by-field sweep of `test_fuzz.py`.
- `pg_ctl stop -m immediate` under a running server answered 500: psycopg2 raises the bare
  `DatabaseError` "server closed the connection unexpectedly", which the pool did not count as a
  lost connection. Fixed in `meteorpi_db/pool.py` (now 503 with Retry-After, and the pool recovers).
- Two exporters uploading the same file at once (protocol version 1): the second request saw the
  bytes published between its two checks, took them for "other bytes", deleted them and failed the
  event — and a concurrent import could have stored the record without its bytes. Fixed in
  `meteorpi_server/importer_api.py` (`_other_bytes_held` returns nothing when the held MD5 is the
  record's). Found by `test_concurrency.py`.

## Decisions and limits

- schemathesis runs every documented operation against `meteorpi serve`; its "schema-valid data
  must be accepted" check is off because cross-field rules (lat_min <= lat_max, valid_to >=
  valid_from, an event's files on its own camera) cannot be said in JSON Schema; its probe of
  every accepted request with bad credentials runs only with `--long` (each refusal costs a
  deliberately slow password hash). It is driven through hypothesis directly: schemathesis'
  pytest plugin (`from_fixture`) does not run under pytest 9.
- gunicorn refuses a request line over 4094 bytes itself, with a 414 the worker answers as JSON
  (documented in the OpenAPI document, counted as `gunicorn_414` by the socket fuzz); werkzeug
  answers a path holding `//` with an HTML 308 redirect (counted as `redirects_308`), which
  changes nothing.
- A slow client holds one gunicorn thread while its body trickles in: `server.timeout_seconds`
  ends a stalled connection, not a dripping one. Clients are served beside up to
  workers x threads - 1 slow ones (tested: 6 beside 8 threads); beyond that they queue. A proxy
  in front (nginx request buffering) is the usual answer for hostile networks.
- Export passwords are stored recoverable in `export_config` on the node (they must be sent as
  Basic credentials); users' passwords are scrypt hashes only (`test_security.py` dumps the
  database to prove it).
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.results",
                                     description="Update the committed reliability report.")
    parser.add_argument("--update", action="store_true",
                        help=f"merge the last test run ({LAST_RUN}) into results.json, then render RESULTS.md")
    args = parser.parse_args()
    if args.update:
        update_committed()
    else:
        write_markdown(json.loads(RESULTS_JSON.read_text()))
    print(f"wrote {RESULTS_MD}")
