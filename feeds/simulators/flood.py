"""Floods: a bounded number of generated frames, sent as fast as each client takes them or at a
set rate, for benchmarks (bench/ingest.py, bench/wire_to_browser.py) and load demos.

A simulator builds every frame before the first one is sent, so what a benchmark times is the
client reading, not the simulator generating. Sending awaits each socket's write buffer (the
websockets library's flow control): a client that reads slowly slows the flood down, and memory
stays bounded by the frames built. A frame may be a function of the time it is written, for a
stamp (`stamp_ns()`: CLOCK_MONOTONIC, one clock for every process on the machine). Pure asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = ["FLOOD_MAX", "Flood", "flood_count", "flood_rate", "send_flood", "stamp_ns"]

FLOOD_MAX = 100_000  # frames per flood: enough to time a worker for seconds, small enough to hold in memory

Frame = str | Callable[[], str]  # a text, or a function building it when it is sent (stamps)


def stamp_ns() -> int:
    return time.monotonic_ns()


def flood_count(value: Any) -> int:
    """A flood's frame count, 1..FLOOD_MAX; ValueError otherwise (answered 400 over HTTP)."""
    count = int(value)
    if not 0 < count <= FLOOD_MAX:
        raise ValueError(f"count must be 1..{FLOOD_MAX}, not {count}")
    return count


def flood_rate(value: Any) -> float | None:
    """Frames per second; None or empty means as fast as the client takes them."""
    if value in (None, "", "0"):
        return None
    rate = float(value)
    if not 0 < rate <= 1_000_000:
        raise ValueError(f"rate must be a positive number of frames per second, not {value!r}")
    return rate


@dataclass
class Flood:
    """One flood, as `/control/stats` shows it."""

    frames: int
    rate: float | None = None
    sent: int = 0
    done: bool = False
    seconds: float | None = None  # from the first frame written to the last

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "rate": self.rate, "sent": self.sent, "done": self.done,
                "seconds": self.seconds}


async def send_flood(flood: Flood, frames: Iterable[tuple[list[ServerConnection], Frame]],
                     notify: Callable[[], None] = lambda: None) -> None:
    """Write each frame to its connections (closed ones are skipped), in order; with a rate, frame
    i goes out at start + i / rate (late frames are not bunched up to catch up: never early)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for i, (targets, frame) in enumerate(frames):
            if flood.rate:
                delay = start + i / flood.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            live = [ws for ws in targets if ws.state is State.OPEN]
            if live:
                text = frame() if callable(frame) else frame
                if len(live) == 1:
                    try:
                        await live[0].send(text)
                    except ConnectionClosed:
                        pass
                else:
                    await asyncio.gather(*(ws.send(text) for ws in live), return_exceptions=True)
            flood.sent += 1
    finally:
        flood.done = True
        flood.seconds = loop.time() - start
        notify()
