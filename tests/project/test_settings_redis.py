"""Redis settings (project/settings.py, project/redisclient.py): REDIS_URL or REDIS_SENTINELS, never
both; through Sentinel, Channels' own layer and the live path reach the primary; passwords go
where they are needed and never into a target's repr or str (which get logged)."""

from __future__ import annotations

from project.redisclient import RedisTarget, redis_target
from tests.project.test_settings import manage
from tests.redissentinel import SentinelGroup

LAYER_ROUND_TRIP = """
import asyncio
from channels.layers import get_channel_layer
from django.conf import settings
from feeds.hub import live_backend

async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "sentinel.check", "n": 7})
    print("layer", (await layer.receive(channel))["n"])
    await live_backend().ping()
    print("live", live_backend().target)
    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    print("host", host["master_name"], "address" in host)

asyncio.run(main())
"""


def test_redis_url_and_sentinels_together_are_refused():
    result = manage("check", REDIS_URL="redis://127.0.0.1:6379/0", REDIS_SENTINELS="127.0.0.1:26379")
    assert result.returncode != 0 and "set REDIS_URL or REDIS_SENTINELS, not both" in result.stderr


def test_a_sentinel_entry_that_is_not_host_port_is_refused_by_name():
    result = manage("check", REDIS_URL="", REDIS_SENTINELS="127.0.0.1:26379,sentinel-b")
    assert result.returncode != 0 and "REDIS_SENTINELS entry 'sentinel-b' is not host:port" in result.stderr


def test_through_the_sentinels_the_channel_layer_and_the_live_path_reach_the_primary(tmp_path):
    with SentinelGroup(tmp_path) as group:
        result = manage("shell", "-c", LAYER_ROUND_TRIP, REDIS_URL="", REDIS_SENTINELS=group.sentinels_setting,
                        REDIS_SENTINEL_MASTER=group.master, CHANNEL_LAYER_PREFIX="twsentinel-settings")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert "layer 7" in lines  # a message went through the primary the sentinels named (the only writable node)
        assert f"live sentinel master 'mymaster' via {group.sentinels_setting}" in lines
        assert "host mymaster False" in lines  # a sentinel pool (channels_redis.utils.create_pool), no address


def test_passwords_reach_the_connections_and_never_a_targets_repr_or_str():
    target = redis_target(sentinels=["127.0.0.1:26379", "[::1]:26380"], master="desk", password="primary-canary",
                          sentinel_password="sentinel-canary")
    assert target.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    for shown in (repr(target), str(target)):
        assert "canary" not in shown
    client = target.client(socket_timeout=1)  # builds pools only; nothing connects
    assert client.connection_pool.connection_kwargs["password"] == "primary-canary"
    assert {s.connection_pool.connection_kwargs["password"] for s in client._sentinel.sentinels} == {"sentinel-canary"}
    host = target.channel_layer_host({"socket_timeout": 1})
    assert host["password"] == "primary-canary" and host["sentinel_kwargs"]["password"] == "sentinel-canary"
    url = RedisTarget(url="redis://user:url-canary@redis.internal:6380/2")
    assert str(url) == "redis://redis.internal:6380/2" and "canary" not in repr(url)
    assert redis_target() is None and redis_target(url="redis://127.0.0.1:6379/0") == RedisTarget(
        url="redis://127.0.0.1:6379/0")
