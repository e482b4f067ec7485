"""One test per recorded StockNews payload (fixtures copied from the provider doc)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feeds.events import News, Quote
from feeds.providers.base import Notice, UnsupportedMessage
from feeds.providers.stocknews.parse import normalise_score, parse_close_reason, parse_message
from tests.conftest import load_fixture, load_fixture_json

T = datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)


def test_ws_connected(received_at):
    [notice] = parse_message(load_fixture("stocknews", "ws_connected.json"), received_at=received_at)
    assert notice == Notice("connected", {"expires_at": "2026-03-06T00:00:00.000Z", "active": True})


def test_ws_news(received_at):
    [news, quote] = parse_message(load_fixture("stocknews", "ws_news.json"), received_at=received_at)
    assert isinstance(news, News)
    assert news.provider == "stocknews" and news.code == "AAPL"
    assert news.external_id == "apple-record-earnings-q1-2026"
    assert news.headline.startswith("Apple Inc. reported record quarterly earnings")
    assert news.sentiment == 75.0 and news.raw_sentiment == "75"
    assert news.confidence == 92.0
    assert news.sentiment_label == "Bullish" and news.category == "earnings"
    assert news.key_factors == ("earnings beat", "revenue growth", "strong iPhone sales")
    assert news.url == "https://stocknews.live/news/AAPL/apple-record-earnings-q1-2026"
    assert news.published_at == T and news.received_at == received_at
    assert news.source == "Stock News / Trading Community" and news.price == 175.5
    assert quote == Quote(provider="stocknews", code="AAPL", received_at=received_at, ts=T, price=175.5,
                          change_percent=2.5, volume=45000000.0)


def test_ws_news__minimal(received_at):
    [news, _quote] = parse_message(load_fixture("stocknews", "ws_news__minimal.json"), received_at=received_at)
    assert news.external_id == "article-slug"
    assert news.key_factors == ("earnings beat", "revenue growth")


def test_ws_news__fractional_scale(received_at):
    """0.75/0.92 on the wire are read as fractions: normalised to 75/92, raw kept."""
    [news, _quote] = parse_message(load_fixture("stocknews", "ws_news__fractional_scale.json"), received_at=received_at)
    assert news.sentiment == 75.0 and news.raw_sentiment == "0.75"
    assert news.confidence == 92.0


def test_ws_error(received_at):
    [notice] = parse_message(load_fixture("stocknews", "ws_error.json"), received_at=received_at)
    assert notice == Notice("error", {"error": "Rate limit exceeded", "message": "Too many ping messages. Please slow down."})


def test_close_reason__subscription_expired():
    reason = parse_close_reason(load_fixture("stocknews", "close_reason__subscription_expired.json"))
    assert reason["error"] == "Subscription expired" and reason["expiresAt"] == "2026-03-06T00:00:00.000Z"
    assert parse_close_reason("not json") == {"message": "not json"}


def test_news_for_several_tickers_gives_one_event_each(received_at):
    message = load_fixture_json("stocknews", "ws_news.json")
    message["data"]["stockTickers"] = ["AAPL", "MSFT", "aapl"]
    import json

    events = parse_message(json.dumps(message), received_at=received_at)
    assert [(e.kind, e.code) for e in events] == [("news", "AAPL"), ("news", "MSFT"), ("quote", "AAPL")]
    assert len({e.external_id for e in events if e.kind == "news"}) == 1


def test_unsafe_article_url_is_dropped(received_at):
    import json

    message = load_fixture_json("stocknews", "ws_news.json")
    message["data"]["articleUrl"] = "javascript:alert(1)"
    [news, _quote] = parse_message(json.dumps(message), received_at=received_at)
    assert news.url == ""


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1,2]", '{"type":"mystery"}', '{"type":"news"}', '{"type":"news","data":{"summary":"x"}}',
     '{"type":"news","data":{"ticker":"AAPL","timestamp":"yesterday"}}'],
)
def test_malformed_frames_raise_unsupported(raw, received_at):
    with pytest.raises(UnsupportedMessage):
        parse_message(raw, received_at=received_at)


@pytest.mark.parametrize("value,expected", [(75, 75.0), (-0.5, -50.0), (0, 0.0), (250, 100.0), ("x", None), (None, None),
                                            (True, None), (1, 1.0), (-1, -1.0), (1.0, 100.0), ("0.5", 50.0)])
def test_normalise_score(value, expected):
    assert normalise_score(value, scale=100) == expected
