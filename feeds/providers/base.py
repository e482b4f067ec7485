"""What every provider package shares: the parser's error type and non-event notices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["UnsupportedMessage", "Notice"]


class UnsupportedMessage(ValueError):
    """A frame the parser cannot turn into events. The transport logs it with the raw
    payload, counts it, and keeps the connection up."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the provider told us about the link itself (not market data).

    kinds: "connected" (details e.g. subscription expiry), "error" (provider-reported error).
    """

    kind: str
    details: dict[str, Any] = field(default_factory=dict)


def parse_counted(parse, raw, *, status, name: str, **kwargs) -> list | None:
    """Count a received frame and parse it; an unparseable one is counted, logged with its raw
    payload (first 2,000 characters; secrets are masked by the log filter) and skipped: None."""
    import logging

    status.message()
    try:
        return parse(raw, **kwargs)
    except UnsupportedMessage as exc:
        status.parse_error()
        logging.getLogger(f"feeds.providers.{name}").warning("%s: skipped unparseable frame (%s): %.2000r", name, exc, raw)
        return None
