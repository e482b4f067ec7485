"""Fuzzing the StockTwits Firehose parser: whatever arrives, it returns publishable events or raises
its own "skip and count" exception (UnsupportedMessage), never anything else."""

from __future__ import annotations

from hypothesis import example, given

from feeds.providers.stocktwits.parse import parse_message
from tests.conftest import RECEIVED_AT, load_fixture_json
from tests.fuzzing import FUZZ, assert_parses_or_skips, raw_frames


@FUZZ
@given(raw=raw_frames(load_fixture_json("stocktwits", "sse_sentiment.json")))
@example(raw='{"message_id": 1, "seq_id": "1", "created_at": "9999-12-31T23:59:59-05:00", "symbols": []}')
@example(raw='{"message_id": 1, "seq_id": "1", "created_at": "2017-02-01T19:19:18Z", "symbols": [], '
             '"sentiment_score": 1e400}')
def test_any_message_parses_or_raises_unsupported_message(raw):
    assert_parses_or_skips(parse_message, raw, received_at=RECEIVED_AT)
