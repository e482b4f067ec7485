"""Run an asyncio simulator on its own loop in a background thread, for sync tests (the Django
admin and test client are synchronous)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class SimulatorThread:
    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="simulator")

    def call(self, coro_or_func, *args, timeout: float = 10, **kwargs):
        """Run a coroutine function (or a plain function) on the simulator's loop and return its result."""
        async def runner():
            result = coro_or_func(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.call(self.simulator.start)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.simulator.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def simulator_thread(simulator: Any) -> Iterator[SimulatorThread]:
    runner = SimulatorThread(simulator)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
