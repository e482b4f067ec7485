"""Every event type survives the real live path (serialised once, framed by the Redis script, fanned
out by the hub) unchanged."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from feeds import events as ev
from feeds.broadcast import publish_events
from feeds.groups import instrument_group
from feeds.hub import live_backend
from tests.live import listening

T = datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)
COMMON = dict(provider="stocknews", code="AAPL", received_at=T, instrument_id=7, symbol="AAPL")

SAMPLES = [
    ev.Quote(**COMMON, ts=T, price=175.5, change=1.2, change_percent=0.69, bid=175.4, ask=175.6, volume=1e6, delay_seconds=900),
    ev.Bar(**COMMON, interval="1m", start=T, open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0),
    ev.Sentiment(**COMMON, external_id="dp-1", ts=T, score=0.42, scale="knowsis", raw_score="0.42", volume=120.0),
    ev.News(**COMMON, external_id="slug", headline="Apple beats", published_at=T, summary="s", url="https://x.test/a",
            category="earnings", sentiment=75.0, raw_sentiment="75", sentiment_label="Bullish", confidence=92.0,
            key_factors=("earnings beat", "revenue growth"), source="Stock News", price=175.5),
    ev.Alert(**COMMON, external_id="al-1", triggered_at=T, level="high", headline="Abnormal chatter"),
    ev.AlertRevoked(**COMMON, external_id="al-1", revoked_at=T + timedelta(minutes=5)),
    ev.CrowdPost(**COMMON, external_id="5556662", cursor="49567487888076093524624994048752032346222860024699420674",
                 ts=T, score=0.854, user_id="222222", title="Apple Inc.", exchange="NASDAQ", sector="Technology",
                 industry="Personal Computers"),
    ev.ContentUpdated(**COMMON),
]


def test_every_event_type_has_a_sample():
    assert {type(s) for s in SAMPLES} == set(ev.EVENT_TYPES.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_to_message_is_json_primitives_and_round_trips(event):
    message = event.to_message()
    assert json.loads(json.dumps(message)) == message
    assert ev.event_from_message(message) == event


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        ev.Quote(provider="p", code="c", received_at=datetime(2026, 1, 1), ts=T)


def test_times_are_converted_to_utc():
    plus_two = timezone(timedelta(hours=2))
    quote = ev.Quote(provider="p", code="c", received_at=T, ts=datetime(2026, 1, 1, 14, 0, tzinfo=plus_two))
    assert quote.ts == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert quote.to_message()["ts"] == "2026-01-01T12:00:00Z"


@pytest.mark.asyncio
@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
async def test_round_trip_through_the_live_path(event, settings):
    assert type(live_backend()).__name__ == "RedisLive"
    stream = instrument_group(event.instrument_id)
    async with listening(stream) as inbox:
        assert await publish_events([event]) == 1
        frame = await inbox.next()
    assert frame == {"type": "event", "stream": stream, "epoch": frame["epoch"], "seq": frame["seq"],
                     "event": event.to_message()}
    assert ev.event_from_message(frame["event"]) == event
