"""Watchlist edits: owners and editors only; every change tells the team to resync."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from dashboard.services import watchlist_add_instrument, watchlist_remove_instrument
from feeds.groups import audience_group, team_audience
from tests.factories import instrument, team_with_watchlist, user
from tests.live import listening_in_thread

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_editor_adds_and_removes_and_the_team_is_told():
    editor, viewer = user("ed"), user("vi")
    watchlist = team_with_watchlist("Alpha", {editor: "editor", viewer: "viewer"}, ["AAPL"])
    amzn = instrument("AMZN")
    with listening_in_thread(audience_group(team_audience(watchlist.team_id))) as inbox:
        watchlist_add_instrument(watchlist=watchlist, instrument=amzn, by=editor)
        assert list(watchlist.items.values_list("instrument__symbol", flat=True)) == ["AAPL", "AMZN"]
        assert inbox.next() == {"type": "watchlist_changed", "watchlist": watchlist.pk}
        watchlist_remove_instrument(watchlist=watchlist, instrument=amzn, by=editor)
        assert watchlist.items.count() == 1
        assert inbox.next() == {"type": "watchlist_changed", "watchlist": watchlist.pk}


def test_a_viewer_and_a_stranger_are_refused():
    viewer, stranger = user("vi"), user("st")
    watchlist = team_with_watchlist("Alpha", {viewer: "viewer"}, ["AAPL"])
    amzn = instrument("AMZN")
    for who in (viewer, stranger):
        with pytest.raises(PermissionDenied):
            watchlist_add_instrument(watchlist=watchlist, instrument=amzn, by=who)
        with pytest.raises(PermissionDenied):
            watchlist_remove_instrument(watchlist=watchlist, instrument=watchlist.instruments.get(), by=who)
    assert watchlist.items.count() == 1
