"""In headless Chromium (issue 13 item 3): the instrument page loads older history as the chart is
scrolled back: a page before the oldest bar drawn is requested and its bars are drawn; the 1h view
is rolled up by the server; "Export CSV" names the visible window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, Stack

pytestmark = [pytest.mark.browser, pytest.mark.stack, pytest.mark.timeout(300)]
playwright_api = pytest.importorskip("playwright.sync_api")
MINUTES = 1500  # stored minute bars: the page's snapshot holds the newest 390, the rest is history


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


def _store_history(stack: Stack) -> int:
    [(aapl,)] = stack.query("SELECT id FROM feeds_instrument WHERE symbol = 'AAPL'")
    newest = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    for chunk in range(0, MINUTES, 500):
        rows = [(aapl, newest - timedelta(minutes=m), 100 + m % 17) for m in range(chunk, min(chunk + 500, MINUTES))]
        values = ", ".join(["(%s, 'insightsentry', '1m', %s, %s, %s + 1, %s - 1, %s, 10)"] * len(rows))
        stack.query(f"INSERT INTO feeds_bar (instrument_id, provider, interval, start, open, high, low, close, volume) "
                    f"VALUES {values} ON CONFLICT DO NOTHING",
                    *[p for a, start, price in rows for p in (a, start, price, price, price, price)])
    return aapl


def test_scrolling_back_loads_and_draws_an_older_page(browser, stack: Stack):
    expect = playwright_api.expect
    aapl = _store_history(stack)
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url) if "/history/" in r.url else None)
    page.goto(f"{stack.base_url}/instrument/{aapl}/")
    assert "/login/" in page.url  # the page needs a login, then comes back
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    chart = page.locator("#chart")
    expect(chart).not_to_have_attribute("data-bars", "0", timeout=15_000)
    snapshot_bars = int(chart.get_attribute("data-bars"))
    assert snapshot_bars >= 390
    # Drag the chart to the right, again and again, until its left edge comes near the oldest bar.
    box = chart.bounding_box()
    y = box["y"] + box["height"] * 0.25
    for _ in range(12):
        if chart.get_attribute("data-history-pages") != "0":
            break
        page.mouse.move(box["x"] + 100, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 50, y, steps=8)
        page.mouse.up()
    expect(chart).not_to_have_attribute("data-history-pages", "0", timeout=15_000)
    assert any("before=" in url and "interval=1m" in url for url in requested), requested
    # The page is drawn (and a live minute may have begun meanwhile).
    page.wait_for_function("n => Number(document.getElementById('chart').dataset.bars) >= n", arg=snapshot_bars + 300,
                           timeout=15_000)
    assert chart.get_attribute("data-oldest") < page.evaluate("new Date(Date.now() - 390 * 60000).toISOString()")
    href = page.locator("#export-csv").get_attribute("href")
    assert "format=csv" in href and "interval=1m" in href and "before=" in href
    # The hour view: the server's roll-up of the same minutes, fewer and wider bars.
    page.click('#history-intervals button[data-interval="1h"]')
    expect(chart).to_have_attribute("data-history-pages", "1", timeout=15_000)
    hours = int(chart.get_attribute("data-bars"))
    assert MINUTES // 60 <= hours < snapshot_bars  # the stored minutes (and the demo's own) by the hour
    assert any("interval=1h" in url for url in requested)
