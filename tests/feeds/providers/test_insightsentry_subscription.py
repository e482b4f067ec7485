"""Subscribe messages are built whole and validated: an invalid instrument never reaches the wire."""

from __future__ import annotations

import json

import pytest

from feeds.providers.insightsentry.subscription import SeriesSettings, build_subscribe, validate_entry
from tests.conftest import load_fixture_json


def test_the_docs_example_entries_are_valid():
    for entry in load_fixture_json("insightsentry", "ws_subscribe.json")["subscriptions"]:
        assert validate_entry(entry) is None


def test_one_quote_and_one_series_entry_per_code_with_the_key():
    message, invalid = build_subscribe(api_key="k", codes={"NASDAQ:AAPL", "NYSE:XOM"}, series=SeriesSettings())
    assert invalid == {}
    assert message == {"api_key": "k", "subscriptions": [
        {"code": "NASDAQ:AAPL", "type": "quote"},
        {"code": "NASDAQ:AAPL", "type": "series", "interval_type": "minute", "interval_length": 1},
        {"code": "NYSE:XOM", "type": "quote"},
        {"code": "NYSE:XOM", "type": "series", "interval_type": "minute", "interval_length": 1},
    ]}


def test_newer_spelling_by_account_setting():
    series = SeriesSettings.from_options({"interval_type": "hour", "interval_length": 4, "field_names": "bar"})
    message, _ = build_subscribe(api_key="k", codes={"NASDAQ:AAPL"}, series=series)
    assert message["subscriptions"][1] == {"code": "NASDAQ:AAPL", "type": "series", "bar_type": "hour", "bar_interval": 4}


def test_invalid_codes_are_left_out_and_reported():
    message, invalid = build_subscribe(api_key="k", codes={"NASDAQ:AAPL", "AAPL", "nasdaq aapl"}, series=SeriesSettings())
    assert set(invalid) == {"AAPL", "nasdaq aapl"}
    assert "AAPL" not in json.dumps(message).replace("NASDAQ:AAPL", "")


def test_nothing_valid_means_no_message():
    assert build_subscribe(api_key="k", codes={"BAD"}, series=SeriesSettings()) == (None, {"BAD": "code 'BAD' is not EXCHANGE:SYMBOL"})


@pytest.mark.parametrize("entry,reason", [
    ({"code": "NASDAQ:AAPL", "type": "trade"}, "type"),
    ({"code": "NASDAQ:AAPL", "interval_type": "tick"}, "interval type"),
    ({"code": "NASDAQ:AAPL", "interval_type": "second", "interval_length": 2}, "second bars"),
    ({"code": "NASDAQ:AAPL", "interval_type": "minute", "interval_length": 525600}, "under a year"),
    ({"code": "NASDAQ:AAPL", "interval_type": "month", "interval_length": 12}, "under a year"),
    ({"code": "NASDAQ:AAPL", "interval_type": "day", "interval_length": 0}, "positive"),
])
def test_documented_rules(entry, reason):
    assert reason in validate_entry(entry)


@pytest.mark.parametrize("entry", [
    {"code": "NASDAQ:AAPL", "interval_type": "second", "interval_length": 1},
    {"code": "NASDAQ:AAPL", "interval_type": "minute", "interval_length": 525599},
    {"code": "NYSE:BRK.B", "type": "quote"},
])
def test_valid_edges(entry):
    assert validate_entry(entry) is None
