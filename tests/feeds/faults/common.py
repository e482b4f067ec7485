"""Helpers shared by the fault tests (tests/faultproxy.py does the faults)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime, timezone

from feeds.events import Event

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
# Multi-byte UTF-8 of every length (2, 3 and 4 bytes): a 1-byte slicer splits each inside.
UTF8_TEXT = "Nestlé – 12,5 € · 株価 ✓ 🚀 Zürich"


def normalised(events: list[Event]) -> list[Event]:
    """Events with what depends on the arrival time (received_at, and anything derived from it)
    set to one fixed value, so two runs of the same input compare equal."""
    out = []
    for event in events:
        stamp = event.received_at
        changes: dict = {}
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            if value == stamp:
                changes[f.name] = EPOCH
            elif isinstance(value, str) and stamp.isoformat() in value:
                changes[f.name] = value.replace(stamp.isoformat(), EPOCH.isoformat())
        out.append(dataclasses.replace(event, **changes))
    return out


async def until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """Poll `predicate` every 10 ms until true; returns the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout}s") from None
    return time.monotonic() - started


def recording_sleep(delays: list[float]) -> Callable[[float], object]:
    """A transport's `sleep`: waits for real and records each delay, so a test can compare the
    waits with the backoff policy's draws and with the gaps the proxy saw between connections."""

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(delay)

    return sleep
