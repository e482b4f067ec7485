"""Fuzzing the InsightSentry parser: whatever arrives, it returns publishable events or raises its
own "skip and count" exception (UnsupportedMessage), never anything else."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from feeds.providers.insightsentry.parse import parse_message
from tests.conftest import RECEIVED_AT, load_fixture_json
from tests.fuzzing import FUZZ, assert_parses_or_skips, raw_frames

DOCUMENTED = [load_fixture_json("insightsentry", name) for name in (
    "ws_quote__flat.json", "ws_quote__flat_nulls.json", "ws_quote__envelope.json", "ws_series.json",
    "ws_error__evicted.json", "ws_heartbeat.json", "ws_greeting.json")]


@FUZZ
@given(raw=raw_frames(*DOCUMENTED) | st.binary(max_size=40))
@example(raw="[" * 5000 + "]" * 5000)  # RecursionError from json.loads
@example(raw='{"code": "NASDAQ:AAPL", "last_price": 1, "lp_time": 1e300}')  # datetime.fromtimestamp overflow
@example(raw='{"code": "NASDAQ:AAPL", "last_price": 1, "delay_seconds": 1e400}')  # int(inf)
@example(raw='{"code": "NASDAQ:AAPL", "last_price": "NaN"}')  # a NaN a browser cannot parse back
def test_any_frame_parses_or_raises_unsupported_message(raw):
    assert_parses_or_skips(parse_message, raw, received_at=RECEIVED_AT)
