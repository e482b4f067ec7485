"""One test per InsightSentry payload shape (tests/fixtures/insightsentry/README.md says where each comes from)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feeds.events import Bar, Quote
from feeds.providers.base import Notice, UnsupportedMessage
from feeds.providers.insightsentry.parse import parse_message
from tests.conftest import load_fixture

LP = datetime.fromtimestamp(1738845296, tz=timezone.utc)


def parse(name: str, received_at):
    return parse_message(load_fixture("insightsentry", name), received_at=received_at)


def test_ws_quote__flat(received_at):
    assert parse("ws_quote__flat.json", received_at) == [Quote(
        provider="insightsentry", code="NASDAQ:AAPL", received_at=received_at, ts=LP, price=175.5, change=2.47,
        change_percent=1.43, bid=175.48, ask=175.52, volume=45000000.0, delay_seconds=0)]


def test_ws_quote__flat_nulls(received_at):
    [quote] = parse("ws_quote__flat_nulls.json", received_at)
    assert quote.price == 201.1 and quote.bid is None and quote.change_percent is None
    assert quote.ts == received_at  # no lp_time: the receive time stands in


def test_ws_quote__envelope(received_at):
    aapl, xom = parse("ws_quote__envelope.json", received_at)
    assert (aapl.code, aapl.price, aapl.delay_seconds, aapl.ts) == ("NASDAQ:AAPL", 175.5, 0, LP)
    assert (xom.code, xom.price, xom.delay_seconds) == ("NYSE:XOM", 109.2, 900)


def test_ws_series(received_at):
    assert parse("ws_series.json", received_at) == [Bar(
        provider="insightsentry", code="NASDAQ:AAPL", received_at=received_at, interval="1m",
        start=datetime.fromtimestamp(1738845240, tz=timezone.utc), open=175.1, high=175.6, low=175.0, close=175.5,
        volume=120000.0)]


@pytest.mark.parametrize("name", ["ws_heartbeat.json", "ws_greeting.json", "ws_pong.txt"])
def test_control_frames_are_ignored_explicitly(name, received_at):
    assert parse(name, received_at) == []


def test_ws_error__max_connections(received_at):
    assert parse("ws_error__max_connections.json", received_at) == [
        Notice("error", {"error": "max_connections_exceeded", "message": "Too many connections for this API key"})]


def test_ws_error__evicted(received_at):
    assert parse("ws_error__evicted.json", received_at) == [Notice("error", {"error": "connection_evicted", "message": ""})]


@pytest.mark.parametrize("raw", ["nope", "[]", '{"code":"AAPL","last_price":1}', '{"hello":1}',
                                 '{"code":"NASDAQ:AAPL","bar_type":"1m","series":[{"time":1}]}',
                                 '{"code":"NASDAQ:AAPL","last_price":"abc"}'])
def test_malformed_frames_raise_unsupported(raw, received_at):
    with pytest.raises(UnsupportedMessage):
        parse_message(raw, received_at=received_at)


def test_ws_quote__flat_null_price(received_at):
    [quote] = parse("ws_quote__flat_null_price.json", received_at)
    assert (quote.price, quote.change, quote.bid, quote.ask) == (None, None, 175.49, 175.54)


@pytest.mark.parametrize("delay, expected", [(900, 900), (-1, -1), (0, 0), (1e400, 0), (-5, 0), (True, 0)])
def test_delay_seconds_keeps_end_of_day_and_drops_nonsense(delay, expected, received_at):
    raw = f'{{"code": "NYSE:XOM", "last_price": 1, "delay_seconds": {delay if delay is not True else "true"}}}'
    assert parse_message(raw.replace("inf", "1e400"), received_at=received_at)[0].delay_seconds == expected
