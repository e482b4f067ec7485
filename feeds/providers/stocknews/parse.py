"""StockNews.live wire messages -> normalised events. Pure: no I/O, no clock.

Wire reference: ../shared/providers/stocknews-websocket.md ("Message Types", "Data Fields").
Quirk: `sentimentScore` is documented as -100..100 but has been seen as 0.75 (and
`confidence` as 0.92): a value whose magnitude is at most 1 is read as a fraction and
scaled; the raw value is kept as it came (../shared/notes/providers.md, A5).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

from feeds.events import Event, News, Quote, utc
from feeds.providers.base import Notice, UnsupportedMessage, json_loads

__all__ = ["PROVIDER", "parse_message", "parse_close_reason", "normalise_score"]

PROVIDER = "stocknews"
HEADLINE_MAX = 160


def normalise_score(value: Any, *, scale: float) -> float | None:
    """Normalise a score to ±`scale` (sentiment: 100, confidence: 100).

    Only a fractional number (a JSON float such as 0.75 or 1.0) of magnitude at most 1 is read
    as a fraction; an integer such as 1 or -1 is already on the documented -100..100 scale.
    """
    number = _float(value)
    if number is None:
        return None
    if abs(number) <= 1 and not isinstance(value, int):
        number *= scale
    return max(-scale, min(scale, number))


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise UnsupportedMessage(f"timestamp is not a string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnsupportedMessage(f"bad timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        raise UnsupportedMessage(f"timestamp without zone {value!r}")
    try:
        return utc(parsed)
    except OverflowError as exc:  # year 1 or 9999 pushed out of range by its UTC offset
        raise UnsupportedMessage(f"timestamp out of range {value!r}") from exc


def _headline(summary: str) -> str:
    """StockNews sends no headline: use the summary's first sentence, cut at a word."""
    first = summary.strip().split("\n", 1)[0]
    if len(first) <= HEADLINE_MAX:
        return first
    return first[:HEADLINE_MAX].rsplit(" ", 1)[0] + "…"


def _external_id(data: dict[str, Any]) -> str:
    for key in ("articleSlug", "articleUrl"):
        if isinstance(data.get(key), str) and data[key]:
            return data[key][:255]
    digest = hashlib.sha256(
        json.dumps([data.get("ticker"), data.get("timestamp"), data.get("summary")]).encode()
    ).hexdigest()
    return f"sha256:{digest[:40]}"


def _float(value: Any) -> float | None:
    """Optional numbers: anything that is not a finite number is left out, not an error."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []  # a string would be iterated letter by letter


def parse_news(message: dict[str, Any], *, received_at: datetime) -> list[Event]:
    data = message.get("data")
    if not isinstance(data, dict):
        raise UnsupportedMessage("news without a data object")
    ticker = data.get("ticker")
    if not isinstance(ticker, str) or not ticker.strip():
        raise UnsupportedMessage("news without a ticker")
    summary = data.get("summary") if isinstance(data.get("summary"), str) else ""
    tickers = [ticker.strip().upper()]
    for other in _list(data.get("stockTickers")):
        if isinstance(other, str) and other.strip() and other.strip().upper() not in tickers:
            tickers.append(other.strip().upper())
    raw_score = data.get("sentimentScore")
    url = data.get("articleUrl") if isinstance(data.get("articleUrl"), str) else ""
    common = dict(
        provider=PROVIDER,
        received_at=received_at,
        external_id=_external_id(data),
        headline=_headline(summary) or f"{tickers[0]} news",
        published_at=_time(data.get("timestamp") or message.get("timestamp")),
        summary=summary,
        url=url if url.startswith(("https://", "http://")) else "",
        category=str(data.get("category") or "")[:64],
        sentiment=normalise_score(raw_score, scale=100),
        raw_sentiment="" if raw_score is None else str(raw_score),
        sentiment_label=str(data.get("sentimentLabel") or "")[:32],
        confidence=abs(c) if (c := normalise_score(data.get("confidence"), scale=100)) is not None else None,
        key_factors=tuple(f for f in _list(data.get("keyFactors")) if isinstance(f, str)),
        source=" / ".join(str(data[k]) for k in ("channel", "guild") if data.get(k))[:200],
        price=_float(data.get("price")),
    )
    # One event per ticker the article is about: each reaches that instrument's watchers.
    events: list[Event] = [News(code=t, **common) for t in tickers]
    price = common["price"]
    if price is not None:
        # The article carries the primary ticker's price at publication: a (news-time) quote.
        events.append(Quote(provider=PROVIDER, code=tickers[0], received_at=received_at, ts=common["published_at"],
                            price=price, change_percent=_float(data.get("priceChange")), volume=_float(data.get("volume"))))
    return events


def parse_message(raw: str | bytes, *, received_at: datetime) -> list[Event | Notice]:
    """Parse one text frame.

    Raises:
        UnsupportedMessage: invalid JSON, an unknown `type`, or a malformed known one.
    """
    message = json_loads(raw)
    if not isinstance(message, dict):
        raise UnsupportedMessage("frame is not a JSON object")
    kind = message.get("type")
    if kind == "news":
        return list(parse_news(message, received_at=received_at))
    if kind == "connected":
        subscription = message.get("subscription") if isinstance(message.get("subscription"), dict) else {}
        return [Notice("connected", {"expires_at": subscription.get("expiresAt"), "active": subscription.get("isActive")})]
    if kind == "error":
        return [Notice("error", {"error": str(message.get("error") or ""), "message": str(message.get("message") or "")})]
    if kind == "pong":  # not documented, but harmless if a server answers our ping
        return []
    raise UnsupportedMessage(f"unknown message type {kind!r}")


def parse_close_reason(reason: str) -> dict[str, Any]:
    """The 1008 close reason is a JSON object (`error`, `message`, maybe `expiresAt`)."""
    try:
        parsed = json_loads(reason)
    except UnsupportedMessage:
        return {"message": reason}
    return parsed if isinstance(parsed, dict) else {"message": reason}
