"""InsightSentry's realtime subscribe message (../shared/providers/insightsentry-realtime.md):
validation as the real service applies it, for the `insightsentry` simulator. A malformed message
raises ProtocolError, which the simulator answers by dropping the connection. No I/O, no Django.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import marketgen
from .marketgen import Interval

UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
# EXCHANGE:SYMBOL; `!` only ends continuous futures symbols (CME_MINI:ES1!), which our client allows.
CODE_RE = re.compile(r"[A-Z0-9._-]+:[A-Z0-9._-]+!?")
# Spans must stay under a year: the largest length allowed per unit is one less than these.
YEAR_IN_UNITS = {"minute": 525600, "hour": 8760, "day": 365, "week": 52, "month": 12}
_OPTIONAL_SUB_KEYS = {"extended", "dadj", "recent_bars"}  # newer docs' options: accepted, ignored


class ProtocolError(Exception):
    """A message the real service would drop the connection for."""

    def __init__(self, error: str, message: str, close_code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.error, self.message, self.close_code = error, message, close_code


@dataclass(frozen=True)
class Subscription:
    code: str
    type: str  # "quote" | "series"
    interval: Interval | None = None  # series only

    def as_dict(self) -> dict[str, Any]:
        if self.interval is None:
            return {"code": self.code, "type": self.type}
        return {"code": self.code, "type": self.type, "interval_type": self.interval.unit,
                "interval_length": self.interval.length}


def parse_subscribe(message: Any, api_keys: set[str]) -> tuple[str, list[Subscription]]:
    """Validate a subscribe message; return (api_key, subscriptions) or raise ProtocolError."""
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", "Expected a JSON object")
    unknown = set(message) - {"api_key", "subscriptions"}
    if unknown:
        raise ProtocolError("invalid_message", f"Unknown field(s): {', '.join(sorted(unknown))}")
    key = message.get("api_key")
    if not isinstance(key, str) or key not in api_keys:
        raise ProtocolError("invalid_api_key", "Missing or invalid API key")
    subs = message.get("subscriptions")
    if not isinstance(subs, list) or not subs:
        raise ProtocolError("invalid_message", "subscriptions must be a non-empty list")
    return key, list(dict.fromkeys(_parse_subscription(s) for s in subs))  # de-duplicated, in order


def _parse_subscription(sub: Any) -> Subscription:
    def bad(detail: str) -> ProtocolError:
        return ProtocolError("invalid_message", f"Invalid subscription {json.dumps(sub)[:80]}: {detail}")

    if not isinstance(sub, dict):
        raise bad("expected an object")
    # Strict on purpose (the doc's own Python example says `interval`): a typo'd key would
    # silently fall back to 1-minute bars on the real service, so we surface it here instead.
    unknown = set(sub) - {"code", "type", "interval_type", "interval_length", "bar_type", "bar_interval"}
    if unknown - _OPTIONAL_SUB_KEYS:
        raise bad(f"unknown field(s) {sorted(unknown - _OPTIONAL_SUB_KEYS)}")
    code, kind = sub.get("code"), sub.get("type", "series")
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise bad("code must look like EXCHANGE:SYMBOL")
    if kind not in ("quote", "series"):
        raise bad("type must be 'quote' or 'series'")
    old, new = {"interval_type", "interval_length"} & set(sub), {"bar_type", "bar_interval"} & set(sub)
    if old and new:
        raise bad("mixes interval_type/interval_length with bar_type/bar_interval")
    unit = sub.get("bar_type" if new else "interval_type", "minute")
    length = sub.get("bar_interval" if new else "interval_length", 1)
    if unit not in marketgen.UNIT_CODES:
        raise bad(f"interval type must be one of {', '.join(marketgen.UNIT_CODES)}")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise bad("interval length must be a positive integer")
    if unit == "second" and length != 1:
        raise bad("only 1 is allowed for second bars")
    if unit != "second" and length >= YEAR_IN_UNITS[unit]:
        raise bad("bars must span less than a year")
    return Subscription(code, kind, Interval(unit, length) if kind == "series" else None)
