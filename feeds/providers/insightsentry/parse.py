"""InsightSentry realtime messages -> normalised events. Pure: no I/O, no clock.

Shapes (../shared/notes/providers.md, A1): flat quote updates, the newer quote envelope
`{last_update, total_items, data[]}`, series (bar) updates, and control frames: the bare text
`pong`, `{"server_time": ...}` heartbeats, a `{"message": "Connecting..."}` greeting, and
`{"error": ...}` errors. Any field of a quote but `code` may be null.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from feeds.events import Bar, Event, Quote
from feeds.providers.base import Notice, UnsupportedMessage, finite_float, json_loads

__all__ = ["PROVIDER", "parse_message", "FATAL_ERRORS"]

PROVIDER = "insightsentry"
# Errors after which a quick reconnect only makes things worse: back off for long, report.
FATAL_ERRORS = frozenset({"max_connections_exceeded", "connection_evicted", "invalid_api_key"})
QUOTE_FIELDS = {"last_price": "price", "change": "change", "change_percent": "change_percent", "bid": "bid",
                "ask": "ask", "volume": "volume"}
MAX_DELAY_SECONDS = 86_400  # a longer "delay" is not a delayed quote but a broken field


def _number(value: Any, field: str = "value") -> float | None:
    if value is None or isinstance(value, bool):
        return None
    return finite_float(value, field)


def _unix(value: Any, *, millis: bool = False) -> datetime | None:
    number = _number(value, "time")
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number / 1000 if millis else number, tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:  # outside what a datetime can hold
        raise UnsupportedMessage(f"time out of range: {value!r}") from exc


def _delay(value: Any) -> int:
    """0 real time, 900 delayed 15 minutes, -1 end of day; anything else (NaN included) counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= MAX_DELAY_SECONDS:
        return 0
    return int(value)


def _code(item: dict) -> str:
    code = item.get("code")
    if not isinstance(code, str) or ":" not in code:
        raise UnsupportedMessage(f"quote without an EXCHANGE:SYMBOL code: {code!r}")
    return code


def parse_quote(item: dict, *, received_at: datetime, envelope_time: datetime | None = None) -> Quote:
    ts = _unix(item.get("lp_time")) or envelope_time or received_at
    return Quote(
        provider=PROVIDER, code=_code(item), received_at=received_at, ts=ts,
        delay_seconds=_delay(item.get("delay_seconds")),
        **{ours: _number(item.get(theirs), theirs) for theirs, ours in QUOTE_FIELDS.items()},
    )


def parse_series(message: dict, *, received_at: datetime) -> list[Event]:
    code = _code(message)
    interval = message.get("bar_type")
    if not isinstance(interval, str) or not interval:
        raise UnsupportedMessage("series update without bar_type")
    series = message.get("series")
    if not isinstance(series, list):
        raise UnsupportedMessage("series update without a series list")
    bars: list[Event] = []
    for row in series:
        if not isinstance(row, dict) or any(_number(row.get(k)) is None for k in ("time", "open", "high", "low", "close")):
            raise UnsupportedMessage(f"incomplete bar {row!r}")
        bars.append(Bar(
            provider=PROVIDER, code=code, received_at=received_at, interval=interval, start=_unix(row["time"]),
            open=_number(row["open"]), high=_number(row["high"]), low=_number(row["low"]), close=_number(row["close"]),
            volume=_number(row.get("volume")),
        ))
    return bars


def parse_message(raw: str | bytes, *, received_at: datetime) -> list[Event | Notice]:
    """Parse one text frame.

    Raises:
        UnsupportedMessage: not JSON, or a shape none of the handlers knows.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if raw.strip() == "pong":  # the reply to our text ping: bare text, not JSON
        return []
    message = json_loads(raw)
    if not isinstance(message, dict):
        raise UnsupportedMessage("frame is not a JSON object")
    if "error" in message:
        return [Notice("error", {"error": str(message["error"]), "message": str(message.get("message") or "")})]
    if "server_time" in message or set(message) == {"message"}:
        return []  # heartbeat or greeting
    if "series" in message:
        return list(parse_series(message, received_at=received_at))
    if isinstance(message.get("data"), list):
        envelope_time = _unix(message.get("last_update"), millis=True)
        return [parse_quote(item, received_at=received_at, envelope_time=envelope_time)
                for item in message["data"] if isinstance(item, dict)]
    if "code" in message and "last_price" in message:
        return [parse_quote(message, received_at=received_at)]
    raise UnsupportedMessage(f"unknown message with keys {sorted(message)[:8]}")
