"""Two editors change one watchlist at the same moment: both additions are kept, each at its own
position, and neither editor sees an error.

SQLite hid the race: its writers queue for the database lock at BEGIN, so the second editor always
read the first one's committed item before computing "last position + 1". On PostgreSQL both
transactions read the same last position and stored two instruments at one position, unless the
service locks the watchlist row first (select_for_update), which is what it now does.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from dashboard.models import Role, Watchlist
from dashboard.services import watchlist_add_instrument
from feeds.models import Instrument
from tests.concurrency import LockGate, requires_postgres, start_together
from tests.factories import instrument, team_with_watchlist, user

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def desk():
    alice, bob = user("alice"), user("bob")
    watchlist = team_with_watchlist("Alpha", {alice: Role.OWNER, bob: Role.EDITOR}, ["AAPL", "MSFT"])
    return watchlist, alice, bob, instrument("AMZN"), instrument("GOOGL")


def add_through_the_board(editor, watchlist: Watchlist, added: Instrument):
    client = Client()
    client.force_login(editor)
    return client.post(f"/api/watchlists/{watchlist.pk}/items/", data=json.dumps({"instrument_id": added.pk}),
                       content_type="application/json")


def at_once_inside_the_service(watchlist: Watchlist, *calls):
    """Run the calls together while a test transaction holds the watchlist row: each call blocks
    inside the service (on our lock), so both are mid-edit when the lock goes and they race."""
    with LockGate("SELECT id FROM dashboard_watchlist WHERE id = %s FOR UPDATE", watchlist.pk) as gate:
        running = start_together(*calls)
        gate.wait_for_waiters(len(calls), running)
    return running.results()


def positions(watchlist: Watchlist) -> dict[str, int]:
    return dict(watchlist.items.values_list("instrument__symbol", "position"))


def test_two_editors_adding_at_once_through_the_board_both_keep_their_instrument_at_its_own_position(desk):
    watchlist, alice, bob, amzn, googl = desk
    replies = at_once_inside_the_service(watchlist, lambda: add_through_the_board(alice, watchlist, amzn),
                                         lambda: add_through_the_board(bob, watchlist, googl))
    assert [(reply.status_code, reply.json()) for reply in replies] == [(200, {"ok": True})] * 2
    stored = positions(watchlist)
    assert set(stored) == {"AAPL", "MSFT", "AMZN", "GOOGL"}
    assert len(set(stored.values())) == 4, f"two instruments share a position: {stored}"
    assert {stored["AMZN"], stored["GOOGL"]} == {2, 3}  # after the existing 0 and 1


def test_two_editors_adding_the_same_instrument_at_once_store_it_once(desk):
    watchlist, alice, bob, amzn, _ = desk
    items = at_once_inside_the_service(
        watchlist,
        lambda: watchlist_add_instrument(watchlist=watchlist, instrument=amzn, by=alice),
        lambda: watchlist_add_instrument(watchlist=watchlist, instrument=amzn, by=bob),
    )
    assert items[0].pk == items[1].pk
    assert positions(watchlist) == {"AAPL": 0, "MSFT": 1, "AMZN": 2}
