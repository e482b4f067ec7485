"""In headless Chromium: the shipped catalogue, imported with `manage.py instruments import`, is what
the board's add box offers; a name prefix finds a listing the demo watchlists never held."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from feeds.catalogue import SHIPPED
from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, Stack, free_port, stack_env
from tests.postgres import fresh_database

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Only what the add box needs: the database with the demo and the catalogue, and Daphne (on the
    real Redis layer, so the board goes live). No feeds: nothing here waits for market data."""
    with fresh_database("twcatalogue", migrated=True) as database_url:
        stack = Stack(env=stack_env(database_url, prefix="twcatalogue"), tmp=tmp_path_factory.mktemp("catalogue"),
                      database_url=database_url, web_port=free_port())
        try:
            stack.manage("seed_demo")
            imported = stack.manage("instruments", "import", str(SHIPPED))
            assert "created BRK.B" in imported
            stack.start_daphne()
            yield stack
        finally:
            stack.stop()
        stack.fail_on_application_exceptions()


def test_a_name_prefix_in_the_add_box_offers_the_instrument_and_adds_it(stack: Stack):
    expect = playwright_api.expect
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{stack.base_url}/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector('#conn-status[data-state="live"]', timeout=15_000)
        box = page.locator(".add-instrument input").first
        box.fill("berksh")  # fill() sends one input event, as typing the last letter does
        offered = page.locator(".add-instrument datalist option").first
        expect(offered).to_have_attribute("value", "BRK.B — Berkshire Hathaway Inc. Class B", timeout=10_000)
        box.fill("chase")  # a word inside the name
        expect(offered).to_have_attribute("value", "JPM — JPMorgan Chase & Co.", timeout=10_000)
        box.fill("BRK.B")  # the symbol: the page adds what its latest answer offered, so wait for it
        expect(offered).to_have_attribute("value", "BRK.B — Berkshire Hathaway Inc. Class B", timeout=10_000)
        page.locator(".add-instrument button").first.click()
        expect(page.locator('[data-symbol="BRK.B"]')).to_be_visible(timeout=15_000)
