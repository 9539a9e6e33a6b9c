"""A real browser (Debian's Chromium through Playwright) against pytest-django's live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a
# thread with a running loop unless told that this is deliberate. The test body is not async.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ACTION_TIMEOUT_MS = 20_000
PASSWORD = "pw"  # what tests/conftest.py's make_member gives every user


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; scripts/services.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context; fails the test if a page throws an uncaught script error.

    Playwright's wait_for_function polls with eval() in the page, which the site's
    Content-Security-Policy forbids, so these contexts bypass the policy; the policy itself is
    tested in a context that enforces it (test_content_security_policy.py), and no template may
    carry what it would block (tests/test_auth_deploy_settings.py)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert not script_errors, f"uncaught script errors in the page: {script_errors}"


def login(page: Page, live_server, username: str, password: str = PASSWORD) -> None:
    """Log in through the login form, as a person would, replacing any earlier session."""
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
    expect(page.locator(".topbar .who")).to_have_text(username)


# What Chart.js reports about the chart drawn on a canvas; null when none is drawn on it.
CHART_STATE_JS = """(selector) => {
  const canvas = document.querySelector(selector);
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  if (!chart) { return null; }
  const box = canvas.getBoundingClientRect();
  return {
    width: box.width,
    height: box.height,
    datasets: chart.data.datasets.map(
      (d) => ({label: d.label, points: d.data.map((p) => [p.x, p.y])})),
    xTitle: chart.options.scales.x.title.text,
    yTitle: chart.options.scales.y.title.text,
    legend: chart.legend.legendItems.map((item) => item.text),
    xTicks: chart.scales.x.ticks.map((tick) => chart.scales.x.getLabelForValue(tick.value)),
  };
}"""


def chart_state(page: Page, selector: str) -> dict[str, Any]:
    """Waits for Chart.js to draw on the canvas, then reports what it drew (static/js/charts.js)."""
    page.wait_for_function(f"({CHART_STATE_JS})({selector!r}) !== null")
    state: dict[str, Any] = page.evaluate(CHART_STATE_JS, selector)
    return state
