"""Each provider's retry-or-stop classifier, pure: how a link ended -> retry (with which floor)
or stop (in which FeedStatus state). The loop that applies them: tests/feeds/transports/test_reconnect.py."""

from __future__ import annotations

import json

import pytest

from feeds.providers.insightsentry import feed as insightsentry
from feeds.providers.stocknews import feed as stocknews
from feeds.providers.stocktwits import feed as stocktwits
from feeds.transports import pusher
from feeds.transports.reconnect import LinkEnded, Retry, Stop

CUT = LinkEnded("ConnectionResetError: reset by peer")
TIMEOUT = LinkEnded("TimeoutError: timed out during opening handshake")


def closed(code: int, reason: str = "") -> LinkEnded:
    return LinkEnded(f"closed {code}: {reason}", close_code=code, reason=reason)


def status(code: int) -> LinkEnded:
    return LinkEnded(f"HTTP {code}", http_status=code)


# -- StockNews.live ------------------------------------------------------------------------------

def test_stocknews_close_1008_stops_as_auth_failed_with_the_providers_words():
    reason = json.dumps({"error": "Invalid token", "message": "Token not found"})
    decision = stocknews.classify(closed(1008, reason))
    assert decision == Stop("auth_failed", error="closed 1008: Invalid token: Token not found")


def test_stocknews_close_1008_with_an_expiry_says_so():
    reason = json.dumps({"error": "Subscription expired", "expiresAt": "2026-01-01T00:00:00Z"})
    assert stocknews.classify(closed(1008, reason)).error.endswith("(expired 2026-01-01T00:00:00Z)")


@pytest.mark.parametrize("ended", [closed(1000), closed(1011, "restart"), closed(1006), CUT, TIMEOUT, status(503)],
                         ids=["1000", "1011", "1006", "cut", "timeout", "503"])
def test_stocknews_everything_else_backs_off(ended):
    assert stocknews.classify(ended) == Retry()


# -- InsightSentry -------------------------------------------------------------------------------

@pytest.mark.parametrize("error", ["max_connections_exceeded", "connection_evicted", "invalid_api_key"])
def test_insightsentry_after_a_fatal_error_holds_off_five_minutes(error):
    assert insightsentry.classify(closed(1008, error), fatal_error=error) == Retry(floor=300.0)


@pytest.mark.parametrize("ended", [closed(1000), closed(1008), CUT, TIMEOUT, status(502)],
                         ids=["1000", "1008", "cut", "timeout", "502"])
def test_insightsentry_without_a_fatal_error_backs_off(ended):
    assert insightsentry.classify(ended) == Retry()
    assert insightsentry.classify(ended, fatal_error="some_other_error") == Retry()


# -- StockTwits Firehose -------------------------------------------------------------------------

@pytest.mark.parametrize("code,state", [(401, "auth_failed"), (406, "refused")])
def test_stocktwits_401_and_406_stop(code, state):
    assert stocktwits.classify(status(code)) == Stop(state)


@pytest.mark.parametrize("ended", [status(503), status(500), status(404), CUT, TIMEOUT,
                                   LinkEnded("stream ended by the server")],
                         ids=["503", "500", "404", "cut", "read-timeout", "ended"])
def test_stocktwits_503_other_statuses_and_cuts_back_off(ended):
    assert stocktwits.classify(ended) == Retry()  # the resume cursor is re-read before reconnecting


# -- Knowsis (Pusher protocol 7) -----------------------------------------------------------------

@pytest.mark.parametrize("code,state", [(4000, "refused"), (4001, "auth_failed"), (4003, "refused"),
                                        (4009, "auth_failed"), (4099, "refused")])
def test_pusher_4000_to_4099_stop(code, state):
    assert pusher.classify(closed(code)) == Stop(state)


@pytest.mark.parametrize("code", [4100, 4150, 4199])
def test_pusher_4100_to_4199_back_off_at_least_a_second_every_time(code):
    assert pusher.classify(closed(code)) == Retry(floor=1.0)


@pytest.mark.parametrize("code", [4200, 4201, 4299])
def test_pusher_4200_to_4299_reconnect_at_once(code):
    assert pusher.classify(closed(code)) == Retry(now=True)


@pytest.mark.parametrize("ended", [closed(1006), closed(4300), CUT, LinkEnded("no frame for 26s: link presumed dead")],
                         ids=["1006", "4300", "cut", "watchdog"])
def test_pusher_other_ends_follow_the_policy_with_a_second_first(ended):
    assert pusher.classify(ended) == Retry(first_floor=1.0)
