"""The live path's Redis connections as configured in project/settings.py, on a real Redis.

Browser sockets no longer wait in channels-redis' blocking reads (CHANNEL_LAYERS is used by nothing
now): each server process holds one pub/sub subscription (feeds/hub.py, feeds/livestore.py) that
idles between events, through REDIS_CONNECTION's health checks and keepalive and the
subscription's own periodic PING. A subscription that broke while idle would close every socket
of the process. These tests pin the subscription's options and hold it idle past every one of
those timeouts, then publish. (tests/e2e/test_production_stack.py does the same through Daphne
with a logged-in browser socket.)
"""

from __future__ import annotations

import inspect
from datetime import datetime, timezone

import pytest
from django.conf import settings

from feeds import events as ev
from feeds.broadcast import publish_events
from feeds.groups import instrument_group
from feeds.hub import live_backend
from feeds.livestore import RedisSubscription
from tests.live import listening
from tests.scrape import delta, scrape

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")

PING_EVERY = inspect.signature(RedisSubscription.run).parameters["ping_every"].default
# Past the socket timeout, the health-check interval and the subscription's PING: what would
# break an idle subscription shows within this.
IDLE_SECONDS = max(settings.REDIS_CONNECTION["socket_timeout"], settings.REDIS_CONNECTION["health_check_interval"],
                   PING_EVERY) + 2
T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)


@pytest.mark.asyncio
async def test_the_subscription_connects_with_the_configured_options_and_no_read_timeout():
    subscription = live_backend().subscription(lambda stream, payload: None)
    try:
        options = subscription._client.connection_pool.connection_kwargs
        for option in ("socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
                       "health_check_interval"):
            assert options[option] == settings.REDIS_CONNECTION[option], option
        assert options["socket_keepalive"] is True and options["health_check_interval"] > 0
        assert options["socket_timeout"] is None  # it idles between events: only keepalive and PINGs judge it
    finally:
        await subscription.close()


@pytest.mark.asyncio
@pytest.mark.timeout(IDLE_SECONDS + 30)
async def test_an_idle_subscription_outlives_every_redis_timeout_then_gets_the_next_event():
    stream = instrument_group(990_001)
    before = scrape()
    async with listening(stream) as inbox:
        await inbox.nothing(IDLE_SECONDS)  # no frame, and no lost subscription (tests/live.py's LOST)
        quiet = ev.News(provider="stocknews", code="AAPL", received_at=T, instrument_id=990_001, symbol="AAPL",
                        external_id="after-the-quiet", headline="after the quiet", published_at=T)
        assert await publish_events([quiet]) == 1
        frame = await inbox.next(timeout=10)
    assert frame["stream"] == stream and frame["event"] == quiet.to_message()
    assert delta(before, scrape(), "tickerwire_live_subscription_lost_total") == 0
