"""The fault-injection proxy itself (tests/faultproxy.py), against a small echo server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.faultproxy import FaultProxy, fault_proxy  # noqa: F401 (fixture)

pytestmark = pytest.mark.asyncio


class Echo:
    """Echoes what it reads; `greeting` is sent first on every connection. Records what it read."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.accepted = 0
        self.pieces: list[bytes] = []
        self.resets = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Echo:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        try:
            if self.greeting:
                writer.write(self.greeting)
                await writer.drain()
            while data := await reader.read(65536):
                self.pieces.append(data)
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            self.resets += 1
        finally:
            writer.close()


async def read_pieces(reader: asyncio.StreamReader, total: int, timeout: float = 5.0) -> list[bytes]:
    pieces: list[bytes] = []
    async with asyncio.timeout(timeout):
        while sum(map(len, pieces)) < total:
            data = await reader.read(65536)
            if not data:
                break
            pieces.append(data)
    return pieces


async def test_pass_forwards_both_ways_unchanged(fault_proxy):
    async with Echo(greeting=b"hello\n") as echo:
        proxy = await fault_proxy(echo.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 1000
        writer.write(payload)
        got = b"".join(await read_pieces(reader, 6 + len(payload)))
        assert got == b"hello\n" + payload
        assert proxy.bytes_up == len(payload) and proxy.bytes_down == len(got) and echo.accepted == 1
        writer.close()
        await proxy.wait_for(lambda: proxy.open_links == 0)


async def test_slicing_forwards_one_byte_per_write_in_both_directions(fault_proxy):
    async with Echo() as echo:
        proxy = await fault_proxy(echo.port)
        proxy.slicing = True
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = "prix: 12,5 € — 株価 ✓".encode()  # multi-byte UTF-8: split inside characters
        writer.write(payload)
        pieces = await read_pieces(reader, len(payload))
        assert b"".join(pieces) == payload
        assert proxy.writes_down == len(payload)  # one write per byte downstream
        assert {len(p) for p in pieces} == {1}  # and a reader on the loop sees them one by one
        assert {len(p) for p in echo.pieces} == {1} and len(echo.pieces) == len(payload)  # upstream too
        writer.close()


async def test_refuse_resets_new_connections_and_never_dials_the_target(fault_proxy):
    async with Echo() as echo:
        proxy = await fault_proxy(echo.port)
        proxy.refuse = True
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 5)
        writer.close()
        assert proxy.accepted == 1 and echo.accepted == 0
        proxy.refuse = False
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.read(1), 5) == b"x"
        writer.close()


async def test_stop_listening_refuses_at_the_kernel_and_listen_again_reuses_the_port(fault_proxy):
    async with Echo() as echo:
        proxy = await fault_proxy(echo.port)
        port = proxy.port
        await proxy.stop_listening()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await proxy.listen_again()
        assert proxy.port == port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"y")
        assert await asyncio.wait_for(reader.read(1), 5) == b"y"
        writer.close()


async def test_black_hole_keeps_connections_forwards_nothing_then_heals(fault_proxy):
    async with Echo(greeting=b"hi") as echo:
        proxy = await fault_proxy(echo.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
        proxy.blackhole = True
        writer.write(b"lost?")
        with pytest.raises(TimeoutError):  # a bounded look for something that must not come
            await asyncio.wait_for(reader.read(1), 0.3)
        assert echo.pieces == []
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)  # still accepted...
        await proxy.wait_for(lambda: proxy.accepted == 2)
        assert echo.accepted == 1 and proxy.open_links == 2  # ...but not dialled, and nothing closed
        proxy.blackhole = False
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"lost?"  # held, then delivered
        assert await asyncio.wait_for(reader2.readexactly(2), 5) == b"hi"
        writer.close()
        writer2.close()


async def test_reset_sends_rst_to_both_sides(fault_proxy):
    async with Echo() as echo:
        proxy = await fault_proxy(echo.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"z")
        assert await asyncio.wait_for(reader.read(1), 5) == b"z"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 5)
        await asyncio.wait_for(_until(lambda: echo.resets == 1), 5)
        writer.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_latency_delays_each_chunk(fault_proxy):
    async with Echo() as echo:
        proxy = await fault_proxy(echo.port)
        proxy.latency = 0.1
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert time.monotonic() - started >= 0.2  # up and down: two delayed chunks
        writer.close()


async def test_cut_after_n_bytes_downstream_then_close(fault_proxy):
    async with Echo(greeting=b"0123456789") as echo:
        proxy = await fault_proxy(echo.port)
        proxy.cut_after = 7
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b"0123456"  # then EOF
        writer.close()
        await proxy.wait_for(lambda: proxy.open_links == 0)


async def test_accept_then_close_delivers_the_first_answer_then_drops(fault_proxy):
    async with Echo(greeting=b"HTTP/1.1 101\r\n\r\n") as echo:
        proxy = await fault_proxy(echo.port)
        proxy.accept_then_close = True
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.read(), 5) == b"HTTP/1.1 101\r\n\r\n"
            with contextlib.suppress(OSError):
                writer.write(b"anyone?")
            writer.close()
        assert echo.accepted == 3 and proxy.accepted == 3
        await proxy.wait_for(lambda: proxy.open_links == 0)
