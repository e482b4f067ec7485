"""In headless Chromium, on the production settings: a user adds a signed-webhook alert destination on
the settings page, is shown its secret once, sees the URL masked (never the full address again), and
the test button delivers an alert the receiver verifies with that secret. A destination's name is
provider-free but user-typed: it is shown as text, never as HTML."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, Stack, free_port, stack_env
from tests.postgres import fresh_database
from tests.receivers import HttpReceiver, verify_standard_webhook

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

NAME = 'Desk <img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """The database with the demo users and Daphne; no feeds (nothing here waits for market data)."""
    with fresh_database("twdest", migrated=True) as database_url:
        stack = Stack(env=stack_env(database_url, prefix="twdest"), tmp=tmp_path_factory.mktemp("destinations"),
                      database_url=database_url, web_port=free_port())
        try:
            stack.manage("seed_demo")
            stack.start_daphne()
            yield stack
        finally:
            stack.stop()
        stack.fail_on_application_exceptions()


def test_a_signed_webhook_destination_is_added_masked_and_its_test_send_verifies(stack: Stack):
    expect = playwright_api.expect
    with HttpReceiver() as receiver, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{stack.base_url}/settings/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#destination-form")
        url = f"{receiver.url}/hooks/desk-7f3a9c"
        form = page.locator("#destination-form")
        form.locator("input[name=name]").fill(NAME)
        form.locator("select[name=kind]").select_option("webhook")
        form.locator("input[name=target]").fill(url)
        form.locator("button[type=submit]").click()
        result = page.locator("#destination-result")
        expect(result).to_contain_text("whsec_", timeout=10_000)
        secret = "whsec_" + result.inner_text().split("whsec_", 1)[1].split()[0]
        receiver.secret = secret  # the receiver answers 401 to a bad signature

        row = page.locator("#destination-list li", has_text="Desk")
        expect(row).to_contain_text(NAME)  # the typed markup, as text
        assert page.evaluate("window.pwned") is None
        page.reload()
        expect(page.locator("#destination-list li", has_text="Desk")).to_be_visible(timeout=10_000)
        assert "desk-7f3a9c" not in page.content(), "the destination's full URL came back to the browser"
        assert secret not in page.content(), "the secret was shown again"

        page.locator("#destination-list li", has_text="Desk").get_by_role("button", name="Test").click()
        expect(page.locator("#destination-result")).to_contain_text("delivered", timeout=15_000)
    [got] = receiver.received
    assert got.answered == 200 and got.path.endswith("/hooks/desk-7f3a9c")
    assert verify_standard_webhook(secret=secret, headers=got.headers, body=got.body)
