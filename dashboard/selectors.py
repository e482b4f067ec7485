"""Reads on the people side: who may see what. Consumers and views authorise only through these."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from feeds.groups import team_audience
from feeds.selectors import alert_messages_for, market_snapshot_for_instruments

from .models import Membership, Watchlist, WatchlistItem


def team_ids_for_user(*, user: AbstractBaseUser | AnonymousUser) -> set[int]:
    if not user.is_authenticated or not user.is_active:
        return set()
    return set(Membership.objects.filter(user=user).values_list("team_id", flat=True))


def audiences_for_user(*, user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """The alert audiences (one per team) whose alerts this user may see."""
    return {team_audience(team_id) for team_id in team_ids_for_user(user=user)}


def watchlist_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[Watchlist]:
    teams = team_ids_for_user(user=user)
    return list(Watchlist.objects.filter(team_id__in=teams).select_related("team").prefetch_related("items__instrument"))


def watch_request_authorise(*, user: AbstractBaseUser | AnonymousUser, watchlist_ids: set[int]) -> tuple[set[int], set[int]]:
    """Split requested watchlist ids into `(allowed_instrument_ids, refused_watchlist_ids)`.

    Every id is checked against the user's current memberships; an id that does not exist
    is refused exactly like one of another team, so the answer leaks nothing.
    """
    teams = team_ids_for_user(user=user)
    visible = set(Watchlist.objects.filter(id__in=watchlist_ids, team_id__in=teams).values_list("id", flat=True))
    instruments = set(WatchlistItem.objects.filter(watchlist_id__in=visible).values_list("instrument_id", flat=True))
    return instruments, set(watchlist_ids) - visible


def instrument_ids_watched() -> set[int]:
    """Every instrument on any watchlist: what the feed workers subscribe to."""
    return set(WatchlistItem.objects.values_list("instrument_id", flat=True).distinct())


def board_snapshot_for_user(*, user: AbstractBaseUser) -> dict:
    """The board's initial state: the user's watchlists with each instrument's latest values."""
    watchlists = watchlist_list_for_user(user=user)
    roles = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
    instrument_ids = {item.instrument_id for wl in watchlists for item in wl.items.all()}
    market = market_snapshot_for_instruments(instrument_ids=instrument_ids)
    return {
        "alerts": alert_messages_for(instrument_ids=instrument_ids, audiences=audiences_for_user(user=user)),
        "watchlists": [
            {
                "id": wl.id,
                "name": wl.name,
                "team": {"id": wl.team_id, "name": wl.team.name},
                "role": roles.get(wl.team_id, ""),
                "instruments": [
                    {
                        "id": item.instrument.id,
                        "symbol": item.instrument.symbol,
                        "name": item.instrument.name,
                        "exchange": item.instrument.exchange,
                        **market[item.instrument.id],
                    }
                    for item in wl.items.all()
                ],
            }
            for wl in watchlists
        ]
    }
