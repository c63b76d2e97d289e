"""The pages in a real browser (headless Chromium): they load without console errors, follow
the live feed, search and bookmark, show hostile meta as text, and pass axe-core's check.

With METEORPI_SCREENSHOTS=1 each page is also photographed at 360 and 1440 px into
docs/screenshots/ (the README shows them).
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from meteorpi_model import Event, now

from ..page_fixtures import HOSTILE_IMG, HOSTILE_NAME, HOSTILE_SCRIPT
from ..server_fixtures import IMPORTER, TIMEOUT

WIDTHS = (360, 1440)
MAX_SHOT_HEIGHT = 3000
LIVE_SECONDS = 2.0

PAGES = {
    "index": "/",
    "events": "/events?camera_ids=north-1%2C+south-2&event_type=meteorpi%3Ameteor",
    "event": "/events/{with_image}",
    "event-hostile": "/events/{hostile}",
    "camera": "/cameras/north-1",
    "camera-silent": "/cameras/quiet-3",
    "not-found": "/events/{missing}",
}

# The pages photographed (the others are variants of these).
SHOTS = {"index", "events", "event", "event-hostile", "camera"}


def _path(page_server, name: str) -> str:
    sample = page_server.sample
    return PAGES[name].format(with_image=sample.with_image.event_id.hex, hostile=sample.hostile.event_id.hex,
                              missing=uuid.UUID(int=0).hex)


def _open(browser, url: str) -> None:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _submit(browser, button: str) -> None:
    """Click the submit ``button`` (a CSS selector) and wait for the page the form leads to.
    The page before it is complete too, and often has the same landmarks: wait for it to be
    gone first, or the test reads the old page. Gone is told by a mark on the old page's window
    (a new page gets a new one): asked of an element of the old page while it is replaced,
    chromedriver may answer "Node with given id does not belong to the document" instead of
    "stale", and a look in the middle of the change is simply asked again."""
    browser.execute_script("window.__meteorpi_page_before_submit = true")
    browser.find_element(By.CSS_SELECTOR, button).click()
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(lambda d: d.execute_script(
        "return window.__meteorpi_page_before_submit !== true && document.readyState === 'complete'"))


def _console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _screenshot(browser, directory, name: str) -> None:
    for width in WIDTHS:
        browser.set_window_size(width, 1000)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(max(height, 600), MAX_SHOT_HEIGHT))
        time.sleep(0.2)
        browser.save_screenshot(str(directory / f"{name}-{width}.png"))
    browser.set_window_size(1440, 1000)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_loads_without_console_errors_and_passes_axe(page_server, browser, axe_source, screenshots,
                                                               name):
    _open(browser, page_server.url + _path(page_server, name))
    assert browser.find_element(By.TAG_NAME, "h1").text
    errors = _console_errors(browser)
    # The missing event's page is a 404 by design; Chromium reports the status of the page itself.
    if name == "not-found":
        errors = [e for e in errors if "404" not in e]
    assert errors == []
    # execute_script goes through the DevTools protocol, which the page's CSP does not govern.
    browser.execute_script(axe_source)
    violations = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))));")
    assert [v for v in violations if v["impact"] in ("serious", "critical")] == []
    if screenshots is not None and name in SHOTS:
        _screenshot(browser, screenshots, name)
    assert _console_errors(browser) == []


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_fits_a_360_px_screen_without_sideways_scrolling(page_server, browser, name):
    """Wide content (tables, long ids) scrolls or wraps inside the page; the page itself never
    needs scrolling sideways on a phone."""
    browser.set_window_size(360, 800)
    try:
        _open(browser, page_server.url + _path(page_server, name))
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width
    finally:
        browser.set_window_size(1440, 1000)


def test_an_import_made_while_the_index_is_open_appears_within_two_seconds(page_server, browser):
    _open(browser, page_server.url + "/")
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "latest-events").get_attribute("data-live") == "on")
    status = page_server.db.get_camera_status(camera_id="south-2")
    event = Event(camera_id="south-2", status_id=status.status_id, event_time=now(), event_type="meteorpi:meteor")
    answer = requests.post(page_server.url + "/import", json={"type": "event", "event": event.as_dict()},
                           auth=IMPORTER, timeout=TIMEOUT)
    assert answer.json()["state"] == "complete"
    imported = time.monotonic()
    row = WebDriverWait(browser, LIVE_SECONDS).until(
        EC.presence_of_element_located((By.ID, f"event-{event.event_id.hex}")))
    assert time.monotonic() - imported <= LIVE_SECONDS
    first = browser.find_element(By.CSS_SELECTOR, "#latest-events li:first-child")
    assert first.get_attribute("id") == f"event-{event.event_id.hex}"
    assert "south-2" in row.text and "meteorpi:meteor" in row.text
    assert row.find_element(By.TAG_NAME, "a").get_attribute("href").endswith(f"/events/{event.event_id.hex}")
    assert _console_errors(browser) == []


def test_without_javascript_the_index_offers_a_reload_link(page_server, browser):
    page = requests.get(page_server.url + "/", headers={"Accept": "text/html"}, timeout=TIMEOUT).text
    assert 'id="live-status"' in page and '<a href="/">reload</a>' in page


def test_the_search_form_finds_a_known_event_and_its_url_reproduces_the_result(page_server, browser):
    target = page_server.sample.with_image
    _open(browser, page_server.url + "/events")
    browser.find_element(By.ID, "f-cameras").send_keys("north-1")
    browser.find_element(By.ID, "f-mk0").send_keys("meteorpi:classification")
    browser.find_element(By.CSS_SELECTOR, "#f-mo0 option[value=string_equals]").click()
    browser.find_element(By.ID, "f-mv0").send_keys("fireball")
    _submit(browser, "form.search button[type=submit]")

    def results() -> list[str]:
        return [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "table.results td:first-child a")]
    found = results()
    assert browser.find_element(By.ID, "results-h").text == "1 event found"
    assert len(found) == 1 and found[0].endswith(f"/events/{target.event_id.hex}")
    bookmark = browser.current_url
    assert "meta_value_0=fireball" in bookmark
    _open(browser, page_server.url + "/")
    _open(browser, bookmark)
    assert results() == found
    assert browser.find_element(By.ID, "f-mv0").get_attribute("value") == "fireball"
    assert _console_errors(browser) == []


def test_hostile_meta_shows_literally_and_runs_nothing(page_server, browser):
    _open(browser, page_server.url + _path(page_server, "event-hostile"))
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.meta td:nth-child(2)")]
    assert HOSTILE_SCRIPT in cells and HOSTILE_IMG in cells
    assert HOSTILE_NAME in browser.find_element(By.CSS_SELECTOR, "ol.files").text
    assert browser.execute_script("return typeof window.__meteorpi_pwned") == "undefined"
    assert browser.find_elements(By.CSS_SELECTOR, "img[src=x], main script") == []
    assert _console_errors(browser) == []
