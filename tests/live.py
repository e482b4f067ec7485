"""Listen to streams the way a server process does: a real hub on the test's event loop, on the
real Redis (tests/settings.py), with a sink that hands each frame to the test instead of a socket.

    async with listening(instrument_group(aapl.id)) as inbox:
        ...publish...
        frame = await inbox.next()          # the browser's frame, parsed: {"type": "event", "seq": 1, ...}
        await inbox.nothing(0.3)            # asserts no frame arrives meanwhile (isolation checks)

Control messages (an access revoke) arrive as the dict that was published. If the hub loses its
subscription (a consumer would close the socket), the inbox gets `LOST`.

Sync tests (a view under Django's test client, a service) listen from a hub on its own loop in a
thread, with the same calls minus `await`:

    with listening_in_thread(audience_group("user7")) as inbox:
        ...
        frame = inbox.next()
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager, contextmanager

from feeds.hub import get_hub
from feeds.sinks import Frame

LOST = {"type": "subscription_lost"}  # not a server frame: what a socket would see as its close


class _Capture:
    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue

    def ready(self) -> bool:
        return True

    def write(self, frame: Frame) -> None:
        self.queue.put_nowait(json.loads(frame.text))


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    async def next(self, timeout: float = 5.0) -> dict:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def events(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The next `count` event frames' events (other frames skipped)."""
        out = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                frame = await self.queue.get()
                if frame.get("type") == "event":
                    out.append(frame["event"])
        return out

    async def nothing(self, within: float = 0.3) -> None:
        try:
            frame = await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame}")

    def empty(self) -> bool:
        return self.queue.empty()


@asynccontextmanager
async def listening(*streams: str):
    hub = await get_hub()
    inbox = Inbox()
    sink = hub.sink(_Capture(inbox.queue), on_control=inbox.queue.put_nowait,
                    on_lost=lambda: inbox.queue.put_nowait(LOST))
    try:
        await hub.join(sink, streams)  # may raise HubUnavailable: the sink must not stay behind
        yield inbox
    finally:
        hub.drop(sink)


class ThreadInbox:
    """An Inbox on another thread's loop, for sync tests."""

    def __init__(self, inbox: Inbox, run) -> None:
        self._inbox, self._run = inbox, run

    def next(self, timeout: float = 5.0) -> dict:
        return self._run(self._inbox.next(timeout), timeout)

    def events(self, count: int, timeout: float = 5.0) -> list[dict]:
        return self._run(self._inbox.events(count, timeout), timeout)

    def nothing(self, within: float = 0.3) -> None:
        self._run(self._inbox.nothing(within), within)


@contextmanager
def listening_in_thread(*streams: str, timeout: float = 10.0):
    """`listening` for sync tests: the hub runs on a loop in its own thread (as in a server process,
    not the loop that publishes); when the block ends the hub leaves, the loop's tasks are
    cancelled and the loop closed."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    joined = threading.Event()
    outcome: list = []  # the ThreadInbox, or the exception joining raised

    def run(coroutine, within: float):
        # A margin over the coroutine's own timeout, so its error (not this one) is what a test sees.
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(within + 5)

    async def main() -> None:
        try:
            async with listening(*streams) as inbox:
                outcome.append(ThreadInbox(inbox, run))
                joined.set()
                await stop.wait()
        except Exception as exc:
            outcome.append(exc)
        finally:
            joined.set()

    def body() -> None:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:  # cancels leftover tasks, then closes
            runner.run(main())

    thread = threading.Thread(target=body, name="test-hub", daemon=True)
    thread.start()
    try:
        assert joined.wait(timeout), f"the hub did not join {streams} within {timeout}s"
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        yield outcome[0]
    finally:
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already ended (joining failed)
            pass
        thread.join(timeout)
