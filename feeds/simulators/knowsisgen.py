"""Knowsis Push API event content (../shared/providers/knowsis-push-api.md) for the simulator.

Pure functions of their arguments plus a caller-supplied `random.Random`: a seeded simulator
replays the same stream. No I/O, no clock (the caller passes `now`, an aware datetime).
Per-channel state is an immutable `ChannelState`; every generator returns the next one.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from . import newsgen
from .newsgen import Company

EVENTS = ("datapoint", "price", "anomaly_alert_triggered", "anomaly_alert_removed",
          "top_content", "tweets", "remove_tweets")
# Relative frequencies for automatic generation: sentiment/volume moves all the time, delayed
# prices often, alerts are rare and revocations rarer still.
WEIGHTS: dict[str, float] = {"datapoint": 50, "price": 30, "anomaly_alert_triggered": 4,
                             "anomaly_alert_removed": 1.5, "top_content": 6, "tweets": 7, "remove_tweets": 1.5}
CREDIBILITY: dict[str, float] = {"high": 0.25, "medium": 0.35, "unknown": 0.4}
PRICE_DELAY = timedelta(minutes=15)  # "The price data in the price message is delayed."
_MAX_REMEMBERED = 20  # alert/tweet ids kept per channel for later removal events


@dataclass(frozen=True)
class Price:
    open: float
    high: float
    low: float
    last: float
    previous_close: float
    volume: int
    last_trade: datetime


@dataclass(frozen=True)
class ChannelState:
    company: Company
    sentiment: int  # Knowsis "simple" sentiment, a small signed integer
    volume: float  # normalised volume, around 1.0 on an ordinary day
    price: Price
    alerts: tuple[str, ...] = ()  # live alert ids, oldest first
    tweets: tuple[str, ...] = ()


def naive_iso(dt: datetime) -> str:
    """UTC without offset or fraction, e.g. "2016-06-02T14:57:56", as the doc's samples show."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def company_for_channel(channel: str) -> Company:
    """The company a channel name stands for (`apple-inc`, `AAPL`), else a stable stand-in.

    Real channel ids are opaque (`3a158d211ccb5a4cb1100000`); the stand-in is seeded by the
    name so its price level does not change between runs or restarts.
    """
    name = channel.lower()
    for company in newsgen.UNIVERSE.values():
        short = newsgen.slugify(company.short)
        if name == company.ticker.lower() or name == short or name.startswith(short + "-"):
            return company
    return newsgen.make_company(random.Random(zlib.crc32(channel.encode())), channel[:6].upper())


def new_channel(rng: random.Random, channel: str, now: datetime) -> ChannelState:
    company = company_for_channel(channel)
    quote = newsgen.initial_quote(rng, company)
    open_ = round(quote.prev_close * (1 + rng.gauss(0, 0.006)), 2)
    last = round(quote.price, 4)
    price = Price(open_, max(open_, last), min(open_, last), last, quote.prev_close, quote.volume,
                  _trade_time(now))
    return ChannelState(company, rng.randint(-1, 1), round(rng.uniform(0.6, 1.6), 1), price)


def pick_event(rng: random.Random, state: ChannelState) -> str:
    """A weighted random event; removals only when there is something earlier to remove."""
    events = [e for e in EVENTS if (e != "anomaly_alert_removed" or state.alerts)
              and (e != "remove_tweets" or state.tweets)]
    return rng.choices(events, weights=[WEIGHTS[e] for e in events])[0]


def generate(rng: random.Random, state: ChannelState, event: str,
             now: datetime) -> tuple[dict[str, Any], ChannelState]:
    """The payload of one `event` for this channel, and the channel's next state."""
    if event == "datapoint":
        return _datapoint(rng, state)
    if event == "price":
        return _price(rng, state, now)
    if event == "anomaly_alert_triggered":
        payload = {"alert_id": alert_id(rng, now), "trigger_time": naive_iso(now),
                   "credibility": rng.choices(list(CREDIBILITY), weights=list(CREDIBILITY.values()))[0]}
        return payload, observe(state, event, payload)
    if event == "anomaly_alert_removed":
        # Normally an earlier alert; a fresh id only when asked explicitly and none is live.
        gone = rng.choice(state.alerts) if state.alerts else alert_id(rng, now)
        payload = {"alert_id": gone}
        return payload, observe(state, event, payload)
    if event == "tweets":
        payload = _tweets(rng, state.company, now)
        return payload, observe(state, event, payload)
    if event == "remove_tweets":
        payload = {"ids": rng.sample(state.tweets, min(len(state.tweets), rng.randint(1, 2)))}
        return payload, observe(state, event, payload)
    return {}, state  # top_content (always empty: clients refetch over REST) or unknown events


def observe(state: ChannelState, event: str, payload: dict[str, Any]) -> ChannelState:
    """Fold an event (generated or supplied by a test) into the state, so that later removal
    events refer to ids the clients have actually seen."""
    if event == "anomaly_alert_triggered" and isinstance(payload.get("alert_id"), str):
        return replace(state, alerts=(*state.alerts, payload["alert_id"])[-_MAX_REMEMBERED:])
    if event == "anomaly_alert_removed":
        return replace(state, alerts=tuple(a for a in state.alerts if a != payload.get("alert_id")))
    if event == "tweets" and isinstance(payload.get("tweets"), list):
        ids = tuple(t["id"] for t in payload["tweets"] if isinstance(t, dict) and "id" in t)
        return replace(state, tweets=(*state.tweets, *ids)[-_MAX_REMEMBERED:])
    if event == "remove_tweets" and isinstance(payload.get("ids"), list):
        return replace(state, tweets=tuple(t for t in state.tweets if t not in payload["ids"]))
    return state


def alert_id(rng: random.Random, now: datetime) -> str:
    """24 hex digits shaped like a MongoDB ObjectId (the doc's `57602570f3d4f757039a14ef` is one:
    its first 8 digits are the creation time in seconds)."""
    return f"{int(now.timestamp()) & 0xFFFFFFFF:08x}{rng.getrandbits(64):016x}"


def price_payload(price: Price) -> dict[str, Any]:
    """The documented shape: numbers are numbers except `previous_close`, a 4-decimal string."""
    return {"high": price.high, "last": price.last, "last_trade": naive_iso(price.last_trade),
            "low": price.low, "open": price.open, "previous_close": f"{price.previous_close:.4f}",
            "volume": price.volume}


def _datapoint(rng: random.Random, state: ChannelState) -> tuple[dict[str, Any], ChannelState]:
    # Small random walks: sentiment drifts by one step at most, volume mean-reverts towards 1.
    sentiment = max(-3, min(3, state.sentiment + rng.choice((-1, 0, 0, 1))))
    volume = state.volume + 0.2 * (1.0 - state.volume) + rng.gauss(0, 0.35)
    volume = round(max(0.5, min(5.0, volume)), 1)
    return {"sentiment": sentiment, "volume": volume}, replace(state, sentiment=sentiment, volume=volume)


def _price(rng: random.Random, state: ChannelState, now: datetime) -> tuple[dict[str, Any], ChannelState]:
    old = state.price
    last = max(0.5, round(old.last * (1 + state.sentiment * 0.0005 + rng.gauss(0, 0.002)), 4))
    added = int(state.company.avg_volume * rng.uniform(0.001, 0.01))
    price = replace(old, last=last, high=max(old.high, last), low=min(old.low, last),
                    volume=old.volume + added, last_trade=max(old.last_trade, _trade_time(now)))
    return price_payload(price), replace(state, price=price)


def _trade_time(now: datetime) -> datetime:
    """Delayed and on whole minutes, like the doc's "2016-06-23T11:34:00"."""
    return (now - PRICE_DELAY).astimezone(timezone.utc).replace(second=0, microsecond=0)


def _tweets(rng: random.Random, company: Company, now: datetime) -> dict[str, Any]:
    # The doc gives no shape (the widget's feed; clients should ignore it): a small plausible one.
    phrases = ("looking strong today", "volume picking up", "watching this closely",
               "breaking out?", "not convinced by the move", "big day ahead")
    count = rng.randint(1, 3)
    return {"tweets": [{"id": str(rng.randrange(10**18, 10**19)), "created_at": naive_iso(now),
                        "text": f"${company.ticker} {rng.choice(phrases)}"} for _ in range(count)]}
