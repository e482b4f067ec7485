"""Reads on the people side: who may see what. Consumers and views authorise only through these."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Prefetch

from feeds.groups import team_audience, user_audience
from feeds.selectors import BOARD_ALERT_KEYS, alert_messages_for, instrument_detail, market_snapshot_for_instruments

from .models import Membership, Watchlist, WatchlistItem
from .rawsql import sql


def team_roles_for_user(*, user: AbstractBaseUser | AnonymousUser) -> dict[int, str]:
    """{team id: the user's role in it}, for an active user; empty otherwise."""
    if not user.is_authenticated or not user.is_active:
        return {}
    return dict(Membership.objects.filter(user=user).values_list("team_id", "role"))


def team_ids_for_user(*, user: AbstractBaseUser | AnonymousUser) -> set[int]:
    return set(team_roles_for_user(user=user))


def _audiences(*, user: AbstractBaseUser | AnonymousUser, team_ids: Iterable[int]) -> set[str]:
    if not user.is_authenticated:
        return set()
    return {team_audience(team_id) for team_id in team_ids} | {user_audience(user.pk)}


def audiences_for_user(*, user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """The alert audiences whose alerts this user may see: one per team, and their own."""
    return _audiences(user=user, team_ids=team_ids_for_user(user=user))


def watchlist_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[Watchlist]:
    """The user's teams' watchlists with their teams, items and instruments: three queries."""
    items = WatchlistItem.objects.select_related("instrument")
    return list(Watchlist.objects.filter(team_id__in=team_ids_for_user(user=user)).select_related("team")
                .prefetch_related(Prefetch("items", queryset=items)))


# -- the browser socket's reads (dashboard/consumers.py) --------------------------------------------
# Plain SQL, not the ORM: each runs once per socket opened and per watch request, 1000 sockets
# reconnect at once after a restart, and building and compiling a query cost 150-450 µs of
# Python on the 2-core test machine against 10-20 µs to run it (issue 11; measured with bench/fanout.py).
# Table and column names come from the models (dashboard/rawsql.py).


def _team_ids(user_id: int, cursor) -> set[int]:
    """The teams of an active user (none for an inactive one), now."""
    cursor.execute(sql("SELECT {membership__team} FROM {membership} INNER JOIN {user} ON {user__pk} = {membership__user}"
                        " WHERE {membership__user} = %s AND {user__is_active} = %s"), [user_id, True])
    return {team for (team,) in cursor.fetchall()}


def watch_request_authorise(
    *, user_id: int, watchlist_ids: set[int], instrument_ids: set[int] = frozenset()
) -> tuple[set[int], set[int], set[int]]:
    """Authorise a watch request: `(allowed_instrument_ids, refused_watchlists, refused_instruments)`.

    Watchlists must belong to the user's teams; single instruments (the instrument page) must be
    on one of those teams' watchlists. Every id is checked against the user's memberships as they
    are now, and an inactive user has none; an id that does not exist is refused exactly like one
    of another team. Two queries (three with single instruments).
    """
    from django.db import connection

    visible, instruments, singles = set(), set(), set()
    with connection.cursor() as cursor:
        teams = _team_ids(user_id, cursor)
        if teams and watchlist_ids:
            # An empty watchlist is one row with a NULL instrument (the outer join): visible, nothing to watch.
            cursor.execute(sql(
                "SELECT {watchlist__pk}, {item__instrument} FROM {watchlist} LEFT OUTER JOIN {item}"
                " ON {item__watchlist} = {watchlist__pk} WHERE {watchlist__pk} IN ({lists}) AND {watchlist__team} IN ({teams})",
                lists=len(watchlist_ids), teams=len(teams)), [*watchlist_ids, *teams])
            for watchlist, instrument in cursor.fetchall():
                visible.add(watchlist)
                if instrument is not None:
                    instruments.add(instrument)
        if teams and instrument_ids:
            cursor.execute(sql(
                "SELECT DISTINCT {item__instrument} FROM {item} INNER JOIN {watchlist} ON {watchlist__pk} = {item__watchlist}"
                " WHERE {item__instrument} IN ({singles}) AND {watchlist__team} IN ({teams})",
                singles=len(instrument_ids), teams=len(teams)), [*instrument_ids, *teams])
            singles = {instrument for (instrument,) in cursor.fetchall()}
    return instruments | singles, set(watchlist_ids) - visible, set(instrument_ids) - singles


def instrument_get_for_user(*, user: AbstractBaseUser | AnonymousUser, instrument_id: int):
    """The instrument if it is on one of the user's teams' watchlists, else None."""
    from feeds.models import Instrument

    teams = team_ids_for_user(user=user)
    return Instrument.objects.filter(pk=instrument_id, watchlist_items__watchlist__team_id__in=teams).first()


def instrument_detail_for_user(*, user: AbstractBaseUser | AnonymousUser, instrument_id: int) -> dict | None:
    """What the instrument page draws, for this user (None: not on their teams' watchlists, or no
    such instrument). Its alert timeline holds the instrument's provider-wide alerts and those for
    the user's teams and the user, never another team's or user's. Seven queries: the memberships
    (read once, for both the authorisation and the audiences), the instrument, and
    feeds.selectors.instrument_detail's five."""
    from feeds.models import Instrument

    teams = team_ids_for_user(user=user)
    instrument = (Instrument.objects.filter(pk=instrument_id, watchlist_items__watchlist__team_id__in=teams)
                  .values("pk", "symbol", "name").first())
    if instrument is None:
        return None
    detail = instrument_detail(instrument_id=instrument["pk"], audiences=_audiences(user=user, team_ids=teams))
    return {"instrument": {"id": instrument["pk"], "symbol": instrument["symbol"], "name": instrument["name"]}, **detail}


def instrument_history_for_user(*, user: AbstractBaseUser | AnonymousUser, instrument_id: int, interval: str,
                                before, limit: int) -> dict | None:
    """A page of the instrument's stored history (feeds.history.history_page) for this user, with
    the same authorisation and alert audiences as the instrument page; None when refused. Seven
    queries: the memberships, the instrument, and the page's five."""
    from feeds.history import history_page
    from feeds.models import Instrument

    teams = team_ids_for_user(user=user)
    instrument = (Instrument.objects.filter(pk=instrument_id, watchlist_items__watchlist__team_id__in=teams)
                  .values("pk", "symbol").first())
    if instrument is None:
        return None
    page = history_page(instrument_id=instrument["pk"], interval=interval, before=before, limit=limit,
                        audiences=_audiences(user=user, team_ids=teams))
    return {"instrument": {"id": instrument["pk"], "symbol": instrument["symbol"]}, **page}


def instrument_ids_visible_to_user(*, user: AbstractBaseUser | AnonymousUser) -> set[int]:
    teams = team_ids_for_user(user=user)
    return set(WatchlistItem.objects.filter(watchlist__team_id__in=teams).values_list("instrument_id", flat=True))


def instrument_ids_watched() -> set[int]:
    """Every instrument on any watchlist: what the feed workers subscribe to."""
    return set(WatchlistItem.objects.values_list("instrument_id", flat=True).distinct())


BOARD_INSTRUMENT_KEYS = ("id", "symbol", "name", "exchange")


def board_snapshot_for_user(*, user: AbstractBaseUser) -> dict:
    """The board's initial state: the user's watchlists with each instrument's latest values, and
    the alerts panel. Only what static/dashboard/js/board.js, watchlist-edit.js and alerts.js read
    (and feeds.selectors.BOARD_*_KEYS). Nine queries whatever the number of instruments: the
    memberships, the watchlists, their items with instruments, the market (five: see
    market_snapshot_for_instruments), the alerts. Rows, not model instances: a board of 50
    instruments would spend more time building those than in the queries."""
    roles = team_roles_for_user(user=user)
    watchlists = list(Watchlist.objects.filter(team_id__in=roles).values("id", "name", "team_id", "team__name"))
    items: dict[int, list[dict]] = {wl["id"]: [] for wl in watchlists}
    for watchlist_id, *instrument in (WatchlistItem.objects.filter(watchlist_id__in=items).values_list(
            "watchlist_id", "instrument_id", "instrument__symbol", "instrument__name", "instrument__exchange")):
        items[watchlist_id].append(dict(zip(BOARD_INSTRUMENT_KEYS, instrument)))
    instrument_ids = {instrument["id"] for listed in items.values() for instrument in listed}
    market = market_snapshot_for_instruments(instrument_ids=instrument_ids)
    alerts = alert_messages_for(instrument_ids=instrument_ids, audiences=_audiences(user=user, team_ids=roles))
    return {
        "alerts": [{key: alert[key] for key in BOARD_ALERT_KEYS} for alert in alerts],
        "watchlists": [
            {
                "id": wl["id"],
                "name": wl["name"],
                "team": {"name": wl["team__name"]},
                "role": roles.get(wl["team_id"], ""),
                "instruments": [{**instrument, **market[instrument["id"]]} for instrument in items[wl["id"]]],
            }
            for wl in watchlists
        ]
    }


def session_digest(*, session_key: str) -> str:
    """A session key as it may travel on the channel layer: hashed, never the key itself."""
    return hashlib.sha256(session_key.encode()).hexdigest() if session_key else ""


def session_user_get(*, session_key: str | None, user_id: int | None = None):
    """Validate, now, a socket's session: `(user, "")` while it logs a user in (`user_id`, when
    given: the one the socket was opened for), else `(None, why)`, why being "signed_out",
    "deactivated" or "password_changed". Two queries: the session row and the user.

    The checks are django.contrib.auth.get_user's, done against a fresh load of the session row:
    the session exists, is not expired and names a user and an allowed backend, the user exists and
    is active, and the session's auth hash still matches the password (HASH_SESSION_KEY, with
    SECRET_KEY_FALLBACKS' hashes as get_user accepts them; a password change ends every other
    session). Unlike get_user it neither flushes nor rotates the session: it only reads.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
    from django.utils.crypto import constant_time_compare

    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load() if session_key else {}
    named, backend = data.get(SESSION_KEY), data.get(BACKEND_SESSION_KEY)
    if named is None or (user_id is not None and str(named) != str(user_id)) \
            or backend not in settings.AUTHENTICATION_BACKENDS:
        return None, "signed_out"  # logged out, expired, flushed, or another user's session now
    try:
        pk = get_user_model()._meta.pk.to_python(named)
    except ValidationError:
        return None, "signed_out"
    user = load_backend(backend).get_user(pk)  # the backend's own rules (ModelBackend: exists and is active)
    if user is None or not getattr(user, "is_active", True):
        return None, "deactivated"
    stored = data.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not (stored and any(constant_time_compare(stored, h) for h in hashes)):
        return None, "password_changed"
    return user, ""


def socket_access_get(*, session_key: str | None, user_id: int | None = None, audiences: bool = True) -> tuple:
    """What a browser socket may receive, decided at once: `(user_id, is_staff, audiences, "")`
    while its session logs a user in (session_user_get's checks), else `(None, False, set(), why)`.
    Three queries in one call, so re-checking a socket on a revoke or a ping costs one trip to the
    database thread, and the socket keeps plain values rather than the user's model instance.
    `audiences=False` (opening a socket, before it joined its user's group) skips the teams."""
    user, why = session_user_get(session_key=session_key, user_id=user_id)
    if user is None:
        return None, False, set(), why
    return user.pk, user.is_staff, socket_audiences_get(user_id=user.pk) if audiences else set(), ""


def socket_audiences_get(*, user_id: int) -> set[str]:
    """The alert audiences of a user the socket has just authenticated: their own, and their teams'
    as they are now (none once inactive). One query."""
    from django.db import connection

    with connection.cursor() as cursor:
        teams = _team_ids(user_id, cursor)
    return {team_audience(team) for team in teams} | {user_audience(user_id)}


def instrument_search(*, query: str, limit: int = 20) -> list[dict]:
    """Instruments whose symbol, name or a word of the name starts with `query`, in any case: the
    exact symbol first, then symbols, then names that start with it, then the other name matches;
    each group by symbol. One query.

    Prefixes rather than "contains" so that every condition can use an index on PostgreSQL (feeds
    migration 0010): symbol and name as `UPPER(x) COLLATE "C" LIKE 'Q%'` (in the C collation a
    btree serves a prefix, whatever the database's own collation), name words through a `simple`
    full-text vector ("chase" finds JPMorgan Chase & Co.). SQLite has no such indexes and scans; a
    name word there is one after a space. One letter matches symbols and names that start with it,
    not every name with a word that does (a third of the table, and no help in choosing).
    bench/search.py times both databases at 10,000 instruments.
    """
    import re

    from django.contrib.postgres.search import SearchQuery, SearchVector
    from django.db import connection
    from django.db.models import Case, Q, Value, When
    from django.db.models.functions import Collate, Upper

    from feeds.models import Instrument

    typed = " ".join(query.split())[:40]
    text = typed.upper()
    if not text:
        return []
    if connection.vendor == "postgresql":  # the expressions migration 0010 indexed
        rows = Instrument.objects.alias(usymbol=Collate(Upper("symbol"), "C"), uname=Collate(Upper("name"), "C"))
        symbol, name, needle = "usymbol", "uname", text
    else:  # SQLite's LIKE ignores ASCII case by itself (only that: "é" is not "É"), so no UPPER() per row
        rows, symbol, name, needle = Instrument.objects.all(), "symbol", "name", typed
    conditions = Q(**{f"{symbol}__startswith": needle}) | Q(**{f"{name}__startswith": needle})
    # Only letters and digits reach the raw tsquery, so a query cannot smuggle in its operators.
    words = re.findall(r"[a-z0-9]+", text.lower())
    postgres = connection.vendor == "postgresql"
    if len(text) > 1 and words and postgres:
        rows = rows.alias(name_words=SearchVector("name", config="simple"))
        prefixes = " & ".join(f"{word}:*" for word in words)
        conditions |= Q(name_words=SearchQuery(prefixes, config="simple", search_type="raw"))
    elif len(text) > 1 and not postgres:
        conditions |= Q(**{f"{name}__contains": " " + needle})
    rank = Case(When(**{symbol: text}, then=Value(0)), When(**{f"{symbol}__startswith": needle}, then=Value(1)),
                When(**{f"{name}__startswith": needle}, then=Value(2)), default=Value(3))
    rows = rows.filter(conditions).alias(rank=rank).order_by("rank", "symbol")[:limit]
    return [{"id": i.pk, "symbol": i.symbol, "name": i.name, "exchange": i.exchange} for i in rows]


def watchlist_get_for_user(*, user: AbstractBaseUser | AnonymousUser, watchlist_id: int) -> Watchlist | None:
    return Watchlist.objects.filter(pk=watchlist_id, team_id__in=team_ids_for_user(user=user)).first()


def alert_inbox_for_user(*, user: AbstractBaseUser, limit: int = 200) -> dict:
    """Every alert for the user's teams (their instruments' alerts and the teams' own), newest first,
    each with whether this user acknowledged it; plus the watchlist ids the page watches live."""
    from .models import AlertAcknowledgement

    teams = team_ids_for_user(user=user)
    instrument_ids = WatchlistItem.objects.filter(watchlist__team_id__in=teams).values_list("instrument_id", flat=True)
    alerts = alert_messages_for(instrument_ids=instrument_ids, audiences=_audiences(user=user, team_ids=teams), limit=limit)
    acked = set(AlertAcknowledgement.objects.filter(user=user).values_list("alert__provider", "alert__external_id"))
    for alert in alerts:
        alert["acknowledged"] = (alert["provider"], alert["external_id"]) in acked
    lists = list(Watchlist.objects.filter(team_id__in=teams).values_list("id", flat=True))
    return {"alerts": alerts, "watchlists": lists}


def alert_get_for_user(*, user: AbstractBaseUser, provider: str, external_id: str):
    """The alert if this user may see it (its instrument is on their teams' watchlists, or it is
    addressed to one of their teams), else None."""
    from django.db.models import Q

    from feeds.models import Alert

    return Alert.objects.filter(
        Q(instrument_id__in=instrument_ids_visible_to_user(user=user), audience="")
        | Q(audience__in=audiences_for_user(user=user)),
        provider=provider, external_id=external_id,
    ).first()
