"""Fuzzing the Knowsis parser: whatever event name and data arrive (a JSON string, as Pusher sends
it, or an object), it returns publishable events or raises its own "skip and count" exception
(UnsupportedMessage), never anything else."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from feeds.providers.knowsis.parse import parse_event
from tests.conftest import RECEIVED_AT, load_fixture_json
from tests.fuzzing import FUZZ, JSON_VALUES, assert_parses_or_skips, mutated, raw_frames

DOCUMENTED = {
    "datapoint": load_fixture_json("knowsis", "pusher_datapoint.json"),
    "anomaly_alert_triggered": load_fixture_json("knowsis", "pusher_anomaly_alert_triggered.json"),
    "anomaly_alert_removed": load_fixture_json("knowsis", "pusher_anomaly_alert_removed.json"),
    "price": load_fixture_json("knowsis", "pusher_price.json"),
    "top_content": load_fixture_json("knowsis", "pusher_top_content.json"),
}
EVENTS = st.sampled_from([*DOCUMENTED, "tweets", "remove_tweets"]) | st.text(max_size=10)
DATA = st.one_of(raw_frames(*DOCUMENTED.values()), JSON_VALUES, *(mutated(doc) for doc in DOCUMENTED.values()))


@FUZZ
@given(event=EVENTS, data=DATA)
@example(event="datapoint", data="[" * 5000)  # RecursionError from json.loads
@example(event="datapoint", data={"sentiment": 10**400})  # float() OverflowError
@example(event="price", data={"last": 1e308, "previous_close": -1e308})  # change overflows to inf
@example(event="anomaly_alert_triggered", data={"alert_id": "a", "trigger_time": "0001-01-01T00:00:00+05:00"})
def test_any_event_parses_or_raises_unsupported_message(event, data):
    assert_parses_or_skips(parse_event, event, data, channel="apple-inc", received_at=RECEIVED_AT)
