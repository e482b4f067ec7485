"""Batches are stored once: redelivered events are absorbed and not published again."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from django.conf import settings

from feeds import events as ev
from feeds.models import Alert, NewsItem, Quote, SentimentSample
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


def test_only_new_sentiment_and_alerts_are_reported_and_a_batch_repeating_a_key_stores_it_once():
    aapl = instrument("AAPL")
    sample = ev.Sentiment(provider="knowsis", code="aapl", received_at=T, external_id="datapoint:1", ts=T, score=2.0,
                          scale="knowsis", raw_score="2", volume=1.5)
    aapl.knowsis_channel = "aapl"
    aapl.save()
    alert = ev.Alert(provider="knowsis", code="aapl", received_at=T, external_id="al-1", triggered_at=T, level="high",
                     related_hashtags=("#a", "#b"))
    assert [e.external_id for e in events_store(events=[sample, sample, alert])] == ["datapoint:1", "al-1"]
    assert events_store(events=[sample, alert, replace(sample, external_id="datapoint:2")]) == [
        replace(sample, external_id="datapoint:2", instrument_id=aapl.id, symbol="AAPL")]
    assert SentimentSample.objects.count() == 2
    stored = Alert.objects.get()
    assert (stored.instrument_id, stored.level, stored.related_hashtags) == (aapl.id, "high", ["#a", "#b"])


def test_news_fields_are_stored_as_sent():
    aapl = instrument("AAPL")
    item = replace(news("full"), summary="s", url="https://example.com/n", category="earnings", sentiment=-42.5,
                   raw_sentiment="-0.425", sentiment_label="Bearish", confidence=90.0, key_factors=("a", "b"),
                   source="Stock News", price=None)
    events_store(events=[item])
    row = NewsItem.objects.get()
    assert (row.instrument_id, row.headline, row.summary, row.url, row.category, row.sentiment, row.raw_sentiment,
            row.sentiment_label, row.confidence, row.key_factors, row.source, row.price, row.published_at,
            row.received_at) == (aapl.id, "h", "s", "https://example.com/n", "earnings", -42.5, "-0.425", "Bearish",
                                 90.0, ["a", "b"], "Stock News", None, T, T)


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                    reason="SQLite does not enforce a column's length")
def test_a_value_too_long_for_its_column_is_refused_not_cut():
    from django.db import DataError, transaction

    instrument("AAPL")
    with pytest.raises(DataError), transaction.atomic():  # what the pipeline treats as bad data: not retried
        events_store(events=[replace(news("x"), category="c" * 65)])
    assert NewsItem.objects.count() == 0


def test_resolving_copies_the_event_with_its_instrument():
    from feeds.store import _with_instrument

    event = replace(news("a"), key_factors=("k",))
    assert _with_instrument(event, 7, "AAPL") == event.resolved(instrument_id=7, symbol="AAPL")
    assert event.instrument_id is None  # the original is left alone


def crowd(message: int, symbol: str, score: float | None, minute: int = 0) -> ev.CrowdPost:
    return ev.CrowdPost(provider="stocktwits", code=symbol, received_at=T, external_id=str(message),
                        cursor=f"{message:056d}", ts=T + timedelta(minutes=minute, seconds=message % 60), score=score,
                        title=f"{symbol} Corp.", exchange="NYSE")


def test_crowd_buckets_are_recomputed_from_stored_mentions_across_batches_and_replays():
    from feeds.models import CrowdMention, SentimentSample, StreamCursor

    aapl = instrument("AAPL", name="", exchange="")
    msft = instrument("MSFT")
    first = events_store(events=[crowd(1, "AAPL", 0.5), crowd(1, "MSFT", -1.0), crowd(2, "AAPL", None),
                                 crowd(3, "AAPL", 0.1, minute=1), crowd(4, "ZZZZ", 1.0)])
    assert {(s.symbol, s.ts, s.volume, s.score) for s in first} == {
        ("AAPL", T, 2.0, 0.5), ("MSFT", T, 1.0, -1.0), ("AAPL", T + timedelta(minutes=1), 1.0, 0.1)}
    # A later batch, and a replayed overlap: the minute's bucket counts every stored message once.
    second = events_store(events=[crowd(2, "AAPL", None), crowd(5, "AAPL", -0.1)])
    assert [(s.symbol, s.ts, s.volume, s.score) for s in second] == [("AAPL", T, 3.0, 0.2)]
    assert CrowdMention.objects.count() == 6  # the unknown symbol too: the stream's position moves past it
    assert StreamCursor.objects.get().position == f"{5:056d}"
    rows = {(r.instrument_id, r.ts): (r.volume, r.score) for r in SentimentSample.objects.all()}
    assert rows == {(aapl.id, T): (3.0, pytest.approx(0.2)), (msft.id, T): (1.0, -1.0),
                    (aapl.id, T + timedelta(minutes=1)): (1.0, 0.1)}
    aapl.refresh_from_db()
    msft.refresh_from_db()
    assert (aapl.name, aapl.exchange) == ("AAPL Corp.", "NYSE")  # filled where empty
    assert (msft.name, msft.exchange) == ("MSFT Inc.", "NASDAQ")  # never overwritten


def test_bars_are_upserted_by_start_and_conflated_to_the_latest_update():
    from feeds.models import Bar

    aapl = instrument("AAPL")

    def bar(close: float, minute: int = 0) -> ev.Bar:
        return ev.Bar(provider="insightsentry", code="NASDAQ:AAPL", received_at=T, interval="1m",
                      start=T + timedelta(minutes=minute), open=10, high=12, low=9, close=close, volume=100 + close)

    assert [(b.start, b.close) for b in events_store(events=[bar(10.5), bar(11), bar(11.5, minute=1)])] == [
        (T, 11), (T + timedelta(minutes=1), 11.5)]
    events_store(events=[bar(9.5)])  # the bar's close moved again
    assert sorted(Bar.objects.values_list("instrument_id", "start", "close", "volume")) == [
        (aapl.id, T, 9.5, 109.5), (aapl.id, T + timedelta(minutes=1), 11.5, 111.5)]


def test_quotes_from_two_providers_stay_apart_and_a_later_batch_fills_its_nulls_from_the_row():
    aapl = instrument("AAPL")
    first = ev.Quote(provider="insightsentry", code="NASDAQ:AAPL", received_at=T, ts=T, price=10.0, bid=9.9,
                     ask=10.1, volume=5)
    other = ev.Quote(provider="stocknews", code="AAPL", received_at=T, ts=T, price=11.0)
    events_store(events=[first, other])
    [later] = events_store(events=[replace(first, ts=T + timedelta(seconds=1), price=10.5, bid=None, ask=None)])
    assert (later.price, later.bid, later.ask, later.volume, later.instrument_id) == (10.5, 9.9, 10.1, 5, aapl.id)
    assert sorted(Quote.objects.values_list("provider", "price", "bid", "ts")) == [
        ("insightsentry", 10.5, 9.9, T + timedelta(seconds=1)), ("stocknews", 11.0, None, T)]
