"""A fault-injection TCP proxy for tests: a feed dials the proxy, the proxy dials the simulator.

Everything is loopback and asyncio (it runs on the test's own loop). Faults switch at run time
and apply to the connections already open as well as to new ones, unless said otherwise:

- `refuse = True`: new connections are reset (RST) as soon as they are accepted; the upstream is
  never dialled. `await stop_listening()` / `await listen_again()` close and reopen the listening
  socket on the same port, for a true "connection refused".
- `blackhole = True`: connections are accepted and kept, but nothing is forwarded either way:
  the proxy stops reading, so bytes wait in the kernel buffers as they would behind a dead route,
  and a new connection is not dialled upstream until the hole closes. Clearing it lets the held
  bytes through, like TCP retransmitting after a partition heals.
- `reset()`: every open connection is reset (SO_LINGER 0, then close), on both sides.
- `latency = s`: each chunk waits `s` seconds before it is forwarded (per direction, in order).
- `slicing = True`: bytes are forwarded one per write (TCP_NODELAY, drained, and the loop is
  yielded twice so a reader on this loop sees each byte on its own), both directions.
- `cut_after = n`: a connection is closed (FIN, both sides) once `n` bytes went downstream
  (upstream → client) on it; counted per connection from its start. Applies to new connections.
- `accept_then_close = True`: new connections are forwarded until the upstream's first answer
  (for WebSocket: the 101 handshake response) reached the client, then closed without a word
  (no close frame): a server that accepts and then drops every connection.

Observability: `accepted` (connections accepted), `accepted_at` (their monotonic times),
`open_links`, `bytes_up`/`bytes_down`, `writes_down` (downstream writes; equals `bytes_down`
while slicing), `wait_for(predicate)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest_asyncio

__all__ = ["FaultProxy", "fault_proxy"]

CHUNK = 65536


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, not a FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(eq=False)
class _Link:
    number: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    cut_after: int | None = None
    close_after_first_answer: bool = False
    down: int = 0
    up: int = 0
    tasks: list[asyncio.Task] = field(default_factory=list)

    def close(self, *, reset: bool = False) -> None:
        for writer in (self.client, self.upstream):
            if writer is None or writer.transport.is_closing():
                continue
            if reset:
                _rst(writer)
            else:
                writer.close()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.refuse = False
        self.latency = 0.0
        self.slicing = False
        self.cut_after: int | None = None
        self.accept_then_close = False
        self.accepted = 0
        self.accepted_at: list[float] = []  # time.monotonic() of each accept
        self.bytes_up = self.bytes_down = self.writes_down = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.stop_listening()
        for link in list(self._links):
            link.close(reset=True)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop_listening(self) -> None:
        """New connections are refused by the kernel (ECONNREFUSED); open ones carry on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def listen_again(self) -> None:
        if self._server is None:
            await self.start()  # the same port: self.port is kept

    # -- faults ------------------------------------------------------------------------------------
    @property
    def blackhole(self) -> bool:
        return not self._flowing.is_set()

    @blackhole.setter
    def blackhole(self, value: bool) -> None:
        if value:
            self._flowing.clear()
        else:
            self._flowing.set()

    def reset(self) -> int:
        """Reset every open connection (both sides); returns how many."""
        links = list(self._links)
        for link in links:
            link.close(reset=True)
        return len(links)

    def heal(self) -> None:
        """Back to a plain pass-through for new and open connections."""
        self.refuse = self.slicing = self.accept_then_close = False
        self.blackhole = False
        self.latency = 0.0
        self.cut_after = None

    # -- observability -----------------------------------------------------------------------------
    @property
    def open_links(self) -> int:
        return len(self._links)

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.01)

    def _notify(self) -> None:
        self._changed.set()

    # -- forwarding --------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stop() cancels us: not an error to log
            await self._handle(reader, writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        self.accepted += 1
        self.accepted_at.append(time.monotonic())
        self._notify()
        if self.refuse:
            _rst(writer)
            self._handlers.discard(asyncio.current_task())
            return
        link = _Link(self.accepted, writer, cut_after=self.cut_after,
                     close_after_first_answer=self.accept_then_close)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a black hole dials nothing
            try:
                up_reader, link.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                _rst(writer)  # the target is down: the client sees a reset
                return
            _nodelay(writer)
            _nodelay(link.upstream)
            link.tasks = [asyncio.create_task(self._pump(link, reader, link.upstream, downstream=False)),
                          asyncio.create_task(self._pump(link, up_reader, writer, downstream=True))]
            try:
                await asyncio.gather(*link.tasks)
            finally:
                for task in link.tasks:
                    task.cancel()
                await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            link.close()
            self._links.discard(link)
            self._handlers.discard(asyncio.current_task())
            self._notify()

    async def _pump(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    downstream: bool) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(CHUNK)
                if not data:
                    if dst.can_write_eof() and not dst.transport.is_closing():
                        dst.write_eof()  # pass the half-close on; the other direction carries on
                    return
                await self._flowing.wait()  # read just before the hole opened: hold it
                if self.latency:
                    await asyncio.sleep(self.latency)
                close = False
                if downstream and link.cut_after is not None and link.down + len(data) >= link.cut_after:
                    data, close = data[:link.cut_after - link.down], True
                await self._write(link, dst, data, downstream=downstream)
                if downstream and link.close_after_first_answer:
                    close = True
                if close:
                    link.close()
                    return
        except (ConnectionError, OSError):
            link.close(reset=True)

    async def _write(self, link: _Link, dst: asyncio.StreamWriter, data: bytes, *, downstream: bool) -> None:
        pieces = [data[i:i + 1] for i in range(len(data))] if self.slicing else [data]
        for piece in pieces:
            if not piece:
                continue
            dst.write(piece)
            await dst.drain()
            if downstream:
                link.down += len(piece)
                self.bytes_down += len(piece)
                self.writes_down += 1
            else:
                link.up += len(piece)
                self.bytes_up += len(piece)
            if self.slicing:
                # Twice: the first pass lets the selector see the byte, the second runs the
                # reader's callback, so a reader on this loop gets the byte before the next one.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
        self._notify()


@pytest_asyncio.fixture
async def fault_proxy() -> AsyncIterator[Callable[..., FaultProxy]]:
    """A factory: `proxy = await fault_proxy(target_port)`; every proxy is stopped afterwards."""
    proxies: list[FaultProxy] = []

    async def make(target_port: int, target_host: str = "127.0.0.1") -> FaultProxy:
        proxy = await FaultProxy(target_port, target_host).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.stop()
