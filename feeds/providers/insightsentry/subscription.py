"""Build and validate InsightSentry subscribe messages. Pure.

The provider drops the connection on any invalid message (../shared/providers/insightsentry-
realtime.md: "If you send an invalid message format, you will lose connection"), so every
entry is checked against the documented rules before anything is sent; an invalid instrument
is left out and reported, never put on the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SeriesSettings", "build_subscribe", "validate_entry", "INTERVAL_TYPES"]

CODE = re.compile(r"^[A-Z0-9_.\-]+:[A-Z0-9_.\-!]+$")
# Lengths must stay under a year (the doc); the bound is the unit count in one year.
YEAR_IN_UNITS = {"second": 1, "minute": 525_600, "hour": 8_760, "day": 365, "week": 52, "month": 12}
INTERVAL_TYPES = tuple(YEAR_IN_UNITS)
SPELLINGS = {"interval": ("interval_type", "interval_length"), "bar": ("bar_type", "bar_interval")}


@dataclass(frozen=True)
class SeriesSettings:
    """The account's bar settings: `options` on the InsightSentry ProviderAccount."""

    interval_type: str = "minute"
    interval_length: int = 1
    spelling: str = "interval"  # "interval" (our doc) or "bar" (the newer docs' bar_type/bar_interval)

    @classmethod
    def from_options(cls, options: dict) -> SeriesSettings:
        return cls(
            interval_type=str(options.get("interval_type", "minute")),
            interval_length=int(options.get("interval_length", 1)),
            spelling=str(options.get("field_names", "interval")),
        )


def validate_entry(entry: dict) -> str | None:
    """Why `entry` would be refused by the provider, or None when it is valid."""
    code = entry.get("code")
    if not isinstance(code, str) or not CODE.match(code):
        return f"code {code!r} is not EXCHANGE:SYMBOL"
    kind = entry.get("type", "series")
    if kind not in ("quote", "series"):
        return f"type {kind!r} is not quote or series"
    if kind == "quote":
        return None
    interval_type = entry.get("interval_type", entry.get("bar_type", "minute"))
    length = entry.get("interval_length", entry.get("bar_interval", 1))
    if interval_type not in YEAR_IN_UNITS:
        return f"interval type {interval_type!r} is not one of {', '.join(INTERVAL_TYPES)}"
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        return f"interval length {length!r} is not a positive integer"
    if interval_type == "second" and length != 1:
        return "second bars allow only length 1"
    if interval_type != "second" and length >= YEAR_IN_UNITS[interval_type]:
        return f"{length} {interval_type}s is not under a year"
    return None


def build_subscribe(*, api_key: str, codes: set[str], series: SeriesSettings) -> tuple[dict | None, dict[str, str]]:
    """The one message for every watched code: a quote and a series subscription each.

    Returns:
        `(message or None when nothing valid is left, {invalid code: reason})`.
    """
    type_field, length_field = SPELLINGS.get(series.spelling, SPELLINGS["interval"])
    entries: list[dict] = []
    invalid: dict[str, str] = {}
    for code in sorted(codes):
        candidates = [
            {"code": code, "type": "quote"},
            {"code": code, "type": "series", type_field: series.interval_type, length_field: series.interval_length},
        ]
        reasons = [r for r in map(validate_entry, candidates) if r]
        if reasons:
            invalid[code] = reasons[0]
        else:
            entries.extend(candidates)
    if not entries:
        return None, invalid  # the provider refuses an empty list: send nothing
    return {"api_key": api_key, "subscriptions": entries}, invalid

