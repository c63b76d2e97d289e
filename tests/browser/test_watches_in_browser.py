"""The watches page in a real browser (headless Chromium), signed in with HTTP Basic as a person
would be: a user adds a watch with the form, sees it listed, sends a test that reaches a real
webhook receiver (through the notifier, which verifies nothing: the receiver checks the
signature with the secret the page showed once), and deletes it; hostile values show as text
and run nothing; no console errors; axe-core finds no serious or critical violation.

With METEORPI_SCREENSHOTS=1 the page is photographed at 360 and 1440 px into docs/screenshots/.
"""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By

from ..server_fixtures import READER
from ..watch_fixtures import NotifierThread, Receiver, notify_config
from .test_pages_in_browser import _console_errors, _open, _screenshot, _submit

DELIVERY_SECONDS = 20.0


@pytest.fixture
def watches(page_server, browser):
    """The page server letting webhooks go to this machine, with a notifier and a receiver
    running; yields the /watches URL carrying the reader's login (the browser keeps it)."""
    config = page_server.db.config.notify
    saved = config.allow_private_targets
    config.allow_private_targets = True
    receiver = Receiver()
    notifier = NotifierThread(page_server.db, notify_config())
    parts = urlsplit(page_server.url)
    try:
        yield receiver, f"{parts.scheme}://{READER[0]}:{READER[1]}@{parts.netloc}/watches"
    finally:
        notifier.close()
        receiver.close()
        config.allow_private_targets = saved
        for watch in page_server.db.get_watches():
            page_server.db.delete_watch(watch.watch_id)


def _axe_serious(browser, axe_source) -> list[dict]:
    browser.execute_script(axe_source)
    violations = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))));")
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def _fill(browser, **values) -> None:
    for field_id, value in values.items():
        element = browser.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)


def _submit_add(browser) -> None:
    _submit(browser, "form.watch-form button[type=submit]")
    assert browser.find_elements(By.ID, "list-h")


def _card(browser, name: str):
    cards = browser.find_elements(By.CSS_SELECTOR, "li.watch")
    named = [c for c in cards if c.find_element(By.TAG_NAME, "h3").text == name]
    return named[0] if named else None


def test_a_user_adds_sees_tests_and_deletes_a_watch(page_server, browser, axe_source, screenshots, watches):
    receiver, url = watches
    _open(browser, url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Your watches"
    assert _axe_serious(browser, axe_source) == []
    _fill(browser, **{"w-name": "fireballs", "w-webhook": receiver.url, "w-types": "meteorpi:*",
                      "w-cameras": "north-1, south-2", "w-near": "55.9, -3.2, 300",
                      "w-meta": "meteorpi:duration>=1.5", "w-rate": "20"})
    browser.find_element(By.CSS_SELECTOR, "#w-kind option[value=coincidence]").click()
    _submit_add(browser)
    assert "Watch fireballs added." in browser.find_element(By.CSS_SELECTOR, ".notice").text
    secret = browser.find_element(By.ID, "watch-secret").text
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    card = _card(browser, "fireballs")
    assert card is not None and receiver.url in card.text and "within 300 km of 55.9, -3.2" in card.text
    assert "meteorpi:duration>=1.5" in card.text and "none yet" in card.text

    _submit(browser, "li.watch form[action$='/test'] button")  # the only watch: fireballs
    assert "?tested=" in browser.current_url
    assert "A test notification for fireballs is queued" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    deadline = time.monotonic() + DELIVERY_SECONDS
    while not receiver.of_type("test") and time.monotonic() < deadline:
        time.sleep(0.2)
    [payload] = receiver.of_type("test")  # signed with the secret the page showed
    assert payload["data"]["watch"]["name"] == "fireballs" and receiver.bad == []
    _open(browser, url)
    assert "test: delivered (HTTP 200)" in _card(browser, "fireballs").find_element(By.CSS_SELECTOR, "dd.delivery").text
    assert _axe_serious(browser, axe_source) == []
    if screenshots is not None:
        _screenshot(browser, screenshots, "watches")

    assert len(browser.find_elements(By.CSS_SELECTOR, "li.watch")) == 1 and _card(browser, "fireballs")
    _submit(browser, "li.watch form[action$='/delete'] button")
    assert "?deleted=" in browser.current_url
    assert "Watch fireballs deleted." in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert _card(browser, "fireballs") is None and page_server.db.get_watches() == []
    assert _console_errors(browser) == []


def test_hostile_watch_values_show_as_text_and_run_nothing(page_server, browser, axe_source, watches):
    receiver, url = watches
    hostile_url = receiver.url + '/"><script>window.__meteorpi_pwned=5</script>'
    hostile_type = "meteorpi:<img/src=x/onerror=window.__meteorpi_pwned=6>"
    hostile_meta = "meteorpi:note~<script>window.__meteorpi_pwned=7</script>"
    _open(browser, url)
    _fill(browser, **{"w-name": "hostile", "w-webhook": hostile_url, "w-types": hostile_type, "w-meta": hostile_meta})
    _submit_add(browser)
    card = _card(browser, "hostile")
    assert hostile_url in card.find_element(By.CSS_SELECTOR, ".target").text
    assert hostile_type in card.text and hostile_meta in card.text
    hostile_name = '"><script>window.__meteorpi_pwned=8</script>'
    _fill(browser, **{"w-name": hostile_name, "w-webhook": receiver.url, "w-types": "", "w-meta": ""})
    _submit_add(browser)
    assert browser.find_element(By.CSS_SELECTOR, "p.problem").text.startswith("form.name:")
    assert browser.find_element(By.ID, "w-name").get_attribute("value") == hostile_name  # kept, to correct
    assert browser.execute_script("return typeof window.__meteorpi_pwned") == "undefined"
    assert browser.find_elements(By.CSS_SELECTOR, "img[src=x], main script") == []
    assert _axe_serious(browser, axe_source) == []
    # The refused form is a 400 page by design; Chromium reports the status of the page itself.
    assert [e for e in _console_errors(browser) if "400" not in e] == []


def test_the_watches_page_fits_a_360_px_screen(page_server, browser, watches):
    receiver, url = watches
    _open(browser, url)
    _fill(browser, **{"w-name": "a-watch-with-a-rather-long-name-to-wrap", "w-webhook": receiver.url + "/" + "x" * 120})
    _submit_add(browser)
    browser.set_window_size(360, 800)
    try:
        _open(browser, url)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width
    finally:
        browser.set_window_size(1440, 1000)
