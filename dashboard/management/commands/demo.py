"""`manage.py demo`: the embedded default, in one process.

Migrates, seeds the demo data, points the StockNews account at an embedded simulator, then
runs Daphne (the ASGI server), the simulator and the feed worker on one event loop with the
in-memory channel layer (or Redis, if REDIS_URL is set). For development and evaluation
only: production runs these as separate processes (README, "Production").
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import daphne.server  # noqa: F401  (installs the asyncio Twisted reactor before anything else)
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from twisted.internet import reactor

from dashboard.services import DEMO_PASSWORD, demo_seed
from feeds.runner import run_feed
from feeds.services import provider_account_set
from feeds.simulators.insightsentry import InsightSentrySimulator
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.simulators.stocktwits import StockTwitsSimulator

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run Tickerwire with simulated providers in one process (SQLite, in-memory layer)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sim-port", type=int, default=8765, help="first of three simulator ports")
        parser.add_argument("--news-interval", type=float, default=4.0, help="seconds between simulated articles")

    def handle(self, *args, host: str, port: int, sim_port: int, news_interval: float, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        logins = demo_seed()
        # Fresh demo credentials each run: the simulators accept exactly these.
        token, api_key, password = (secrets.token_urlsafe(24) for _ in range(3))
        news_port, quotes_port, crowd_port = sim_port, sim_port + 1, sim_port + 2
        provider_account_set(provider="stocknews", endpoint=f"ws://127.0.0.1:{news_port}/ws", token=token, enabled=True)
        provider_account_set(provider="insightsentry", endpoint=f"ws://127.0.0.1:{quotes_port}/live", api_key=api_key,
                             enabled=True)
        provider_account_set(provider="stocktwits", endpoint=f"http://127.0.0.1:{crowd_port}/sentiment",
                             username="demo", password=password, enabled=True)

        from daphne.server import Server

        from project.asgi import application

        stop = asyncio.Event()
        simulators = [
            StockNewsSimulator([token], port=news_port, news_interval=news_interval),
            InsightSentrySimulator([api_key], port=quotes_port, tick_interval=0.5),
            StockTwitsSimulator([f"demo:{password}"], port=crowd_port, interval=0.4),
        ]

        async def background() -> None:
            for simulator in simulators:
                await simulator.start()
            await asyncio.gather(*(run_feed(name, stop=stop) for name in ("stocknews", "insightsentry", "stocktwits")))

        def start_background() -> None:
            task = asyncio.ensure_future(background())
            task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.error("demo feed failed", exc_info=t.exception()))

        reactor.callWhenRunning(start_background)
        reactor.addSystemEventTrigger("before", "shutdown", stop.set)
        url = f"http://{'localhost' if host == '127.0.0.1' else host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nTickerwire demo at {url}  (admin: {url}admin/)"))
        self.stdout.write("Logins (password for all: %s):" % DEMO_PASSWORD)
        for username, team, role in logins:
            self.stdout.write(f"  {username:<6} {team} ({role})")
        self.stdout.write(f"Channel layer: {settings.CHANNEL_LAYERS['default']['BACKEND']}. Ctrl-C stops.\n")
        Server(application=application, endpoints=[f"tcp:port={port}:interface={host}"], signal_handlers=True).run()
