"""`manage.py simulate <provider>`: run a provider simulator until SIGINT/SIGTERM.

Example: python manage.py simulate stocknews --host 127.0.0.1 --port 8765 --token T1 --token T2
Prints exactly one line on stdout once listening, which scripts and tests wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string


class _Simulator(Protocol):
    port: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# provider name -> (dotted path of `build_from_options(options) -> simulator`, path clients use).
# Each simulator module owns its builder; add new simulators here.
SIMULATORS: dict[str, tuple[str, str]] = {
    "stocknews": ("feeds.simulators.stocknews.build_from_options", "/ws"),
    "insightsentry": ("feeds.simulators.insightsentry.build_from_options", "/live"),
    "stocktwits": ("feeds.simulators.stocktwits.build_from_options", "/sentiment"),
    "knowsis": ("feeds.simulators.knowsis.build_from_options", "/app"),
    "trendspottr": ("feeds.simulators.trendspottr.build_from_options", "/v1.5/alerts"),
}


class Command(BaseCommand):
    help = "Run a provider simulator (WebSocket server) until interrupted."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("provider", choices=sorted(SIMULATORS))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument("--token", action="extend", nargs="+", default=None,
                            help="valid client token(s); repeatable (default: demo-token)")
        parser.add_argument("--news-interval", type=float, default=2.0, help="seconds; 0 disables")
        parser.add_argument("--control-token", default=None,
                            help="enables the /control/... HTTP endpoints for this token")
        parser.add_argument("--seed", type=int, default=None, help="seed for reproducible content")

    def handle(self, *args: Any, **options: Any) -> None:
        dotted, path = SIMULATORS[options["provider"]]
        factory = import_string(dotted)
        try:
            asyncio.run(self._serve(options["provider"], factory(options), options["host"], path))
        except OSError as exc:
            raise CommandError(f"cannot start simulator: {exc}") from exc

    async def _serve(self, name: str, simulator: _Simulator, host: str, path: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await simulator.start()
        try:
            self.stdout.write(f"{name} simulator listening on ws://{host}:{simulator.port}{path}")
            self.stdout.flush()  # tests and scripts block on this line; don't leave it buffered
            await stop.wait()
        finally:
            await simulator.stop()
