"""One test per Knowsis payload from the provider doc (as valid JSON; see the fixtures' README)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from feeds.events import Alert, AlertRevoked, ContentUpdated, Quote, Sentiment
from feeds.providers.base import UnsupportedMessage
from feeds.providers.knowsis.parse import parse_event
from tests.conftest import load_fixture

CHANNEL = "3a158d211ccb5a4cb1100000"


def parse(event: str, name: str, received_at):
    return parse_event(event, load_fixture("knowsis", name), channel=CHANNEL, received_at=received_at)


def test_pusher_datapoint(received_at):
    [sample] = parse("datapoint", "pusher_datapoint.json", received_at)
    assert isinstance(sample, Sentiment)
    assert (sample.code, sample.score, sample.volume, sample.scale) == (CHANNEL, 2.0, 2.1, "knowsis")


def test_pusher_anomaly_alert_triggered(received_at):
    [alert] = parse("anomaly_alert_triggered", "pusher_anomaly_alert_triggered.json", received_at)
    assert isinstance(alert, Alert)
    assert alert.external_id == "57602570f3d4f757039a14ef" and alert.level == "high"
    assert alert.triggered_at == datetime(2016, 6, 2, 14, 57, 56, tzinfo=timezone.utc)


def test_pusher_anomaly_alert_removed(received_at):
    assert parse("anomaly_alert_removed", "pusher_anomaly_alert_removed.json", received_at) == [AlertRevoked(
        provider="knowsis", code=CHANNEL, received_at=received_at, external_id="57602570f3d4f757039a14ef",
        revoked_at=received_at)]


def test_pusher_price(received_at):
    [quote] = parse("price", "pusher_price.json", received_at)
    assert isinstance(quote, Quote)
    assert quote.price == 13.9501 and quote.delay_seconds > 0  # delayed, as documented
    assert quote.change == pytest.approx(0.3401) and quote.change_percent == pytest.approx(2.4989, abs=1e-3)
    assert quote.ts == datetime(2016, 6, 23, 11, 34, tzinfo=timezone.utc)


def test_pusher_top_content(received_at):
    assert parse("top_content", "pusher_top_content.json", received_at) == [
        ContentUpdated(provider="knowsis", code=CHANNEL, received_at=received_at)]


def test_pusher_frame__datapoint(received_at):
    frame = json.loads(load_fixture("knowsis", "pusher_frame__datapoint.json"))
    assert isinstance(frame["data"], str)  # Pusher double-encodes: data is a JSON string
    [sample] = parse_event(frame["event"], frame["data"], channel=frame["channel"], received_at=received_at)
    assert sample.volume == 2.1


@pytest.mark.parametrize("event", ["tweets", "remove_tweets"])
def test_tweet_events_are_ignored(event, received_at):
    assert parse_event(event, '{"anything": 1}', channel=CHANNEL, received_at=received_at) == []


def test_missing_credibility_is_unknown(received_at):
    [alert] = parse_event("anomaly_alert_triggered", '{"alert_id": "a1", "trigger_time": "2016-06-02T14:57:56"}',
                          channel=CHANNEL, received_at=received_at)
    assert alert.level == "unknown"


@pytest.mark.parametrize("event,data", [("mystery", "{}"), ("datapoint", "not json"), ("datapoint", "[1]"),
                                        ("price", '{"last": "n/a"}'), ("anomaly_alert_removed", "{}"),
                                        ("anomaly_alert_triggered", '{"alert_id": "x", "trigger_time": 5}')])
def test_malformed_events_raise_unsupported(event, data, received_at):
    with pytest.raises(UnsupportedMessage):
        parse_event(event, data, channel=CHANNEL, received_at=received_at)


@pytest.mark.parametrize("data", ["{}", '{"sentiment": null, "volume": null}', "", '{"other": 1}'])
def test_a_datapoint_with_neither_sentiment_nor_volume_is_a_parse_error(data, received_at):
    with pytest.raises(UnsupportedMessage, match="neither sentiment nor volume"):
        parse_event("datapoint", data, channel=CHANNEL, received_at=received_at)


def test_a_datapoint_with_only_a_volume_is_a_sample(received_at):
    [sample] = parse_event("datapoint", '{"volume": 3}', channel=CHANNEL, received_at=received_at)
    assert (sample.score, sample.raw_score, sample.volume) == (None, "", 3.0)
