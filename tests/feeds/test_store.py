"""Batches are stored once: redelivered events are absorbed and not published again."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from feeds import events as ev
from feeds.models import Alert, NewsItem, Quote
from feeds.store import events_store
from tests.factories import instrument

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
pytestmark = pytest.mark.django_db


def news(external_id: str, code: str = "AAPL") -> ev.News:
    return ev.News(provider="stocknews", code=code, received_at=T, external_id=external_id, headline="h", published_at=T)


def test_news_is_stored_once_and_resolved_to_the_instrument():
    aapl = instrument("AAPL")
    new = events_store(events=[news("a"), news("a"), news("b")])
    assert [(n.external_id, n.instrument_id, n.symbol) for n in new] == [("a", aapl.id, "AAPL"), ("b", aapl.id, "AAPL")]
    assert events_store(events=[news("a"), news("c")]) == [replace(news("c"), instrument_id=aapl.id, symbol="AAPL")]
    assert NewsItem.objects.count() == 3


def test_events_for_unknown_codes_are_not_stored():
    instrument("AAPL")
    assert events_store(events=[news("x", code="ZZZZ")]) == []
    assert NewsItem.objects.count() == 0


def test_quotes_are_upserted_and_conflated_per_instrument():
    aapl = instrument("AAPL")
    quotes = [ev.Quote(provider="stocknews", code="AAPL", received_at=T, ts=T + timedelta(seconds=i), price=100 + i) for i in range(3)]
    new = events_store(events=quotes)
    assert [q.price for q in new] == [102]
    events_store(events=[replace(quotes[0], price=99.5)])
    assert list(Quote.objects.values_list("instrument_id", "price")) == [(aapl.id, 99.5)]


def test_revocation_marks_the_alert_and_is_published_once():
    instrument("AAPL")
    alert = ev.Alert(provider="stocknews", code="AAPL", received_at=T, external_id="al", triggered_at=T, level="high")
    revoked = ev.AlertRevoked(provider="stocknews", code="AAPL", received_at=T, external_id="al", revoked_at=T + timedelta(minutes=1))
    assert len(events_store(events=[alert, revoked])) == 2
    assert events_store(events=[revoked]) == []
    stored = Alert.objects.get()
    assert stored.revoked and stored.revoked_at == T + timedelta(minutes=1)


def test_a_quote_with_a_null_price_never_erases_the_known_price():
    from feeds.providers.insightsentry.parse import parse_message
    from tests.conftest import load_fixture

    aapl = instrument("AAPL")
    [known] = parse_message(load_fixture("insightsentry", "ws_quote__flat.json"), received_at=T)
    [nulls] = parse_message(load_fixture("insightsentry", "ws_quote__flat_null_price.json"), received_at=T)
    events_store(events=[known])
    [published] = events_store(events=[nulls])
    row = Quote.objects.get(instrument=aapl)
    assert (row.price, row.change, row.bid, row.ask, row.volume) == (175.5, 2.47, 175.49, 175.54, 45100000)
    assert (published.price, published.bid) == (175.5, 175.49)  # the board is not blanked either
    # Within one batch too: the later null does not undo the earlier price.
    Quote.objects.all().delete()
    [conflated] = events_store(events=[known, nulls])
    assert conflated.price == 175.5 and Quote.objects.get().price == 175.5
