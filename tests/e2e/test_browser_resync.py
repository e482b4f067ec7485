"""Exact resync in headless Chromium (issue 11): news published continuously while a browser opens
the instrument page, loses its link for 2 s and reconnects appears exactly once, in publish order.

Every request of the browser goes through a FaultProxy (tests/faultproxy.py, on an event loop of its
own in a thread) in front of Daphne. The news goes through the real door: the StockNews simulator's
`emit` knob, the `runfeed` worker (parse, store, publish) and feeds.broadcast, at 10 per second.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, Stack, wait_until
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.browser, pytest.mark.stack, pytest.mark.timeout(300)]
playwright_api = pytest.importorskip("playwright.sync_api")

EVENTS = 48  # under the 50 news items the instrument page's snapshot holds (feeds.selectors.instrument_detail)
RATE = 10.0  # per second
GATE = 12  # the publisher waits here until the page is live, so the cut falls while it publishes
OUTAGE = 2.0

# Record what the page applies through live.js's onEvent, and count the sockets it opens.
RECORDER = """
window.__applied = [];
window.__sockets = 0;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket { constructor(...a) { super(...a); window.__sockets++; } };
let __live;
Object.defineProperty(window, "TickerwireLive", {
  configurable: true,
  get() { return __live; },
  set(value) {
    __live = Object.assign({}, value, {
      connect(options) {
        const onEvent = options.onEvent || (() => {});
        return value.connect(Object.assign({}, options, {
          onEvent(msg) {
            if (msg.event && msg.event.kind === "news") window.__applied.push(msg.event.headline);
            return onEvent(msg);
          },
        }));
      },
    });
  },
});
"""


class ThreadedProxy:
    """A FaultProxy on an asyncio loop in a thread of its own (the browser test is synchronous)."""

    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy", daemon=True)
        self.thread.start()

        async def start() -> FaultProxy:
            return await FaultProxy(target_port).start()

        self.proxy: FaultProxy = self.run(start())

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def call(self, fn):
        async def wrapper():
            return fn()
        return self.run(wrapper())

    def cut(self) -> int:
        """Reset every open link and refuse new ones."""
        def cut() -> int:
            self.proxy.refuse = True
            return self.proxy.reset()
        return self.call(cut)

    def heal(self) -> None:
        self.call(self.proxy.heal)

    def close(self) -> None:
        self.run(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def proxy(stack: Stack) -> Iterator[ThreadedProxy]:
    proxy = ThreadedProxy(stack.web_port)
    yield proxy
    proxy.close()


class Publisher(threading.Thread):
    """Emit EVENTS StockNews articles for `ticker` at RATE per second; waits at GATE for `gate`."""

    def __init__(self, stack: Stack, ticker: str, marker: str) -> None:
        super().__init__(name="publisher", daemon=True)
        self.stack, self.ticker, self.marker = stack, ticker, marker
        self.gate = threading.Event()
        self.headlines: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for n in range(EVENTS):
                if n == GATE:
                    self.gate.wait(timeout=60)
                    start = time.monotonic() - n / RATE
                headline = f"{self.marker} #{n:02d}"
                self.stack.control("emit", ticker=self.ticker, summary=headline, stockTickers=self.ticker)
                self.headlines.append(headline)
                time.sleep(max(0.0, start + (n + 1) / RATE - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc


def frames_summary(frames: list[tuple[str, str]]) -> str:
    """The protocol frames (not the events themselves) a failed run exchanged, for its message."""
    lines = []
    for direction, text in frames:
        try:
            msg = json.loads(text)
        except ValueError:
            continue
        if msg.get("type") == "event":
            lines.append(f"{direction} event {msg.get('stream')} {msg.get('epoch')} {msg.get('seq')} "
                         f"{(msg.get('event') or {}).get('kind')}")
        elif msg.get("type") not in ("ping", "pong"):
            lines.append(f"{direction} {text[:300]}")
    return "\n".join(lines[-200:])


def test_news_published_while_the_browser_connects_drops_and_reconnects_appears_exactly_once_in_order(
        stack: Stack, proxy: ThreadedProxy):
    expect = playwright_api.expect
    base = f"http://127.0.0.1:{proxy.proxy.port}"
    [(aapl,)] = stack.query("SELECT id FROM feeds_instrument WHERE symbol = 'AAPL'")
    marker = f"Resync probe {uuid.uuid4().hex[:6]}"
    publisher = Publisher(stack, "AAPL", marker)
    frames: list[tuple[str, str]] = []
    snapshots: list[str] = []
    with chromium() as browser:
        context = browser.new_context()
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.goto(f"{base}/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector('#conn-status[data-state="live"]', timeout=15_000)  # the board
        page.on("websocket", lambda ws: (ws.on("framereceived", lambda p: frames.append(("<", str(p)))),
                                         ws.on("framesent", lambda p: frames.append((">", str(p))))))
        # The snapshot endpoint only: the chart's history pages (…/history/) are not snapshots.
        page.on("request", lambda r: snapshots.append(r.url) if r.url.endswith(f"/api/instrument/{aapl}/") else None)

        publisher.start()  # the page opens while the news flows
        page.goto(f"{base}/instrument/{aapl}/")
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=20_000)
        publisher.gate.set()
        time.sleep(0.5)  # a few events live first

        assert proxy.cut() >= 1  # the socket (and any kept-alive HTTP link) is reset...
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "reconnecting", timeout=5_000)
        time.sleep(OUTAGE)  # ...and for 2 s every new connection is refused
        proxy.heal()
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=20_000)

        publisher.join(timeout=60)
        assert not publisher.is_alive() and publisher.error is None, publisher.error
        assert len(publisher.headlines) == EVENTS
        shown = page.locator("#news .news-headline", has_text=marker)
        try:
            expect(shown).to_have_count(EVENTS, timeout=20_000)
        except AssertionError:
            raise AssertionError(f"{shown.count()} of {EVENTS} shown; frames:\n{frames_summary(frames)}") from None
        time.sleep(1)  # anything late (a duplicate) would land now
        headlines = shown.all_inner_texts()
        applied = [h for h in page.evaluate("window.__applied") if h.startswith(marker)]
        sockets = page.evaluate("window.__sockets")
        context.close()

    detail = frames_summary(frames)
    # The page lists news newest first: reversed, it is the publish order, each headline once.
    assert list(reversed(headlines)) == publisher.headlines, detail
    # What came live (or recovered) was applied once each, in publish order: a subsequence of it.
    assert applied == [h for h in publisher.headlines if h in set(applied)], detail
    assert len(applied) == len(set(applied)), detail
    assert sockets >= 2, "the page never reconnected"
    # The reconnect recovered from the server's history: the page took its snapshot once, after subscribing.
    assert len(snapshots) == 1, f"snapshots: {snapshots}\n{detail}"
