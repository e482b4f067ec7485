"""Writes on the people side (`<entity>_<action>`, keyword-only arguments)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction

from feeds.broadcast import publish_audience_notice, publish_revoke
from feeds.groups import team_audience

from feeds.models import Instrument

from .models import AlertAcknowledgement, AlertRule, Membership, Role, Team, Watchlist, WatchlistItem
from .selectors import session_digest

EDIT_ROLES = (Role.OWNER, Role.EDITOR)


def _require_editor(*, user, watchlist: Watchlist) -> None:
    role = Membership.objects.filter(user=user, team_id=watchlist.team_id).values_list("role", flat=True).first()
    if role not in EDIT_ROLES:
        raise PermissionDenied("Only the team's owners and editors change its watchlists.")


def _notify_team(watchlist: Watchlist) -> None:
    notice = {"type": "watchlist_changed", "watchlist": watchlist.pk}
    transaction.on_commit(lambda: async_to_sync(publish_audience_notice)(team_audience(watchlist.team_id), notice))


@transaction.atomic
def watchlist_add_instrument(*, watchlist: Watchlist, instrument: Instrument, by) -> WatchlistItem:
    """Add an instrument (owners and editors only); teammates' open boards resync at once."""
    _require_editor(user=by, watchlist=watchlist)
    # Editors adding at the same moment would both read the same last position: lock the watchlist
    # row first, so they take turns (tests/dashboard/test_services_concurrency.py).
    Watchlist.objects.select_for_update().filter(pk=watchlist.pk).exists()
    position = (watchlist.items.order_by("-position").values_list("position", flat=True).first() or 0) + 1
    item, _ = WatchlistItem.objects.get_or_create(watchlist=watchlist, instrument=instrument,
                                                  defaults={"position": position})
    _notify_team(watchlist)
    return item


@transaction.atomic
def watchlist_remove_instrument(*, watchlist: Watchlist, instrument: Instrument, by) -> None:
    _require_editor(user=by, watchlist=watchlist)
    WatchlistItem.objects.filter(watchlist=watchlist, instrument=instrument).delete()
    _notify_team(watchlist)


# -- access: what a user's open sockets may still receive ----------------------------------------

def user_access_revoke(*, user_id: int, reason: str = "", ended_session_key: str = "") -> None:
    """After the current transaction commits (at once outside one), tell every open socket of the user
    to re-validate its session and re-authorise its groups (dashboard/consumers.py `access_revoke`).

    `reason` is shown on the user's boards. `ended_session_key` names a session that has ended even
    if its row is still there: Django sends `user_logged_out` before it flushes the session. Robust:
    a channel layer outage must not fail a logout or an admin save; the sockets' ping re-check
    (every 25 s) is the fallback for a lost revoke.
    """
    ended = session_digest(session_key=ended_session_key)
    transaction.on_commit(
        lambda: async_to_sync(publish_revoke)(user_id=user_id, reason=reason[:200], ended_session=ended), robust=True)


MEMBERSHIP_CHANGE_REASONS = {
    "added": "Your access changed: you joined {team}.",
    "role": "Your access changed: your role in {team} is now {role}.",
    "removed": "Your access changed: you are no longer a member of {team}.",
}


def membership_change_publish(*, membership: Membership, change: str) -> None:
    """A membership was added, changed role or removed (by any door: these services, the admin and
    its inlines, a cascade, the shell): the member's sockets re-check what they may see."""
    team = Team.objects.filter(pk=membership.team_id).values_list("name", flat=True).first() or "a team"
    reason = MEMBERSHIP_CHANGE_REASONS[change].format(team=team, role=membership.role)
    user_access_revoke(user_id=membership.user_id, reason=reason)


def _require_membership_manager(*, by, team: Team) -> None:
    is_owner = Membership.objects.filter(user=by, team=team, role=Role.OWNER).exists()
    if not (is_owner or by.has_perm("dashboard.change_membership")):
        raise PermissionDenied("Only the team's owners (or an admin) change who is in it.")


@transaction.atomic
def membership_remove(*, team: Team, user, by) -> None:
    """Take `user` out of `team`. Their open sockets leave the team's instrument and alert groups
    within a second of the commit: the Membership receiver (dashboard/receivers.py) publishes the
    revoke through membership_change_publish, as for every other way a membership row goes."""
    _require_membership_manager(by=by, team=team)
    Membership.objects.filter(team=team, user=user).delete()


@transaction.atomic
def membership_role_set(*, team: Team, user, role: str, by) -> Membership:
    """Change a member's role; lowered to viewer, their boards lose the edit controls at once
    (published after commit, as for membership_remove)."""
    role = Role(role)  # ValueError for a role that does not exist
    _require_membership_manager(by=by, team=team)
    membership = Membership.objects.select_for_update().get(team=team, user=user)
    if membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def alert_rule_create(*, by, scope: Watchlist | Instrument, personal: bool, **fields) -> AlertRule:
    """A rule on one of the user's watchlists, or on one instrument of their teams' watchlists.

    Anyone in the team may keep a personal rule; team rules are for owners and editors.
    """
    teams = Membership.objects.filter(user=by).values_list("team_id", flat=True)
    if isinstance(scope, Watchlist):
        watchlist, instrument, team = scope, None, scope.team
    else:
        owner_list = Watchlist.objects.filter(team_id__in=teams, items__instrument=scope).select_related("team").first()
        watchlist, instrument, team = None, scope, owner_list.team if owner_list else None
    role = Membership.objects.filter(user=by, team=team).values_list("role", flat=True).first() if team else None
    if role is None or (not personal and role not in EDIT_ROLES):
        raise PermissionDenied("Team rules are for the team's owners and editors; make it a personal rule.")
    return AlertRule.objects.create(team=team, owner=by if personal else None, watchlist=watchlist,
                                    instrument=instrument, **fields)


def alert_rule_delete(*, by, rule) -> None:
    role = Membership.objects.filter(user=by, team=rule.team).values_list("role", flat=True).first()
    if not (rule.owner_id == by.pk or (rule.owner_id is None and role in EDIT_ROLES)):
        raise PermissionDenied("Only the rule's owner (or, for a team rule, an owner or editor) deletes it.")
    rule.delete()


def alert_acknowledge(*, user, alert) -> None:
    AlertAcknowledgement.objects.get_or_create(user=user, alert=alert)


DEMO_INSTRUMENTS = [
    # symbol, name, exchange, Knowsis websocket_channel (illustrative)
    ("AAPL", "Apple Inc.", "NASDAQ", "apple-inc"),
    ("MSFT", "Microsoft Corporation", "NASDAQ", "microsoft-corp"),
    ("NVDA", "NVIDIA Corporation", "NASDAQ", "nvidia-corp"),
    ("TSLA", "Tesla, Inc.", "NASDAQ", "tesla-inc"),
    ("JPM", "JPMorgan Chase & Co.", "NYSE", "jpmorgan-chase"),
    ("XOM", "Exxon Mobil Corporation", "NYSE", "exxon-mobil"),
    # On no watchlist at first: for editors to add from the board.
    ("AMZN", "Amazon.com, Inc.", "NASDAQ", "amazon-com"),
    ("GOOGL", "Alphabet Inc.", "NASDAQ", "alphabet-inc"),
]
DEMO_TEAMS = {
    "Alpha Desk": {"watchlist": "Tech leaders", "symbols": ["AAPL", "MSFT", "NVDA", "TSLA"],
                   "members": [("alice", Role.OWNER), ("bob", Role.VIEWER)]},
    "Beta Fund": {"watchlist": "Banks & energy", "symbols": ["JPM", "XOM"], "members": [("carol", Role.OWNER)]},
}
DEMO_PASSWORD = "tickerwire-demo"  # demo only: the embedded default prints it


def instrument_upsert(*, symbol: str, name: str, exchange: str, knowsis_channel: str = "") -> Instrument:
    instrument, _ = Instrument.objects.update_or_create(
        symbol=symbol,
        defaults={"name": name, "exchange": exchange, "insightsentry_code": f"{exchange}:{symbol}",
                  "knowsis_channel": knowsis_channel, "stocktwits_symbol": symbol, "stocknews_ticker": symbol},
    )
    return instrument


@transaction.atomic
def demo_seed(*, password: str = DEMO_PASSWORD) -> list[tuple[str, str, str]]:
    """Create (or refresh) the demo teams, users and watchlists. Returns `(user, team, role)` rows."""
    User = get_user_model()
    for symbol, name, exchange, channel in DEMO_INSTRUMENTS:
        instrument_upsert(symbol=symbol, name=name, exchange=exchange, knowsis_channel=channel)
    admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
    admin.set_password(password)
    admin.save()
    logins = [("admin", "(admin site)", "superuser")]
    for team_name, spec in DEMO_TEAMS.items():
        team, _ = Team.objects.get_or_create(name=team_name)
        watchlist, _ = Watchlist.objects.get_or_create(team=team, name=spec["watchlist"])
        for position, symbol in enumerate(spec["symbols"]):
            WatchlistItem.objects.get_or_create(
                watchlist=watchlist, instrument=Instrument.objects.get(symbol=symbol), defaults={"position": position}
            )
        for username, role in spec["members"]:
            member, _ = User.objects.get_or_create(username=username)
            member.set_password(password)
            member.save()
            Membership.objects.update_or_create(user=member, team=team, defaults={"role": role})
            logins.append((username, team_name, role))
    return logins
