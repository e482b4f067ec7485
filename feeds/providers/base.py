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
