"""In headless Chromium: log in, open the board, see simulator news arrive live; a user of
the other team never sees it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import PASSWORD, Stack, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
ARTIFACTS = Path(os.environ.get("TICKERWIRE_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
ARTIFACTS.mkdir(parents=True, exist_ok=True)
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run .ci/run (it installs Debian's chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium_browser) -> Iterator:
    """The module's Chromium (one launch), with every page a test opened closed after it. A board left
    open keeps its socket and renders every live tick (the simulators tick twice a second) through
    the rest of the module: measured, chromium's CPU per test grew with the boards left behind, from
    4 s to 153 s by the burst test with 16 open, so later tests ran 10-15 times slower than alone."""
    yield chromium_browser
    for context in chromium_browser.contexts:
        context.close()


NOTIFICATION_RECORDER = """
window.__notes = [];
window.Notification = class {
  constructor(title, options) { window.__notes.push({ title, body: options && options.body }); window.__lastNote = this; }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
window.__beeps = 0;
window.AudioContext = class {
  constructor() { this.currentTime = 0; this.destination = {}; }
  createOscillator() { return { connect() {}, frequency: {}, start() { window.__beeps++; }, stop() {} }; }
};
"""


def logged_in_board(browser, stack: Stack, username: str, *, record_notifications: bool = False):
    context = browser.new_context()
    if record_notifications:
        # Headless Chromium shows no desktop notifications: record what the page asks for instead.
        context.add_init_script(NOTIFICATION_RECORDER)
    page = context.new_page()
    page.goto(f"{stack.base_url}/")
    assert "/login/" in page.url  # the board needs a login
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector('#conn-status[data-state="live"]', timeout=15_000)
    return page


def test_live_news_appears_for_the_team_and_not_for_the_other(browser, stack: Stack):
    alice = logged_in_board(browser, stack, "alice")
    carol = logged_in_board(browser, stack, "carol")
    expect = playwright_api.expect
    expect(alice.locator('[data-symbol="AAPL"]').first).to_be_visible()
    expect(carol.locator('[data-symbol="AAPL"]')).to_have_count(0)

    headline = "Apple unveils <b>tickerwire</b> test gadget"
    stack.control("emit", ticker="AAPL", summary=headline, stockTickers="AAPL")
    stack.control("emit", ticker="XOM", summary="Exxon sentinel for the other team", stockTickers="XOM")

    row = alice.locator('[data-symbol="AAPL"]').first
    expect(row.locator(".news-headline", has_text="tickerwire")).to_have_text(headline, timeout=15_000)
    # The markup in the provider's text is shown as text, never parsed as HTML.
    assert row.locator(".news-headline b").count() == 0
    expect(carol.locator(".news-headline", has_text="Exxon sentinel")).to_be_visible(timeout=15_000)
    assert carol.locator(".news-headline", has_text="tickerwire").count() == 0
    assert carol.content().count("tickerwire") == 0
    alice.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)


def test_a_knowsis_alert_appears_and_its_revocation_strikes_it_through(browser, stack: Stack):
    import json

    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    alert_id = "5760257000000000000000bb"
    stack.control("emit", sim="knowsis", channel="nvidia-corp", event="anomaly_alert_triggered",
                  data=json.dumps({"alert_id": alert_id, "trigger_time": "2026-11-21T10:00:00", "credibility": "medium"}))
    item = alice.locator(f'.alert-item[data-alert-id="knowsis:{alert_id}"]')
    expect(item).to_contain_text("NVDA", timeout=15_000)
    expect(item).not_to_have_class("alert-item revoked")
    badge = alice.locator('[data-symbol="NVDA"] .alert-badge')
    expect(badge).to_have_text(re.compile(r"⚑ \d+"))
    stack.control("emit", sim="knowsis", channel="nvidia-corp", event="anomaly_alert_removed",
                  data=json.dumps({"alert_id": alert_id}))
    expect(item).to_have_class("alert-item revoked", timeout=15_000)
    expect(badge).to_be_hidden()  # a revoked alert no longer counts
    expect(item.locator(".alert-meta")).to_contain_text("revoked")
    assert item.locator(".alert-headline").evaluate("e => getComputedStyle(e).textDecorationLine") == "line-through"


def test_the_instrument_page_draws_the_chart_and_filters_news(browser, stack: Stack):
    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    stack.control("emit_quote", sim="insightsentry", code="NASDAQ:TSLA", price="250.5")
    stack.control("emit", ticker="TSLA", summary="Tesla earnings note for the filter test", stockTickers="TSLA",
                  category="earnings", sentimentScore="-40")
    alice.click('[data-symbol="TSLA"] a.inst-symbol')
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(alice.locator("#chart canvas").first).to_be_visible()
    expect(alice.locator("#chart")).not_to_have_attribute("data-bars", "0", timeout=15_000)
    news = alice.locator("#news .news-item", has_text="Tesla earnings note for the filter test")
    expect(news).to_be_visible(timeout=15_000)
    alice.select_option('#news-filters select[name="tone"]', "pos")
    expect(news).to_have_count(0)
    alice.select_option('#news-filters select[name="tone"]', "neg")
    expect(news).to_be_visible()
    alice.screenshot(path=str(ARTIFACTS / "instrument.png"), full_page=True)
    # Another team's instrument is not reachable by URL either.
    [(xom_id,)] = stack.query("SELECT id FROM feeds_instrument WHERE symbol = 'XOM'")
    assert alice.goto(f"{stack.base_url}/instrument/{xom_id}/").status == 404


def test_the_feed_health_page_is_live_for_staff_and_refused_to_others(browser, stack: Stack):
    expect = playwright_api.expect
    admin = logged_in_board(browser, stack, "admin")
    admin.click("text=Feed health")
    expect(admin.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    for provider in ("stocknews", "insightsentry", "stocktwits", "knowsis"):
        expect(admin.locator(f'tr[data-provider="{provider}"] .feed-state')).to_have_text("connected", timeout=15_000)
        # Which process holds the provider's lease (one worker each here: the holder, no standby).
        holder = admin.locator(f'tr[data-provider="{provider}"] .feed-worker[data-role="holder"]')
        expect(holder).to_have_count(1, timeout=15_000)
        expect(holder).to_contain_text(" · holder")
    counter = admin.locator('tr[data-provider="insightsentry"] .feed-messages')
    before = int(counter.inner_text())
    expect(counter).not_to_have_text(str(before), timeout=15_000)  # the simulator keeps ticking: live updates
    expect(admin.locator('tr[data-provider="insightsentry"] .feed-rate')).not_to_have_text("—", timeout=15_000)
    admin.screenshot(path=str(ARTIFACTS / "health.png"), full_page=True)
    alice = logged_in_board(browser, stack, "alice")
    assert "Feed health" not in alice.content()
    alice.goto(f"{stack.base_url}/health/")
    assert "/admin/login/" in alice.url  # staff only
    assert alice.request.get(f"{stack.base_url}/api/health/").status == 403


def test_an_editor_adds_an_instrument_and_a_viewer_sees_it_live_without_controls(browser, stack: Stack):
    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")  # owner of Alpha Desk
    bob = logged_in_board(browser, stack, "bob")  # viewer of Alpha Desk
    expect(bob.locator(".add-instrument")).to_have_count(0)
    expect(bob.locator(".remove-instrument")).to_have_count(0)
    alice.fill(".add-instrument input", "Amazon")
    alice.locator(".add-instrument input").press("End")
    expect(alice.locator("datalist option")).to_have_count(1, timeout=10_000)
    alice.fill(".add-instrument input", "AMZN")
    alice.click(".add-instrument button")
    expect(bob.locator('[data-symbol="AMZN"]')).to_be_visible(timeout=15_000)  # live on a teammate's board
    # The viewer has no controls, and the server refuses the action anyway.
    [(watchlist_id,)] = stack.query("SELECT w.id FROM dashboard_watchlist w JOIN dashboard_team t ON t.id = w.team_id "
                                    "WHERE t.name = 'Alpha Desk'")
    [(amzn_id,)] = stack.query("SELECT id FROM feeds_instrument WHERE symbol = 'AMZN'")
    csrf = next(c["value"] for c in bob.context.cookies() if c["name"] == "csrftoken")
    refused = bob.request.delete(f"{stack.base_url}/api/watchlists/{watchlist_id}/items/{amzn_id}/",
                                 headers={"X-CSRFToken": csrf, "Referer": stack.base_url + "/"})
    assert refused.status == 403
    expect(bob.locator('[data-symbol="AMZN"]')).to_be_visible()
    alice.click('[data-symbol="AMZN"] .remove-instrument')
    expect(bob.locator('[data-symbol="AMZN"]')).to_have_count(0, timeout=15_000)


def test_the_alerts_inbox_filters_acknowledges_and_shows_revocations(browser, stack: Stack):
    import json

    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    alice.click("text=Alerts")
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    for alert_id, credibility in (("5760257000000000000000c1", "high"), ("5760257000000000000000c2", "medium")):
        stack.control("emit", sim="knowsis", channel="microsoft-corp", event="anomaly_alert_triggered",
                      data=json.dumps({"alert_id": alert_id, "trigger_time": "2026-11-21T11:00:00",
                                       "credibility": credibility}))
    high = alice.locator('#inbox-list [data-alert-id="knowsis:5760257000000000000000c1"]')
    medium = alice.locator('#inbox-list [data-alert-id="knowsis:5760257000000000000000c2"]')
    expect(high).to_be_visible(timeout=15_000)
    expect(medium).to_be_visible(timeout=15_000)
    alice.check('#inbox-filters input[name="credible"]')
    expect(medium).to_have_count(0)
    expect(high).to_be_visible()
    high.locator("button.ack").click()
    expect(high).to_contain_text("acknowledged")
    stack.control("emit", sim="knowsis", channel="microsoft-corp", event="anomaly_alert_removed",
                  data=json.dumps({"alert_id": "5760257000000000000000c1"}))
    expect(high).to_have_class("alert-item revoked acknowledged", timeout=15_000)
    alice.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)
    alice.reload()
    expect(alice.locator('#inbox-list [data-alert-id="knowsis:5760257000000000000000c1"]')).to_contain_text(
        "acknowledged", timeout=15_000)


def test_a_credible_knowsis_alert_raises_a_desktop_notification_that_opens_the_instrument(browser, stack: Stack):
    import json

    alice = logged_in_board(browser, stack, "alice", record_notifications=True)
    alice.goto(f"{stack.base_url}/settings/")
    alice.check("#id_notify_sound")  # the optional sound
    alice.click(".settings-form button[type=submit]")
    alice.goto(f"{stack.base_url}/")
    playwright_api.expect(alice.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    for alert_id, credibility in (("5760257000000000000000d1", "medium"), ("5760257000000000000000d2", "high")):
        stack.control("emit", sim="knowsis", channel="tesla-inc", event="anomaly_alert_triggered",
                      data=json.dumps({"alert_id": alert_id, "trigger_time": "2026-11-21T12:00:00",
                                       "credibility": credibility}))
    playwright_api.expect(alice.locator('.alert-item[data-alert-id="knowsis:5760257000000000000000d2"]')).to_be_visible(
        timeout=15_000)
    notes = alice.evaluate("window.__notes")
    assert notes == [{"title": "TSLA: high", "body": "Abnormal conversation detected"}]  # medium: not notified
    assert alice.evaluate("window.__beeps") == 1
    alice.evaluate("window.__lastNote.onclick()")
    alice.wait_for_url("**/instrument/*/", timeout=10_000)
    assert "TSLA" in alice.locator("h1").inner_text()


def test_settings_change_the_theme_and_the_time_zone(browser, stack: Stack):
    expect = playwright_api.expect
    carol = logged_in_board(browser, stack, "carol")
    carol.click("text=Settings")
    carol.fill("#id_time_zone", "Mars/Olympus")
    carol.click(".settings-form button[type=submit]")
    expect(carol.locator(".errorlist")).to_contain_text("Not a time zone name")
    carol.fill("#id_time_zone", "Asia/Tokyo")
    carol.select_option("#id_theme", "light")
    carol.click(".settings-form button[type=submit]")
    expect(carol.locator("body")).to_have_attribute("data-theme", "light")
    assert carol.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 248, 250)"
    shown = carol.evaluate("window.TickerwirePrefs.formatTime('2026-01-01T00:00:00Z')")
    assert "9:00" in shown  # midnight UTC is 09:00 in Tokyo


def test_board_filter_sort_and_keyboard_navigation(browser, stack: Stack):
    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    rows = alice.locator("#watchlists .instrument:visible")
    expect(rows).to_have_count(4)
    alice.keyboard.press("/")
    alice.keyboard.type("nvid")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-symbol", "NVDA")
    alice.fill('#board-controls input[name="q"]', "")
    alice.select_option('#board-controls select[name="sort"]', "symbol")
    expect(rows.first).to_have_attribute("data-symbol", "AAPL")
    symbols = [rows.nth(i).get_attribute("data-symbol") for i in range(4)]
    assert symbols == sorted(symbols)
    alice.locator("body").click(position={"x": 5, "y": 5})
    alice.keyboard.press("j")
    alice.keyboard.press("j")
    expect(alice.locator(".instrument.selected")).to_have_attribute("data-symbol", symbols[1])
    alice.keyboard.press("Enter")
    alice.wait_for_url("**/instrument/*/", timeout=10_000)
    alice.keyboard.press("Escape")
    alice.wait_for_url(f"{stack.base_url}/", timeout=10_000)


def test_a_personal_price_rule_fires_once_and_reaches_only_its_owner(browser, stack: Stack):
    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice", record_notifications=True)
    bob = logged_in_board(browser, stack, "bob")  # same team; the rule is alice's own
    alice.goto(f"{stack.base_url}/rules/")
    alice.select_option("#id_scope", label="Instrument: MSFT")
    alice.select_option("#id_kind", "price_above")
    alice.fill("#id_threshold", "2500")
    alice.click("#rule-form button[type=submit]")
    expect(alice.locator("#rules [data-rule-id]")).to_have_count(1)
    alice.goto(f"{stack.base_url}/")
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
    stack.control("emit_quote", sim="insightsentry", code="NASDAQ:MSFT", price="1.0")
    expect(alice.locator('[data-symbol="MSFT"] .quote-price')).to_have_text(re.compile(r"^[0-2]\.\d\d$"), timeout=15_000)
    expect(alice.locator('[data-symbol="MSFT"] .quote-book')).to_contain_text("bid ")  # bid/ask where known
    expect(alice.locator('[data-symbol="MSFT"] .quote-book')).to_contain_text("day ")  # today's range
    stack.control("emit_quote", sim="insightsentry", code="NASDAQ:MSFT", price="5000")
    fired = alice.locator(".alert-item", has_text="MSFT: price crossed above 2,500")
    expect(fired).to_have_count(1, timeout=15_000)
    assert any(n["title"] == "MSFT: rule" for n in alice.evaluate("window.__notes"))  # own rules notify
    assert bob.locator(".alert-item", has_text="price crossed above").count() == 0


def test_a_new_user_sees_what_to_do_and_the_board_fits_a_phone(browser, stack: Stack):
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                 "get_user_model().objects.filter(username='newbie').exists() or "
                 "get_user_model().objects.create_user('newbie', password='tickerwire-demo')")
    newbie = logged_in_board(browser, stack, "newbie")
    playwright_api.expect(newbie.locator("#empty-state")).to_contain_text("No watchlists yet")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    phone.goto(f"{stack.base_url}/login/")
    phone.fill("#id_username", "alice")
    phone.fill("#id_password", PASSWORD)
    phone.click("button[type=submit]")
    playwright_api.expect(phone.locator('[data-symbol="AAPL"]').first).to_be_visible(timeout=15_000)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scrolling


def test_a_burst_of_quotes_is_coalesced_per_row(browser, stack: Stack):
    alice = logged_in_board(browser, stack, "alice")
    playwright_api.expect(alice.locator('[data-symbol="NVDA"] .quote-price')).to_be_visible(timeout=15_000)
    # Count renders of one row's price while 200 quote events arrive within about a second.
    alice.evaluate("""() => {
      window.__renders = 0;
      const price = document.querySelector('[data-symbol="NVDA"] .quote-price');
      new MutationObserver(() => window.__renders++).observe(price, { childList: true, characterData: true, subtree: true });
    }""")
    for n in range(200):
        stack.control("emit_quote", sim="insightsentry", code="NASDAQ:NVDA", price=str(100 + n / 100))
    playwright_api.expect(alice.locator('[data-symbol="NVDA"] .quote-price')).to_have_text(
        re.compile(r"^10[0-2]\.\d\d$"), timeout=15_000)
    renders = alice.evaluate("window.__renders")
    assert 0 < renders < 200  # far fewer renders than events: updates were coalesced


def test_knowsis_sentiment_on_the_tile_and_a_revoked_alert_on_the_instrument_timeline(browser, stack: Stack):
    import json

    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    stack.control("emit", sim="knowsis", channel="microsoft-corp", event="datapoint",
                  data=json.dumps({"sentiment": 3, "volume": 4.2}))
    expect(alice.locator('[data-symbol="MSFT"] .knowsis-sentiment')).to_have_text("Knowsis +3 · vol 4.2", timeout=15_000)
    alert_id = "5760257000000000000000e1"
    stack.control("emit", sim="knowsis", channel="microsoft-corp", event="anomaly_alert_triggered",
                  data=json.dumps({"alert_id": alert_id, "trigger_time": "2026-11-21T13:00:00", "credibility": "high"}))
    alice.click('[data-symbol="MSFT"] a.inst-symbol')
    item = alice.locator(f'#timeline [data-alert-id="knowsis:{alert_id}"]')
    expect(item).to_be_visible(timeout=15_000)
    stack.control("emit", sim="knowsis", channel="microsoft-corp", event="anomaly_alert_removed",
                  data=json.dumps({"alert_id": alert_id}))
    expect(item).to_have_class("alert-item revoked", timeout=15_000)
    expect(item.locator(".alert-meta")).to_contain_text("revoked")


def test_sparkline_flash_and_the_settings_test_notification(browser, stack: Stack):
    expect = playwright_api.expect
    [(jpm,)] = stack.query("SELECT id FROM feeds_instrument WHERE symbol = 'JPM'")
    for minute, close in ((1, 190.0), (2, 192.5)):  # two earlier bars: enough for a sparkline
        stack.query("INSERT INTO feeds_bar (instrument_id, provider, interval, start, open, high, low, close, volume) "
                    "VALUES (%s, 'insightsentry', '1m', %s, %s, %s, %s, %s, 100) ON CONFLICT DO NOTHING",
                    jpm, f"2026-01-02 10:0{minute}:00+00", close, close, close, close)
    carol = logged_in_board(browser, stack, "carol", record_notifications=True)
    spark = carol.locator('[data-symbol="JPM"] .sparkline')
    expect(spark).to_be_visible(timeout=15_000)
    assert int(spark.get_attribute("data-points")) >= 2
    assert len(spark.locator("polyline").get_attribute("points").split()) >= 2
    stack.control("emit_quote", sim="insightsentry", code="NYSE:JPM", price="321.5")
    expect(carol.locator('[data-symbol="JPM"] .quote-price.flash').first).to_be_attached(timeout=15_000)  # flashes
    carol.click("text=Settings")
    # The button's handler comes from a deferred script: click once the page has run it, as a person would.
    carol.wait_for_url(re.compile(r"/settings/$"))
    carol.wait_for_load_state("domcontentloaded")
    carol.click("#test-notification")
    expect(carol.locator("#test-result")).to_have_text("A test notification was sent.")
    assert carol.evaluate("window.__notes")[-1]["title"] == "Tickerwire"


def test_a_delayed_quote_is_marked_and_a_silent_instrument_shows_stale(browser, stack: Stack):
    expect = playwright_api.expect
    # GOOGL on a team of its own, with no provider codes: nothing live arrives for it. Its only quote is
    # an old, 15-minute-delayed one.
    stack.manage("shell", "-c", """
from datetime import datetime, timezone
from django.contrib.auth import get_user_model
from dashboard.models import Membership, Team, Watchlist, WatchlistItem
from feeds.models import Instrument, Quote
user = get_user_model().objects.filter(username="quiet").first() or get_user_model().objects.create_user("quiet", password="tickerwire-demo")
team, _ = Team.objects.get_or_create(name="Quiet Fund")
Membership.objects.get_or_create(user=user, team=team, defaults={"role": "owner"})
watchlist, _ = Watchlist.objects.get_or_create(team=team, name="Quiet")
googl = Instrument.objects.get(symbol="GOOGL")
Instrument.objects.filter(pk=googl.pk).update(insightsentry_code="", stocktwits_symbol="", stocknews_ticker="", knowsis_channel="")
from feeds.models import Bar, NewsItem, SentimentSample
for model in (Bar, NewsItem, SentimentSample):
    model.objects.filter(instrument=googl).delete()
WatchlistItem.objects.get_or_create(watchlist=watchlist, instrument=googl)
Quote.objects.update_or_create(instrument=googl, provider="knowsis", defaults={"price": 170.25, "delay_seconds": 900, "ts": datetime(2026, 1, 2, 15, 0, tzinfo=timezone.utc)})
""")
    quiet = logged_in_board(browser, stack, "quiet")
    row = quiet.locator('[data-symbol="GOOGL"]')
    expect(row.locator(".quote-price")).to_have_text("170.25")
    expect(row.locator(".quote-delayed")).to_have_text("delayed 15 min")
    expect(row).to_have_class(re.compile(r"\bstale\b"), timeout=10_000)
    assert row.get_attribute("title") == "No update for over two minutes"


def test_board_reconnects_and_resyncs_what_it_missed(browser, stack: Stack):
    """The server goes away; news stored meanwhile shows up after the socket comes back."""
    expect = playwright_api.expect
    alice = logged_in_board(browser, stack, "alice")
    stack.stop_daphne()
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "reconnecting", timeout=15_000)
    expect(alice.locator("#conn-status")).to_have_text("Reconnecting…")
    missed = stack.control("emit", ticker="MSFT", summary="Missed while the server was down", stockTickers="MSFT")
    # Stored before the server returns, so only the snapshot reload can bring it to the page.
    wait_until(lambda: stack.news_stored(missed["data"]["articleSlug"]), what="the missed item to be stored")
    stack.start_daphne()
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=40_000)
    row = alice.locator('[data-symbol="MSFT"]').first
    expect(row.locator(".news-headline", has_text="Missed while the server was down")).to_be_visible(timeout=15_000)


def test_a_silent_worker_turns_stale_on_the_health_page_without_a_push(browser, stack: Stack):
    """What a killed worker leaves: a `connected` row whose heartbeat stops. TrendSpottr runs no
    worker here, so nothing pushes or rewrites its row: the page must age it by itself."""
    expect = playwright_api.expect
    account = "(SELECT id FROM feeds_provideraccount WHERE provider = 'trendspottr')"
    admin = logged_in_board(browser, stack, "admin")  # first: on a loaded machine the login alone can take 15 s
    stack.query("INSERT INTO feeds_feedstatus (account_id, state, messages, parse_errors, reconnects, last_error, "
                f"details, updated_at, heartbeat_at) SELECT {account}, 'connected', 0, 0, 0, '', '{{}}', now(), "
                "now() - interval '15 seconds'")  # FEEDS_HEARTBEAT_STALE_SECONDS is 30: stale in 15 s
    try:
        admin.goto(f"{stack.base_url}/health/")
        state = admin.locator('tr[data-provider="trendspottr"] .feed-state')
        expect(state).to_have_text("connected", timeout=10_000)
        expect(state).to_have_text("stale", timeout=30_000)
        expect(admin.locator('tr[data-provider="trendspottr"]')).to_have_attribute("data-state", "stale")
    finally:
        stack.query(f"DELETE FROM feeds_feedstatus WHERE account_id = {account}")


WEBSOCKET_COUNTER = """
window.__sockets = 0;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket { constructor(...a) { super(...a); window.__sockets++; } };
"""


def test_the_board_says_why_when_its_user_is_removed_then_deactivated_and_stops_reconnecting(browser, stack: Stack):
    expect = playwright_api.expect
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; from dashboard.models import *; "
                 "u = get_user_model().objects.create_user('erin', password='tickerwire-demo'); "
                 "Membership.objects.create(user=u, team=Team.objects.get(name='Alpha Desk'), role='editor')")
    context = browser.new_context()
    context.add_init_script(WEBSOCKET_COUNTER)
    erin = context.new_page()
    erin.goto(f"{stack.base_url}/login/")
    erin.fill("#id_username", "erin")
    erin.fill("#id_password", PASSWORD)
    erin.click("button[type=submit]")
    expect(erin.locator('[data-symbol="AAPL"]').first).to_be_visible(timeout=15_000)
    expect(erin.locator("#conn-status")).to_have_attribute("data-state", "live")
    # The team's owner takes erin off the team (the service, as any door would), then the admin
    # deactivates the account: each reaches the open board within a second or so, with the reason.
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; from dashboard.models import Team; "
                 "from dashboard.services import membership_remove; U = get_user_model(); "
                 "membership_remove(team=Team.objects.get(name='Alpha Desk'), user=U.objects.get(username='erin'), "
                 "by=U.objects.get(username='alice'))")
    note = erin.locator("#access-note")
    # The 1 s bound is asserted in tests/dashboard/test_access.py; here a loaded CI machine gets slack.
    expect(note).to_have_text("Your access changed: you are no longer a member of Alpha Desk.", timeout=15_000)
    expect(erin.locator('[data-symbol="AAPL"]')).to_have_count(0)
    expect(erin.locator("#empty-state")).to_be_visible()
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                 "u = get_user_model().objects.get(username='erin'); u.is_active = False; u.save()")
    expect(note).to_contain_text("Your access changed: this account was deactivated.", timeout=15_000)
    expect(note.locator("a.access-login")).to_have_attribute("href", "/login/?next=%2F", timeout=5_000)
    expect(erin.locator("#conn-status")).to_have_attribute("data-state", "ended")
    assert erin.evaluate("window.__sockets") == 1  # no reconnect loop after a close for an auth reason
    context.close()
