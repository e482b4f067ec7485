"""What every provider package shares: the parser's error type and non-event notices."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["UnsupportedMessage", "Notice", "json_loads", "finite_float"]


class UnsupportedMessage(ValueError):
    """A frame the parser cannot turn into events. The transport logs it with the raw
    payload, counts it, and keeps the connection up."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_loads(raw: str | bytes) -> Any:
    """`json.loads` for a frame from the wire: every way it fails is an UnsupportedMessage.

    Besides ValueError (bad syntax, bad UTF-8, an integer past Python's 4,300 digits), nesting a few
    thousand levels deep raises RecursionError, and NaN/Infinity (which json.loads accepts but JSON
    does not have) would travel on to browsers that cannot read them back.
    """
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise UnsupportedMessage(f"invalid JSON: {str(exc)[:200]}") from exc


def finite_float(value: Any, field: str) -> float:
    """A JSON number or numeric string as a finite float. Booleans, 1e400 (inf), 10**400
    (OverflowError) and "nan" are refused: nothing downstream can store or send them sensibly."""
    if isinstance(value, bool):
        raise UnsupportedMessage(f"{field} is a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnsupportedMessage(f"{field} is not a number: {str(value)[:100]!r}") from exc
    if not math.isfinite(number):
        raise UnsupportedMessage(f"{field} is not a finite number: {str(value)[:100]!r}")
    return number


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the provider told us about the link itself (not market data).

    kinds: "connected" (details e.g. subscription expiry), "error" (provider-reported error).
    """

    kind: str
    details: dict[str, Any] = field(default_factory=dict)


def parse_counted(parse, raw, *, status, name: str, **kwargs) -> list | None:
    """Count a received frame and parse it; an unparseable one is counted, logged with its raw
    payload (first 2,000 characters; secrets are masked by the log filter) and skipped: None.
    The log line is rate-limited per provider (feeds/logthrottle.py); the count never is."""
    import logging

    from feeds.logthrottle import throttle_for

    status.message()
    try:
        return parse(raw, **kwargs)
    except UnsupportedMessage as exc:
        status.parse_error()
        throttle_for(f"skipped:{name}").log(logging.getLogger(f"feeds.providers.{name}"), logging.WARNING,
                                            "%s: skipped unparseable frame (%s): %.2000r", name, exc, raw)
        return None
