"""Fuzzing the StockNews.live parser: whatever arrives, it returns publishable events or raises its
own "skip and count" exception (UnsupportedMessage), never anything else."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from feeds.providers.stocknews.parse import parse_close_reason, parse_message
from tests.conftest import RECEIVED_AT, load_fixture_json
from tests.fuzzing import FUZZ, assert_parses_or_skips, raw_frames

DOCUMENTED = [load_fixture_json("stocknews", name) for name in (
    "ws_news.json", "ws_news__minimal.json", "ws_news__fractional_scale.json", "ws_connected.json", "ws_error.json")]


@FUZZ
@given(raw=raw_frames(*DOCUMENTED) | st.binary(max_size=40))
@example(raw='{"type": "news", "data": {"ticker": "AAPL", "stockTickers": true}}')  # iterated a bool
@example(raw='{"type": "news", "data": {"ticker": "A", "timestamp": "0001-01-01T00:00:00+05:00"}}')  # Overflow
@example(raw='{"type": "news", "data": {"ticker": "A", "timestamp": "2026-02-06T12:34:56Z", "price": 1e400}}')
def test_any_frame_parses_or_raises_unsupported_message(raw):
    assert_parses_or_skips(parse_message, raw, received_at=RECEIVED_AT)


@FUZZ
@given(reason=raw_frames(load_fixture_json("stocknews", "close_reason__subscription_expired.json")))
def test_any_close_reason_gives_a_dict(reason):
    assert isinstance(parse_close_reason(reason), dict)
