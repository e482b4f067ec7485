"""StockTwits Firehose sentiment messages -> CrowdPost events. Pure: no I/O, no clock.

Wire reference: ../shared/providers/stocktwits-firehose.md. `seq_id` is an opaque ~56-digit
stream position: it stays a string end to end (a float would round it, and even an int is a
guess about its meaning).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from feeds.events import CrowdPost, utc
from feeds.providers.base import UnsupportedMessage, finite_float, json_loads

__all__ = ["PROVIDER", "parse_message"]

PROVIDER = "stocktwits"


def _text(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnsupportedMessage(f"{field} is not a string or integer: {value!r}")
    return str(value)


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedMessage(f"sentiment_score is not a number: {value!r}")
    return finite_float(value, "sentiment_score")


def parse_message(raw: str, *, received_at: datetime) -> list[CrowdPost]:
    """One firehose message -> one CrowdPost per symbol it mentions.

    Raises:
        UnsupportedMessage: not a JSON object, or missing/invalid required fields.
    """
    message = json_loads(raw)
    if not isinstance(message, dict):
        raise UnsupportedMessage("message is not a JSON object")
    message_id = _text(message.get("message_id"), "message_id")
    seq_id = _text(message.get("seq_id"), "seq_id")
    try:
        created_at = utc(datetime.fromisoformat(str(message.get("created_at")).replace("Z", "+00:00")))
    except (ValueError, OverflowError) as exc:  # Overflow: year 1 or 9999 pushed out of range by its offset
        raise UnsupportedMessage(f"bad created_at {message.get('created_at')!r}") from exc
    symbols = message.get("symbols")
    if not isinstance(symbols, list):
        raise UnsupportedMessage("symbols is not a list")
    score = _score(message.get("sentiment_score"))
    user = message.get("user_id")
    posts = []
    for symbol in symbols:
        if not isinstance(symbol, dict) or not isinstance(symbol.get("symbol"), str) or not symbol["symbol"]:
            raise UnsupportedMessage(f"bad symbol entry {symbol!r}")
        posts.append(CrowdPost(
            provider=PROVIDER, code=symbol["symbol"].upper(), received_at=received_at, external_id=message_id,
            cursor=seq_id, ts=created_at, score=score, user_id="" if user is None else str(user),
            **{key: str(symbol.get(key) or "")[:200] for key in ("title", "exchange", "sector", "industry")},
        ))
    return posts
