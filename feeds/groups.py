"""Channels group names. Every group name in Tickerwire is built here.

Names use instrument ids (not symbols) so they always fit Channels' charset
(ASCII letters, digits, `-_.`) and length limit, whatever a ticker looks like.
"""

from __future__ import annotations


def instrument_group(instrument_id: int) -> str:
    return f"instrument.{int(instrument_id)}"


def user_group(user_id: int) -> str:
    return f"user.{int(user_id)}"


def audience_group(audience: str) -> str:
    """An alert's audience (e.g. "team-3", TrendSpottr's userid) as a group name."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in audience)[:80]
    return f"audience.{safe}"


def team_audience(team_id: int) -> str:
    """The audience key of a team: sent to providers (TrendSpottr userid) and used for its group."""
    return f"team-{int(team_id)}"


def feed_health_group() -> str:
    """Staff sockets that show the feed health page."""
    return "feeds.health"


def user_audience(user_id: int) -> str:
    """The audience key of one user (personal alert rules)."""
    return f"user-{int(user_id)}"
