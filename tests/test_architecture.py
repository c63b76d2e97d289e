"""The architecture contract (.importlinter): imports point one way, model <- db <- export and
rms <- server; storage and the model import no web framework or HTTP client; no import cycles
between the modules of a package. Checked here so a change cannot quietly undo the layering."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_imports_keep_the_architecture_contract():
    """`lint-imports` keeps every contract; its report names the import that broke one."""
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout, run.stdout[-4000:]


def test_the_server_takes_file_bytes_in_through_the_database_not_its_file_store():
    """Import receivers store bytes through MeteorDatabase's methods: how the store keeps them
    (temp names, flushes, cut uploads' prefixes) stays inside meteorpi_db. Only where the store
    lives (``file_store.root``) may be named, for messages."""
    import re
    reaches = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
               for path in sorted((ROOT / "meteorpi_server").rglob("*.py"))
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if re.search(r"\.file_store\.(?!root\b)\w+", line)]
    assert not reaches, "\n".join(reaches)
