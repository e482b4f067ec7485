"""The Knowsis (Pusher protocol 7) simulator over real loopback sockets, with the `websockets`
client and with pysher, plus pure tests of `knowsisgen`.

No sleeps for synchronisation: every wait is on a condition (a received frame, a closed
socket, `sim.wait_for(...)`, a queue read on pysher's thread) bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import queue
import random
import re
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from feeds.simulators import knowsisgen, newsgen
from feeds.simulators.knowsis import KnowsisSimulator, build_from_options, sign

KEY, SECRET = "app-key-1", "app-secret-1"
CONTROL = "ctl-secret"
TIMEOUT = 5.0
CHANNEL = "apple-inc"
OTHER = "tesla-inc"
PRIVATE = "private-apple-inc"
HEX24 = re.compile(r"[0-9a-f]{24}")
NAIVE_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[KnowsisSimulator]:
    # No automatic events: every frame a test sees is one it caused.
    async with KnowsisSimulator(KEY, SECRET, news_interval=None, control_token=CONTROL, seed=7,
                                activity_timeout=30) as simulator:
        yield simulator


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def close_of(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Drain frames until the socket closes (an undrained stream would stall the close)."""
    async with asyncio.timeout(TIMEOUT):
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


async def open_client(sim: KnowsisSimulator, **kwargs: Any) -> tuple[ClientConnection, str]:
    """Connect, consume connection_established, return the socket and its socket_id."""
    ws = await connect(sim.url(), open_timeout=TIMEOUT, close_timeout=1, **kwargs)
    established = await recv_json(ws)
    assert established["event"] == "pusher:connection_established"
    return ws, json.loads(established["data"])["socket_id"]


async def connect_later(url: str) -> ClientConnection:
    """`connect()` as a coroutine, for a handshake that runs in a task while the test goes on."""
    return await connect(url, open_timeout=TIMEOUT, close_timeout=1)


def auth_for(socket_id: str, channel: str, key: str = KEY, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{key}:{digest}"


async def subscribe(ws: ClientConnection, channel: str, auth: str | None = None) -> dict[str, Any]:
    data = {"channel": channel} if auth is None else {"channel": channel, "auth": auth}
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
    return await recv_json(ws)


def succeeded(channel: str) -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


# -- connection basics --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_connection_established_is_double_encoded_with_unique_socket_ids(sim: KnowsisSimulator) -> None:
    assert sim.url() == f"ws://127.0.0.1:{sim.port}/app/{KEY}?protocol=7&client=sim&version=1"
    first = await connect(sim.url(), open_timeout=TIMEOUT)
    second = await connect(sim.url(), open_timeout=TIMEOUT)
    messages = [await recv_json(first), await recv_json(second)]
    ids = []
    for message in messages:
        assert set(message) == {"event", "data"} and message["event"] == "pusher:connection_established"
        assert isinstance(message["data"], str)  # JSON inside a string, as Pusher sends it
        data = json.loads(message["data"])
        assert set(data) == {"socket_id", "activity_timeout"} and data["activity_timeout"] == 30
        assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
        ids.append(data["socket_id"])
    assert ids[0] != ids[1] and sim.socket_ids == {1: ids[0], 2: ids[1]}
    await sim.wait_for(lambda: sim.open_connections == 2)
    assert sim.connection_attempts == 2
    await first.close()
    await second.close()
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_unknown_key_is_accepted_then_closed_4001(sim: KnowsisSimulator) -> None:
    ws = await connect(sim.url("nope"), open_timeout=TIMEOUT)
    code, reason = await close_of(ws)
    assert code == 4001 and reason is not None and "App key nope not in this cluster" in reason
    assert sim.open_connections == 0 and sim.connection_attempts == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("query, expected", [("protocol=4", 4007), ("protocol=8", 4007),
                                             ("protocol=x", 4007), ("client=js", 4008)])
async def test_bad_protocol_versions_are_closed(sim: KnowsisSimulator, query: str, expected: int) -> None:
    ws = await connect(f"ws://127.0.0.1:{sim.port}/app/{KEY}?{query}", open_timeout=TIMEOUT)
    assert (await close_of(ws))[0] == expected


@pytest.mark.asyncio
async def test_protocol_6_as_pysher_sends_it_is_accepted(sim: KnowsisSimulator) -> None:
    url = f"ws://127.0.0.1:{sim.port}/app/{KEY}?client=Pysher&version=1.0.7&protocol=6"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        assert (await recv_json(ws))["event"] == "pusher:connection_established"


@pytest.mark.asyncio
async def test_the_protocol_each_client_asks_for_is_recorded(sim: KnowsisSimulator) -> None:
    for query in ("protocol=7", "client=Pysher&version=1.0.7&protocol=6", "client=js"):
        async with connect(f"ws://127.0.0.1:{sim.port}/app/{KEY}?{query}", open_timeout=TIMEOUT) as ws:
            await ws.wait_closed() if query == "client=js" else await recv_json(ws)
    assert sim.protocols == ["7", "6", ""]


@pytest.mark.asyncio
async def test_unknown_path_is_404(sim: KnowsisSimulator) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(f"http://127.0.0.1:{sim.port}/ws")).status_code == 404


@pytest.mark.asyncio
async def test_pusher_ping_gets_pong(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)
    await ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
    assert await recv_json(ws) == {"event": "pusher:pong", "data": "{}"}
    assert sim.received == [(1, {"event": "pusher:ping", "data": {}})]
    await ws.close()


# -- subscriptions ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_public_subscribe_and_unsubscribe(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)
    assert await subscribe(ws, CHANNEL) == succeeded(CHANNEL)
    assert sim.subscriptions_of(1) == {CHANNEL} and sim.subscribed(CHANNEL) == 1
    await ws.send(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": CHANNEL}}))
    await sim.wait_for(lambda: sim.subscribed(CHANNEL) == 0)
    sim.emit(CHANNEL, "datapoint")
    await ws.send(json.dumps({"event": "pusher:ping"}))
    assert (await recv_json(ws))["event"] == "pusher:pong"  # the datapoint would have come first
    await ws.close()
    await sim.wait_for(lambda: sim.open_connections == 0)
    assert sim.subscriptions_of(1) == set()


@pytest.mark.asyncio
async def test_private_subscribe_with_a_valid_signature(sim: KnowsisSimulator) -> None:
    ws, socket_id = await open_client(sim)
    auth = auth_for(socket_id, PRIVATE)
    assert auth == f"{KEY}:{sign(SECRET, f'{socket_id}:{PRIVATE}')}"
    assert await subscribe(ws, PRIVATE, auth) == succeeded(PRIVATE)
    assert sim.subscribed(PRIVATE) == 1
    payload = sim.emit(PRIVATE, "datapoint")
    message = await recv_json(ws)
    assert message["channel"] == PRIVATE and json.loads(message["data"]) == payload
    await ws.close()


def test_signature_matches_the_pusher_server_library() -> None:
    pusher = pytest.importorskip("pusher")  # not in requirements: a cross-check when available
    client = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    assert client.authenticate(channel=PRIVATE, socket_id="1234.5678") == {"auth": auth_for("1234.5678", PRIVATE)}


def test_signature_matches_the_documented_example() -> None:
    # pusher/docs auth-signatures worked example (notes §3).
    digest = sign("7ad3773142a6692b25b8", "1234.1234:private-foobar")
    assert digest.startswith("58df8b0c") and digest.endswith("51c3a4")


@pytest.mark.asyncio
@pytest.mark.parametrize("auth", [None, "wrong", f"{KEY}:{'0' * 64}", "other-key:{sig}", "{key}:{sig}x"])
async def test_bad_signature_is_rejected_with_a_null_code_error(sim: KnowsisSimulator, auth: str | None) -> None:
    ws, socket_id = await open_client(sim)
    if auth is not None:
        auth = auth.format(key=KEY, sig=sign(SECRET, f"{socket_id}:{PRIVATE}"))
    error = await subscribe(ws, PRIVATE, auth)
    assert error["event"] == "pusher:error" and isinstance(error["data"], dict)  # an object, not a string
    assert error["data"]["code"] is None
    expected = f"Invalid signature: Expected HMAC SHA256 hex digest of {socket_id}:{PRIVATE}"
    assert error["data"]["message"].startswith(expected)
    assert sim.subscribed(PRIVATE) == 0 and sim.open_connections == 1  # not subscribed, not closed
    assert await subscribe(ws, CHANNEL) == succeeded(CHANNEL)
    sim.emit(PRIVATE, "datapoint")
    sentinel = sim.emit(CHANNEL, "top_content")
    message = await recv_json(ws)  # the private event would have come first
    assert message["channel"] == CHANNEL and json.loads(message["data"]) == sentinel == {}
    await ws.close()


@pytest.mark.asyncio
async def test_invalid_messages_client_events_and_presence_get_errors(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)
    for frame in ("{not json", json.dumps({"event": "client-hello", "channel": CHANNEL, "data": "{}"}),
                  json.dumps({"event": "pusher:subscribe", "data": {"channel": "bad name!"}}),
                  json.dumps({"event": "pusher:subscribe", "data": {"channel": "presence-desk", "auth": "k:x"}})):
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["event"] == "pusher:error" and error["data"]["code"] is None
    assert sim.received[0] == (1, "{not json") and sim.open_connections == 1
    await ws.close()


# -- channel events -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_emit_reaches_only_that_channels_subscribers_with_documented_payloads(sim: KnowsisSimulator) -> None:
    apple, _ = await open_client(sim)
    tesla, _ = await open_client(sim)
    assert await subscribe(apple, CHANNEL) == succeeded(CHANNEL)
    assert await subscribe(tesla, OTHER) == succeeded(OTHER)
    payloads = {}
    for event in ("datapoint", "price", "anomaly_alert_triggered", "anomaly_alert_removed", "top_content",
                  "tweets", "remove_tweets"):
        payload = sim.emit(CHANNEL, event)
        message = await recv_json(apple)
        assert set(message) == {"event", "channel", "data"}
        assert (message["event"], message["channel"]) == (event, CHANNEL)
        assert isinstance(message["data"], str) and json.loads(message["data"]) == payload
        payloads[event] = payload
    assert_knowsis_payloads(payloads)
    assert payloads["anomaly_alert_removed"]["alert_id"] == payloads["anomaly_alert_triggered"]["alert_id"]
    assert payloads["remove_tweets"]["ids"][0] in [t["id"] for t in payloads["tweets"]["tweets"]]
    sentinel = sim.emit(OTHER, "datapoint", {"sentiment": -2, "volume": 3.5})
    assert sentinel == {"sentiment": -2, "volume": 3.5}
    message = await recv_json(tesla)  # nothing from the apple channel came first
    assert message == {"event": "datapoint", "channel": OTHER, "data": '{"sentiment":-2,"volume":3.5}'}
    await apple.close()
    await tesla.close()


def assert_knowsis_payloads(p: dict[str, dict[str, Any]]) -> None:
    assert set(p["datapoint"]) == {"sentiment", "volume"}
    assert isinstance(p["datapoint"]["sentiment"], int) and -3 <= p["datapoint"]["sentiment"] <= 3
    assert isinstance(p["datapoint"]["volume"], float) and 0.5 <= p["datapoint"]["volume"] <= 5
    price = p["price"]
    assert set(price) == {"high", "last", "last_trade", "low", "open", "previous_close", "volume"}
    assert isinstance(price["previous_close"], str) and re.fullmatch(r"\d+\.\d{4}", price["previous_close"])
    assert all(isinstance(price[k], float) for k in ("high", "last", "low", "open"))
    assert price["low"] <= price["last"] <= price["high"] and isinstance(price["volume"], int)
    assert NAIVE_ISO.fullmatch(price["last_trade"]) and price["last_trade"].endswith(":00")
    alert = p["anomaly_alert_triggered"]
    assert set(alert) == {"alert_id", "trigger_time", "credibility"} and HEX24.fullmatch(alert["alert_id"])
    assert NAIVE_ISO.fullmatch(alert["trigger_time"]) and alert["credibility"] in {"high", "medium", "unknown"}
    assert set(p["anomaly_alert_removed"]) == {"alert_id"} and p["top_content"] == {}


@pytest.mark.asyncio
async def test_generated_events_flow_for_subscribed_channels_only() -> None:
    async with KnowsisSimulator(KEY, SECRET, news_interval=0.01, seed=3) as sim:
        ws, _ = await open_client(sim)
        assert await subscribe(ws, CHANNEL) == succeeded(CHANNEL)
        events: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while len(events) < 40:
                message = await recv_json(ws)
                assert message["channel"] == CHANNEL and isinstance(json.loads(message["data"]), dict)
                events.append(message["event"])
        await ws.close()
    assert events.count("datapoint") > events.count("anomaly_alert_triggered")
    assert {"datapoint", "price"} <= set(events) <= set(knowsisgen.EVENTS)


# -- failure injection --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_close_all_and_error_events(sim: KnowsisSimulator) -> None:
    a, _ = await open_client(sim)
    b, _ = await open_client(sim)
    assert sim.send_error_event(4100, "Over capacity") == 2
    for ws in (a, b):
        assert await recv_json(ws) == {"event": "pusher:error", "data": {"code": 4100, "message": "Over capacity"}}
    assert sim.send_error_event(None) == 2
    assert (await recv_json(a))["data"] == {"code": None, "message": ""}
    assert await sim.close_all(4200, "Generic reconnect") == 2
    assert await close_of(a) == (4200, "Generic reconnect")
    assert (await close_of(b))[0] == 4200


@pytest.mark.asyncio
async def test_drop_all_aborts_without_a_close_frame(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)
    await sim.wait_for(lambda: sim.open_connections == 1)
    assert sim.drop_all() == 1
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code == 1006  # abnormal closure: no close frame was received
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_freeze_stops_websocket_pongs_so_keepalive_detects_it(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim, ping_interval=0.5, ping_timeout=0.5)
    await subscribe(ws, CHANNEL)
    sim.freeze()
    sim.emit(CHANNEL, "datapoint")  # swallowed
    with pytest.raises(ConnectionClosedError):
        async with asyncio.timeout(TIMEOUT):
            await ws.recv()
    assert sim.open_connections == 1  # the server has not noticed anything: TCP is still up
    sim.thaw()
    await sim.wait_for(lambda: sim.open_connections == 0)  # reading again, it sees the client gone


@pytest.mark.asyncio
async def test_freeze_holds_buffered_frames_and_new_handshakes_until_thaw(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)  # no keepalive pings: it stays connected through the freeze
    await subscribe(ws, CHANNEL)
    sim.freeze()
    with pytest.raises(TimeoutError):
        await connect(sim.url(), open_timeout=0.3)
    pending = asyncio.create_task(connect_later(sim.url()))
    await sim.wait_for(lambda: sim.connection_attempts == 3)
    await ws.send(json.dumps({"event": "pusher:ping"}))
    sim.emit(CHANNEL, "datapoint")  # dropped, like events a stopped process never sends
    sim.thaw()
    assert await recv_json(ws) == {"event": "pusher:pong", "data": "{}"}  # the ping, read only now
    late = await pending
    assert (await recv_json(late))["event"] == "pusher:connection_established"
    payload = sim.emit(CHANNEL, "price")
    assert json.loads((await recv_json(ws))["data"]) == payload
    await ws.close()
    await late.close()


@pytest.mark.asyncio
async def test_blackhole_never_answers_the_handshake(sim: KnowsisSimulator) -> None:
    sim.blackhole = True
    with pytest.raises(TimeoutError):
        await connect(sim.url(), open_timeout=1)
    pending = asyncio.create_task(connect_later(sim.url()))
    await sim.wait_for(lambda: sim.connection_attempts == 2)
    sim.blackhole = False
    ws = await pending
    assert (await recv_json(ws))["event"] == "pusher:connection_established"
    await ws.close()


@pytest.mark.asyncio
async def test_stop_releases_held_handshakes() -> None:
    sim = KnowsisSimulator(KEY, SECRET, news_interval=None)
    await sim.start()
    sim.blackhole = True
    pending = asyncio.create_task(connect_later(sim.url()))
    await sim.wait_for(lambda: sim.connection_attempts == 1)
    await asyncio.wait_for(sim.stop(), TIMEOUT)
    with pytest.raises(Exception, match="503"):
        await pending


@pytest.mark.asyncio
async def test_restart_closes_with_1012_and_listens_again_on_the_same_port(sim: KnowsisSimulator) -> None:
    ws, first_id = await open_client(sim)
    await subscribe(ws, CHANNEL)
    port = sim.port
    await asyncio.wait_for(sim.restart(), TIMEOUT)
    assert await close_of(ws) == (1012, "service restart")
    assert sim.port == port
    again, second_id = await open_client(sim)
    assert second_id != first_id and sim.subscribed(CHANNEL) == 0  # a fresh session
    await again.close()


@pytest.mark.asyncio
async def test_stop_then_start_reuses_the_port(sim: KnowsisSimulator) -> None:
    port = sim.port
    await sim.stop()
    with pytest.raises(OSError):
        await connect(f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7", open_timeout=TIMEOUT)
    await sim.start()
    assert sim.port == port
    ws, _ = await open_client(sim)
    await ws.close()


# -- HTTP control interface ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_control_requires_the_token(sim: KnowsisSimulator) -> None:
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for url in (f"{base}/blackhole?on=1", f"{base}/blackhole?on=1&token=wrong", f"{base}/stats"):
            assert (await http.get(url)).status_code == 403
    assert sim.blackhole is False


@pytest.mark.asyncio
async def test_control_actions(sim: KnowsisSimulator) -> None:
    ws, _ = await open_client(sim)
    await subscribe(ws, CHANNEL)
    base = f"http://127.0.0.1:{sim.port}/control"
    params = {"token": CONTROL}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{base}/emit", params={**params, "channel": CHANNEL, "event": "price"})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert json.loads((await recv_json(ws))["data"]) == response.json()
        data = {"alert_id": "57602570f3d4f757039a14ef", "trigger_time": "2016-06-02T14:57:56",
                "credibility": "high"}  # the doc's sample
        response = await http.get(f"{base}/emit", params={
            **params, "channel": CHANNEL, "event": "anomaly_alert_triggered", "data": json.dumps(data)})
        assert response.json() == data and json.loads((await recv_json(ws))["data"]) == data
        assert (await http.get(f"{base}/emit", params={**params, "channel": CHANNEL})).status_code == 400
        response = await http.get(f"{base}/error", params={**params, "code": "4200", "message": "x"})
        assert response.json() == {"sent": 1}
        assert (await recv_json(ws))["data"] == {"code": 4200, "message": "x"}
        stats = (await http.get(f"{base}/stats", params=params)).json()
        assert stats["openConnections"] == 1 and stats["subscriptions"] == {"1": [CHANNEL]}
        assert (await http.get(f"{base}/blackhole", params={**params, "on": "1"})).json()["blackhole"] is True
        assert (await http.get(f"{base}/blackhole", params={**params, "on": "0"})).json()["blackhole"] is False
        assert (await http.get(f"{base}/freeze", params={**params, "on": "1"})).json()["frozen"] is True
        assert (await http.get(f"{base}/freeze", params={**params, "on": "0"})).json()["frozen"] is False
        assert (await http.get(f"{base}/nope", params=params)).status_code == 404
        assert (await http.get(f"{base}/close", params={**params, "code": "4100"})).json() == {"closed": 1}
        assert (await close_of(ws))[0] == 4100
        dropped, _ = await open_client(sim)
        assert (await http.get(f"{base}/drop", params=params)).json() == {"dropped": 1}
        assert (await close_of(dropped))[0] == 1006
        restarted, _ = await open_client(sim)
        assert (await http.get(f"{base}/restart", params=params)).status_code == 200
        assert await close_of(restarted) == (1012, "service restart")
        await sim.wait_for(lambda: sim.listening)
        again, _ = await open_client(sim)
        await again.close()


# -- the real pysher client ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pysher_subscribes_public_and_private_channels_and_receives_events(
        sim: KnowsisSimulator) -> None:
    pysher = pytest.importorskip("pysher")
    got: queue.Queue[tuple[str, Any]] = queue.Queue()  # filled on pysher's event-loop thread
    client = pysher.Pusher(KEY, secure=False, custom_host="127.0.0.1", port=sim.port, secret=SECRET,
                           log_level=logging.WARNING)

    def on_connect(_data: str) -> None:
        for name in (CHANNEL, PRIVATE):
            channel = client.subscribe(name)
            channel.bind("pusher_internal:subscription_succeeded", lambda data, n=name: got.put((f"ok {n}", data)))
            channel.bind("datapoint", lambda data, n=name: got.put((n, data)))

    client.connection.bind("pusher:connection_established", on_connect)
    client.connect()
    try:
        acks = {(await asyncio.to_thread(got.get, timeout=TIMEOUT))[0] for _ in range(2)}
        assert acks == {f"ok {CHANNEL}", f"ok {PRIVATE}"}
        public = sim.emit(CHANNEL, "datapoint")
        private = sim.emit(PRIVATE, "datapoint")
        received = dict([await asyncio.to_thread(got.get, timeout=TIMEOUT) for _ in range(2)])
        assert {k: json.loads(v) for k, v in received.items()} == {CHANNEL: public, PRIVATE: private}
    finally:
        # A short join: websocket-client sometimes leaves its (daemon) thread polling the closed
        # fd for up to 100 s after a clean close, a client-side race the server cannot affect.
        await asyncio.to_thread(client.disconnect, 0.5)
    await sim.wait_for(lambda: sim.open_connections == 0)
    subscribes = [m["data"] for _, m in sim.received if m["event"] == "pusher:subscribe"]
    assert [s["channel"] for s in subscribes] == [CHANNEL, PRIVATE] and "auth" in subscribes[1]


# -- knowsisgen (pure) --------------------------------------------------------------------------


NOW = datetime(2026, 2, 6, 14, 57, 56, 123456, tzinfo=timezone.utc)


def test_channels_map_to_companies_or_stable_stand_ins() -> None:
    assert knowsisgen.company_for_channel("apple-inc").ticker == "AAPL"
    assert knowsisgen.company_for_channel("microsoft-corp").ticker == "MSFT"
    assert knowsisgen.company_for_channel("jpmorgan-chase").ticker == "JPM"
    assert knowsisgen.company_for_channel("NVDA") == newsgen.UNIVERSE["NVDA"]
    opaque = "3a158d211ccb5a4cb1100000"  # the doc's style of channel id
    assert knowsisgen.company_for_channel(opaque) == knowsisgen.company_for_channel(opaque)
    assert knowsisgen.company_for_channel(opaque).ticker not in newsgen.UNIVERSE


def test_generation_is_reproducible_and_removals_refer_to_earlier_ids() -> None:
    def run(seed: int) -> list[tuple[str, dict[str, Any]]]:
        rng = random.Random(seed)
        state = knowsisgen.new_channel(rng, "tesla-inc", NOW)
        out = []
        for _ in range(400):
            event = knowsisgen.pick_event(rng, state)
            payload, state = knowsisgen.generate(rng, state, event, NOW)
            out.append((event, payload))
        return out

    stream = run(5)
    assert stream == run(5) and stream != run(6)
    seen: set[str] = set()
    for event, payload in stream:
        if event == "anomaly_alert_triggered":
            seen.add(payload["alert_id"])
        elif event == "anomaly_alert_removed":
            assert payload["alert_id"] in seen  # never an alert the client has not seen
            seen.discard(payload["alert_id"])
    counts = {e: sum(1 for ev, _ in stream if ev == e) for e in knowsisgen.EVENTS}
    assert counts["datapoint"] > counts["price"] > counts["anomaly_alert_triggered"]
    assert counts["anomaly_alert_triggered"] >= counts["anomaly_alert_removed"]


def test_payload_formats() -> None:
    rng = random.Random(1)
    state = knowsisgen.new_channel(rng, "apple-inc", NOW)
    assert knowsisgen.naive_iso(NOW) == "2026-02-06T14:57:56"
    alert_id = knowsisgen.alert_id(rng, NOW)
    assert HEX24.fullmatch(alert_id) and int(alert_id[:8], 16) == int(NOW.timestamp())
    price, _ = knowsisgen.generate(rng, state, "price", NOW)
    assert price["last_trade"] == "2026-02-06T14:42:00"  # 15 minutes delayed, whole minutes
    assert price["previous_close"] == f"{state.price.previous_close:.4f}"
    removed, after = knowsisgen.generate(rng, state, "anomaly_alert_removed", NOW)
    assert HEX24.fullmatch(removed["alert_id"]) and after.alerts == ()  # none live: a fresh id
    assert knowsisgen.observe(state, "anomaly_alert_triggered", {"alert_id": "a"}).alerts == ("a",)


# -- build_from_options -------------------------------------------------------------------------


def test_build_from_options() -> None:
    sim = build_from_options({"host": "127.0.0.1", "port": 0, "token": None, "control_token": None,
                              "seed": 1, "news_interval": None})
    assert (sim.app_key, sim.app_secret, sim.news_interval) == ("demo-key", "demo-secret", 2.0)
    assert build_from_options({"news_interval": 0, "port": 0}).news_interval is None  # 0: tests drive events
    sim = build_from_options({"token": ["k:s"], "news_interval": 0.5, "control_token": "c", "port": 0})
    assert (sim.app_key, sim.app_secret, sim.news_interval, sim.control_token) == ("k", "s", 0.5, "c")
    assert sim.valid_keys == {"k"}


@pytest.mark.asyncio
async def test_simulate_command_streams_until_sigterm() -> None:
    manage = Path(__file__).resolve().parents[3] / "manage.py"
    env = {**os.environ, "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(manage), "simulate", "knowsis", "--port", "0", "--token", f"{KEY}:{SECRET}",
        "--news-interval", "0.05", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        match = re.fullmatch(r"knowsis simulator listening on ws://127\.0\.0\.1:(\d+)/app\n", line)
        assert match, line
        async with connect(f"ws://127.0.0.1:{match.group(1)}/app/{KEY}?protocol=7") as ws:
            socket_id = json.loads((await recv_json(ws))["data"])["socket_id"]
            assert await subscribe(ws, PRIVATE, auth_for(socket_id, PRIVATE)) == succeeded(PRIVATE)
            assert (await recv_json(ws))["channel"] == PRIVATE  # generated events flow
            proc.send_signal(signal.SIGTERM)
            assert (await close_of(ws))[0] == 1001  # server going away
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
