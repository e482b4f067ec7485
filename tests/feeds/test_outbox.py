"""The outbox keeps a connection inside StockNews' client limits over a simulated minute."""

from __future__ import annotations

import json

from feeds.outbox import TOTAL, Outbox, SlidingWindow
from feeds.providers.stocknews.feed import CLIENT_LIMITS, PING_FRAME, subscribe_frame


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    return max((sum(1 for t in times if start <= t < start + window) for start in times), default=0)


def test_sliding_window_allows_limit_then_waits():
    w = SlidingWindow(2, 60)
    assert w.wait_time(0) == 0
    w.record(0)
    w.record(1)
    assert w.wait_time(2) == 58
    assert w.wait_time(60.5) == 0


def test_a_flood_of_watchlist_edits_stays_within_the_documented_limits():
    """Subscribe offers every 0.5 s and a ping every 3 s for 3 simulated minutes."""
    outbox = Outbox(CLIENT_LIMITS, priority=("subscribe", "ping"))
    sent: list[tuple[float, str]] = []
    now, step, last_offered = 0.0, 0.1, None
    while now < 180:
        tick = round(now * 10)
        if tick % 5 == 0:
            last_offered = subscribe_frame([f"T{tick}"])
            outbox.offer("subscribe", last_offered)
        if tick % 30 == 0:
            outbox.offer("ping", PING_FRAME)
        while True:
            frame, _ = outbox.take(now)
            if frame is None:
                break
            sent.append((now, json.loads(frame)["type"]))
        now += step
    subscribes = [t for t, kind in sent if kind == "subscribe"]
    pings = [t for t, kind in sent if kind == "ping"]
    assert max_in_any_window(subscribes) <= 10
    assert max_in_any_window(pings) <= 20
    assert max_in_any_window([t for t, _ in sent]) <= 30
    assert len(subscribes) >= 25  # limits respected, but not by starving the feed
    assert len(pings) >= 55


def test_unsent_subscribe_is_replaced_by_the_newest():
    outbox = Outbox({"subscribe": 1, TOTAL: 30})
    outbox.offer("subscribe", "first")
    assert outbox.take(0) == ("first", None)
    outbox.offer("subscribe", "second")
    outbox.offer("subscribe", "third")
    frame, wait = outbox.take(1)
    assert frame is None and wait is not None and 59 < wait <= 61
    assert outbox.take(61.5) == ("third", None)
    assert outbox.take(62) == (None, None)


def test_reset_starts_a_new_connection_budget_and_keeps_pending():
    outbox = Outbox({"ping": 1})
    outbox.offer("ping", "p1")
    assert outbox.take(0)[0] == "p1"
    outbox.offer("ping", "p2")
    assert outbox.take(1)[0] is None
    outbox.reset()
    assert outbox.take(1)[0] == "p2"
