"""Small builders for test data (plain functions: no factory library needed yet)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from dashboard.models import Membership, Role, Team, Watchlist, WatchlistItem
from feeds.models import Instrument


def instrument(symbol: str, **fields) -> Instrument:
    defaults = {"name": f"{symbol} Inc.", "exchange": "NASDAQ", "stocknews_ticker": symbol,
                "insightsentry_code": f"NASDAQ:{symbol}", "stocktwits_symbol": symbol}
    return Instrument.objects.create(symbol=symbol, **{**defaults, **fields})


def user(username: str, password: str = "pw-for-tests-only-123"):
    return get_user_model().objects.create_user(username=username, password=password)


def team_with_watchlist(team_name: str, members: dict, symbols: list[str], watchlist_name: str = "Main") -> Watchlist:
    team = Team.objects.create(name=team_name)
    for member, role in members.items():
        Membership.objects.create(user=member, team=team, role=role or Role.VIEWER)
    watchlist = Watchlist.objects.create(team=team, name=watchlist_name)
    for position, symbol in enumerate(symbols):
        inst = Instrument.objects.filter(symbol=symbol).first() or instrument(symbol)
        WatchlistItem.objects.create(watchlist=watchlist, instrument=inst, position=position)
    return watchlist
