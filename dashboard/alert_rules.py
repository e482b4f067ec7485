"""Alert rules: pure matching, and the pipeline sink that applies it.

`rule_fires` is pure: a rule, one new event and what it needs to know about the past (the
previous price, the recent average conversation volume) -> a description when the rule fires.
`alert_rules_evaluate` is the sink named in `settings.FEEDS_EVENT_SINKS`: it finds the rules
that watch the events' instruments, applies the cool-down (a value flapping around a threshold
fires once per cool-down, per instrument), and turns firings into stored, published Alerts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Avg

from feeds import events as ev
from feeds.groups import team_audience, user_audience
from feeds.models import SentimentSample
from feeds.store import events_store

from .models import AlertRule, RuleKind
from .rawsql import sql

__all__ = ["RuleSpec", "rule_fires", "cooled_down", "rule_alert_id", "alert_rules_evaluate"]

VOLUME_WINDOW = 20  # samples that make "the recent average" conversation volume


@dataclass(frozen=True)
class RuleSpec:
    kind: str
    threshold: float
    provider: str = ""


def _fmt(value: float) -> str:
    return f"{value:,.4g}"


def rule_fires(rule: RuleSpec, event: ev.Event, *, previous_price: float | None = None,
               volume_average: float | None = None) -> str | None:
    """Why `rule` fires on `event`, or None. Pure."""
    kind, level = rule.kind, rule.threshold
    if isinstance(event, ev.Quote) and event.price is not None:
        if kind == RuleKind.PRICE_ABOVE and previous_price is not None and previous_price < level <= event.price:
            return f"price crossed above {_fmt(level)} ({_fmt(event.price)})"
        if kind == RuleKind.PRICE_BELOW and previous_price is not None and previous_price > level >= event.price:
            return f"price crossed below {_fmt(level)} ({_fmt(event.price)})"
    if isinstance(event, ev.Quote) and kind == RuleKind.CHANGE_BEYOND and event.change_percent is not None:
        if abs(event.change_percent) >= abs(level):
            return f"change {event.change_percent:+.2f}% beyond ±{abs(level):g}%"
    if isinstance(event, ev.Sentiment) and (not rule.provider or rule.provider == event.provider):
        if kind == RuleKind.SENTIMENT_ABOVE and event.score is not None and event.score > level:
            return f"{event.provider} sentiment {_fmt(event.score)} above {_fmt(level)}"
        if kind == RuleKind.SENTIMENT_BELOW and event.score is not None and event.score < level:
            return f"{event.provider} sentiment {_fmt(event.score)} below {_fmt(level)}"
        if kind == RuleKind.VOLUME_SPIKE and event.volume is not None and volume_average:
            if event.volume >= level * volume_average:
                return f"{event.provider} conversation volume {_fmt(event.volume)} is {event.volume / volume_average:.1f}× its recent average"
    if isinstance(event, ev.News) and kind == RuleKind.NEWS_SCORE and event.sentiment is not None:
        if abs(event.sentiment) > level:
            return f"news scored {event.sentiment:+.0f}: {event.headline[:120]}"
    return None


def cooled_down(last_fired: datetime | None, now: datetime, cooldown_seconds: int) -> bool:
    return last_fired is None or now - last_fired >= timedelta(seconds=cooldown_seconds)


def rule_alert_id(*, rule_id: int, event: ev.Event) -> str:
    """The external id of the alert `rule_id` raises on `event`: the rule, the instrument and a
    digest of the triggering event as the provider sent it (every field but when we received it).

    Not a time: two firings within one second (a zero cool-down) are two alerts, however coarse
    the provider's or our clock. Not a counter: a replay of the same event (a worker that took over
    the lease, a resent frame, a quote upserted again) yields the same id, so the store's unique
    (provider, external_id) keeps one alert and nothing is published twice. Not `dedupe_key()`
    alone: a quote's is its timestamp, and a provider stamping whole seconds would merge two
    different prices within one second again."""
    message = event.to_message()
    message.pop("received_at", None)
    digest = hashlib.sha256(json.dumps(message, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    return f"rule-{rule_id}-{event.instrument_id}-{event.kind}-{digest}"


# Last price seen per instrument, in this worker process: a crossing needs the value before.
_last_price: dict[int, float] = {}


def _volume_average(event: ev.Sentiment) -> float | None:
    recent = (SentimentSample.objects.filter(instrument_id=event.instrument_id, provider=event.provider)
              .exclude(external_id=event.external_id).order_by("-ts")[:VOLUME_WINDOW])
    return SentimentSample.objects.filter(pk__in=[s.pk for s in recent]).aggregate(v=Avg("volume"))["v"]


def _covering(instrument_ids: set[int]) -> list[tuple[int, int]]:
    """(rule id, instrument id) for each enabled rule and each of these instruments it covers: its
    own instrument, or (a rule without one) every instrument on its watchlist.

    Once per stored batch on every feed worker, and most batches meet no rule: on PostgreSQL one
    query with two array parameters, as the ORM's `IN (%s, ...)` of hundreds of ids (over psycopg's
    50-parameter cache, and compiled anew each time) cost a Knowsis worker 5 % of its time."""
    ids = sorted(instrument_ids)
    if connection.vendor != "postgresql":
        direct = AlertRule.objects.filter(enabled=True, instrument_id__in=ids).values_list("id", "instrument_id")
        listed = (AlertRule.objects.filter(enabled=True, instrument__isnull=True, watchlist__items__instrument_id__in=ids)
                  .values_list("id", "watchlist__items__instrument_id"))
        return [*direct, *listed]
    with connection.cursor() as cursor:
        cursor.execute(sql(_COVERING), [ids, ids])
        return cursor.fetchall()


_COVERING = ("SELECT {rule__pk}, {rule__instrument} FROM {rule} WHERE {rule__enabled} AND {rule__instrument} = ANY(%s) "
             "UNION ALL SELECT {rule__pk}, {item__instrument} FROM {rule} INNER JOIN {item} ON {item__watchlist} = {rule__watchlist} "
             "WHERE {rule__enabled} AND {rule__instrument} IS NULL AND {item__instrument} = ANY(%s)")


def _rules_for(instrument_ids: set[int]) -> dict[int, list[AlertRule]]:
    rules: dict[int, list[AlertRule]] = {i: [] for i in instrument_ids}
    covering = _covering(instrument_ids)
    if covering:
        loaded = AlertRule.objects.in_bulk({rule_id for rule_id, _ in covering})
        for rule_id, instrument_id in sorted(covering):
            rules[instrument_id].append(loaded[rule_id])
    return rules


def alert_rules_evaluate(*, events: list[ev.Event]) -> list[ev.Event]:
    """The pipeline sink: evaluate rules against new events; store and return the fired alerts."""
    relevant = [e for e in events if e.instrument_id is not None and isinstance(e, (ev.Quote, ev.Sentiment, ev.News))]
    if not relevant:
        return []
    rules = _rules_for({e.instrument_id for e in relevant})
    fired: list[ev.Event] = []
    for event in relevant:
        previous = _last_price.get(event.instrument_id)
        if isinstance(event, ev.Quote) and event.price is not None:
            _last_price[event.instrument_id] = event.price
        for rule in rules.get(event.instrument_id, []):
            average = (_volume_average(event) if rule.kind == RuleKind.VOLUME_SPIKE and isinstance(event, ev.Sentiment)
                       else None)
            why = rule_fires(RuleSpec(rule.kind, rule.threshold, rule.provider), event,
                             previous_price=previous, volume_average=average)
            if why is None:
                continue
            now = event.received_at
            last = rule.last_fired.get(str(event.instrument_id))
            if not cooled_down(datetime.fromisoformat(last) if last else None, now, rule.cooldown_seconds):
                continue
            rule.last_fired[str(event.instrument_id)] = now.isoformat()
            AlertRule.objects.filter(pk=rule.pk).update(last_fired=rule.last_fired)
            fired.append(ev.Alert(
                provider="rules", code=event.code, received_at=now, instrument_id=event.instrument_id,
                symbol=event.symbol, external_id=rule_alert_id(rule_id=rule.pk, event=event),
                triggered_at=now, level="rule", headline=f"{event.symbol}: {why}", description=str(rule),
                audience=user_audience(rule.owner_id) if rule.owner_id else team_audience(rule.team_id),
            ))
    return events_store(events=fired) if fired else []
