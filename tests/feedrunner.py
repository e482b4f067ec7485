"""Shared helpers for tests that run a feed against its simulator."""

from __future__ import annotations

import asyncio
import contextlib


class CollectingPipeline:
    """Stands in for the pipeline: keeps what a feed submits (no database, no layer)."""

    def __init__(self) -> None:
        self.events: list = []
        self.arrived = asyncio.Event()

    async def submit(self, events) -> None:
        self.events.extend(events)
        self.arrived.set()


@contextlib.asynccontextmanager
async def running(feed, *, stop_within: float = 10):
    """Run `feed` for the duration of the block; stop it and wait for it to finish."""
    task = asyncio.create_task(feed.run())
    try:
        yield task
    finally:
        feed.stop()
        await asyncio.wait_for(task, stop_within)
