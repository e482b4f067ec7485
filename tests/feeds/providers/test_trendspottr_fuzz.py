"""Fuzzing the TrendSpottr webhook parser (feeds/providers/trendspottr/webhook.py): whatever an
authenticated sender posts, every function returns or raises its own "skip and count" exception
(UnsupportedMessage), never anything else; the secret check never raises at all."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from feeds.providers.base import UnsupportedMessage
from feeds.providers.trendspottr.webhook import (event_id_of, parse_alert_event, secret_digest, secret_matches,
                                                 without_secret)
from tests.conftest import RECEIVED_AT, load_fixture_json
from tests.fuzzing import FUZZ, JSON_VALUES, assert_publishable, mutated

DOCUMENTED = load_fixture_json("trendspottr", "webhook_alert.json")
PAYLOADS = mutated(DOCUMENTED) | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5)


@FUZZ
@given(payload=PAYLOADS)
@example(payload={**DOCUMENTED, "created": 10**400})  # datetime.fromtimestamp raised OverflowError
def test_any_payload_parses_or_raises_unsupported_message(payload):
    assert "secret" not in without_secret(payload)
    try:
        event_id_of(payload)
    except UnsupportedMessage:
        pass
    try:
        events = parse_alert_event(payload, received_at=RECEIVED_AT)
    except UnsupportedMessage:
        return
    assert_publishable(events)
    json.dumps([event.to_message() for event in events])


@FUZZ
@given(supplied=JSON_VALUES)
def test_any_secret_is_a_plain_mismatch(supplied):
    assert secret_matches(supplied, [secret_digest("topsecret!!"), ""]) is False
