"""The StockTwits firehose message from the provider doc, and what must be refused."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from feeds.events import CrowdPost
from feeds.providers.base import UnsupportedMessage
from feeds.providers.stocktwits.parse import parse_message
from feeds.transports.sse_decoder import SseDecoder
from tests.conftest import load_fixture

SEQ = "49567487888076093524624994048752032346222860024699420674"


def test_sse_sentiment(received_at):
    assert parse_message(load_fixture("stocktwits", "sse_sentiment.json"), received_at=received_at) == [CrowdPost(
        provider="stocktwits", code="ABC", received_at=received_at, external_id="5556662", cursor=SEQ,
        ts=datetime(2017, 2, 1, 19, 19, 18, tzinfo=timezone.utc), score=0.854, user_id="222222",
        title="Alpha Bravo Charlie, inc.", exchange="NASDAQ", sector="Technology", industry="Personal Computers")]


def test_sse_stream(received_at):
    [event] = SseDecoder().feed(load_fixture("stocktwits", "sse_stream.txt"))
    [post] = parse_message(event.data, received_at=received_at)
    assert post.cursor == SEQ and post.code == "ABC"


def test_seq_id_survives_as_the_exact_digits(received_at):
    message = json.loads(load_fixture("stocktwits", "sse_sentiment.json"))
    message["seq_id"] = int(SEQ)  # even if a server sent it as a JSON number
    [post] = parse_message(json.dumps(message), received_at=received_at)
    assert post.cursor == SEQ


@pytest.mark.parametrize("change", [{"seq_id": 4.9e55}, {"message_id": None}, {"symbols": "ABC"},
                                    {"created_at": "yesterday"}, {"sentiment_score": "high"}, {"symbols": [{"id": 1}]}])
def test_malformed_messages_raise_unsupported(change, received_at):
    message = {**json.loads(load_fixture("stocktwits", "sse_sentiment.json")), **change}
    with pytest.raises(UnsupportedMessage):
        parse_message(json.dumps(message), received_at=received_at)
