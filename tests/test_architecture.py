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
