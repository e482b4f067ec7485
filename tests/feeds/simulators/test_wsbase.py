"""The WebSocket simulators' shared base (feeds/simulators/wsbase.py): `/control/...` answered as
plain HTTP during the handshake, other paths left to the subclass, the message log, and closing
or dropping connections, on a toy simulator over real loopback sockets."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator
from urllib.parse import SplitResult

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response

from feeds.simulators.wsbase import WebSocketSimulator, close_connections, drop_connections

CONTROL = "ctl-secret"
TIMEOUT = 5.0


class Toy(WebSocketSimulator):
    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", control_token=CONTROL)
        self.received: list[tuple[int, Any]] = []
        self.parsed: list[tuple[str, Any, bool]] = []
        self.attempts = 0

    async def start(self) -> None:
        self._server = await self._serve(0)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str = "/ws") -> str:
        return f"ws://{self._public_host}:{self.port}{path}"

    async def _handshake(self, connection: ServerConnection, url: SplitResult) -> Response | None:
        if url.path != "/ws":
            return connection.respond(404, "Not Found\n")
        self.attempts += 1
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                self.parsed.append(self._record(len(self.parsed) + 1, raw))
        except ConnectionClosed:
            pass

    def _stats(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "received": len(self.received)}

    async def _control_close(self, query: dict[str, str]) -> dict[str, Any]:
        return {"closed": await close_connections(self._all_ws(), int(query["code"]), query.get("reason", ""))}


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Toy]:
    async with Toy() as simulator:
        yield simulator


@pytest.mark.asyncio
async def test_control_is_plain_http_json_on_the_same_port(sim: Toy) -> None:
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        stats = await client.get(f"{base}/stats", params={"token": CONTROL})
        assert stats.status_code == 200 and stats.json() == {"attempts": 0, "received": 0}
        assert stats.headers.get_list("content-type") == ["application/json"]  # replaces the text/plain
        forbidden = await client.get(f"{base}/stats", params={"token": "nope"})
        assert forbidden.status_code == 403 and forbidden.json() == {"error": "Forbidden"}
        assert forbidden.headers["content-type"] == "application/json"
        assert (await client.get(f"{base}/close", params={"token": CONTROL})).status_code == 400
        assert (await client.get(f"{base}/nope", params={"token": CONTROL})).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{sim.port}/elsewhere")).status_code == 404
    assert sim.attempts == 0


@pytest.mark.asyncio
async def test_other_paths_go_to_the_handshake_hook(sim: Toy) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(sim.url("/other"))
    assert refused.value.response.status_code == 404
    async with connect(sim.url()):
        await sim.wait_for(lambda: len(sim._all_ws()) == 1)
    assert sim.attempts == 1


@pytest.mark.asyncio
async def test_record_logs_json_text_and_bytes(sim: Toy) -> None:
    async with connect(sim.url()) as ws:
        await ws.send('{"a": 1}')
        await ws.send("not json")
        await ws.send(b'{"b": 2}')
        await ws.send(b"\xff")
        await sim.wait_for(lambda: len(sim.received) == 4)
    assert sim.received == [(1, {"a": 1}), (2, "not json"), (3, {"b": 2}), (4, "\ufffd")]
    assert [is_json for _, _, is_json in sim.parsed] == [True, False, True, False]
    assert sim.parsed[2][0] == '{"b": 2}'  # bytes are decoded as UTF-8


@pytest.mark.asyncio
async def test_close_and_drop_connections(sim: Toy) -> None:
    async with connect(sim.url()) as first, connect(sim.url()) as second:
        await sim.wait_for(lambda: len(sim._all_ws()) == 2)
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.get(f"http://127.0.0.1:{sim.port}/control/close",
                                        params={"token": CONTROL, "code": "4001", "reason": "bye"})
        assert response.json() == {"closed": 2}
        for ws in (first, second):
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert (ws.close_code, ws.close_reason) == (4001, "bye")
    await sim.wait_for(lambda: not sim._all_ws())
    async with connect(sim.url()) as ws:
        await sim.wait_for(lambda: len(sim._all_ws()) == 1)
        assert drop_connections(sim._all_ws()) == 1
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1006  # no close frame: the TCP connection just went away
    assert await close_connections([], 1000) == 0
