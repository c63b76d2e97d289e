"""The browser the page tests drive: the distribution's headless Chromium through its own
chromedriver (Selenium is pointed at /usr/bin/chromedriver and never downloads a driver), one
per session, and axe-core for the accessibility check.

A machine without them gets them here, so CI on a fresh machine runs these tests rather than
skipping them: Chromium with ``apt-get install chromium chromium-driver`` (as root, under a lock
so parallel sessions install once), axe-core with ``npm pack`` from the npm registry into
tests/browser/.cache/. When either cannot be had the tests fail saying what to install.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_VERSION = "4.10"  # a 4.x release: its rule set (and so the judgement) is stable within it
CACHE = Path(__file__).resolve().parent / ".cache"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
INSTALL_TIMEOUT_SECONDS = 900


def _locked(name: str):
    CACHE.mkdir(exist_ok=True)
    handle = open(CACHE / f"{name}.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _install_chromium() -> None:
    with _locked("apt"):
        if CHROMEDRIVER.exists() and CHROMIUM.exists():
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail("the browser tests need Debian's chromium and chromium-driver: run "
                        "`sudo apt-get install -y chromium chromium-driver`", pytrace=False)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS)
            if done.returncode != 0:
                tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                pytest.fail(f"installing chromium for the browser tests failed ({' '.join(argv)}): {tail}",
                            pytrace=False)


def _axe_source() -> str:
    target = CACHE / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    with _locked("npm"):
        if not target.exists():
            if not shutil.which("npm"):
                pytest.fail("the accessibility check needs axe-core from npm: install Node.js and npm",
                            pytrace=False)
            with tempfile.TemporaryDirectory() as tmp:
                done = subprocess.run(["npm", "pack", f"axe-core@{AXE_VERSION}", "--silent", "--pack-destination", tmp],
                                      capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, cwd=tmp)
                if done.returncode != 0:
                    pytest.fail(f"`npm pack axe-core@{AXE_VERSION}` failed: {done.stderr.strip()[-300:]}", pytrace=False)
                tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
                with tarfile.open(tarball) as archive:
                    member = archive.extractfile("package/axe.min.js")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(member.read())
                    partial.replace(target)
    return target.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's axe.min.js (MPL-2.0), fetched once into the cache."""
    return _axe_source()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session, logging the page console."""
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        _install_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--disable-extensions", "--disable-background-networking", "--no-first-run",
                     "--window-size=1440,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path | None:
    """Where to write screenshots, only when METEORPI_SCREENSHOTS=1 (a normal run writes none)."""
    if os.environ.get("METEORPI_SCREENSHOTS") != "1":
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
