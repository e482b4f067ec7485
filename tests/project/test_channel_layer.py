"""The Redis channel layer as configured in project/settings.py, on a real Redis.

An idle browser socket waits in channels-redis' blocking read; with redis-py 8's default 5 s
socket timeout that read raised TimeoutError after 5 s and Daphne dropped the browser. These
tests pin the configuration against the locked channels-redis/redis-py pair and hold a receive
idle past every Redis timeout. (tests/e2e/test_production_stack.py does the same through Daphne
with a logged-in browser socket.)
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")

# Long enough for several blocking reads to time out server-side and for a read to pass the
# socket timeout: what broke before.
IDLE_SECONDS = settings.REDIS_CONNECTION["socket_timeout"] + settings.CHANNEL_LAYER_BLOCKING_READ + 1


def test_the_socket_timeout_leaves_room_for_the_blocking_read():
    assert RedisChannelLayer.brpop_timeout == settings.CHANNEL_LAYER_BLOCKING_READ, (
        "channels-redis changed its blocking read: revisit REDIS_CONNECTION in project/settings.py")
    assert settings.REDIS_CONNECTION["socket_timeout"] >= 2 * settings.CHANNEL_LAYER_BLOCKING_READ
    assert settings.REDIS_CONNECTION["health_check_interval"] > 0
    assert settings.REDIS_CONNECTION["socket_keepalive"] is True


def test_the_layer_connects_with_the_configured_options():
    layer = get_channel_layer()
    pool = layer.create_pool(0)
    for option in ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
                   "health_check_interval"):
        assert pool.connection_kwargs[option] == settings.REDIS_CONNECTION[option], option
    assert pool.max_connections == settings.REDIS_CONNECTION["max_connections"]


@pytest.mark.asyncio
@pytest.mark.timeout(IDLE_SECONDS + 30)
async def test_an_idle_receive_outlives_every_redis_timeout_then_gets_its_group_message():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("idle-test", channel)
    try:
        receive = asyncio.create_task(layer.receive(channel))
        done, _ = await asyncio.wait({receive}, timeout=IDLE_SECONDS)
        assert not done, f"the idle receive ended after less than {IDLE_SECONDS} s: {receive.exception()!r}"
        await layer.group_send("idle-test", {"type": "forward.text", "text": "after the quiet"})
        message = await asyncio.wait_for(receive, timeout=10)
        assert message == {"type": "forward.text", "text": "after the quiet"}
    finally:
        await layer.group_discard("idle-test", channel)
