"""`manage.py demo`: the embedded default, in one process.

Migrates, seeds the demo data, points the StockNews account at an embedded simulator, then
runs Daphne (the ASGI server), the simulator and the feed worker on one event loop with the
in-memory channel layer (or Redis, if REDIS_URL is set). For development and evaluation
only: production runs these as separate processes (README, "Production").
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import daphne.server  # noqa: F401  (installs the asyncio Twisted reactor before anything else)
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from twisted.internet import reactor

from asgiref.sync import sync_to_async

from dashboard.management.commands.deliver_alerts import DeliveryWorker
from dashboard.services import DEMO_PASSWORD, demo_seed
from dashboard.trendspottr import trendspottr_demo_setup
from feeds.catalogue import SHIPPED as CATALOGUE, instrument_catalogue_import
from feeds.runner import run_feed
from feeds.services import provider_account_set
from feeds.simulators.insightsentry import InsightSentrySimulator
from feeds.simulators.knowsis import KnowsisSimulator
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.simulators.stocktwits import StockTwitsSimulator
from feeds.simulators.trendspottr import TrendSpottrSimulator

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run Tickerwire with simulated providers in one process (SQLite, in-memory layer)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sim-port", type=int, default=8765, help="first of five simulator ports")
        parser.add_argument("--news-interval", type=float, default=4.0, help="seconds between simulated articles")

    def handle(self, *args, host: str, port: int, sim_port: int, news_interval: float, **options) -> None:
        if "EMAIL_BACKEND" not in os.environ:
            # No SMTP server comes with the demo: e-mail destinations print to this console instead.
            settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
        call_command("migrate", interactive=False, verbosity=0)
        # The shipped catalogue first, so the board's add box has common US listings to find; an
        # unchanged file is a no-op on every later start.
        catalogue = instrument_catalogue_import(data=CATALOGUE.read_bytes())
        if catalogue.errors:
            raise CommandError(f"{CATALOGUE}: " + "; ".join(map(str, catalogue.errors[:5])))
        logins = demo_seed()
        # Fresh demo credentials each run: the simulators accept exactly these.
        token, api_key, password, pusher_secret, ts_key = (secrets.token_urlsafe(24) for _ in range(5))
        news_port, quotes_port, crowd_port, pusher_port, trends_port = range(sim_port, sim_port + 5)
        provider_account_set(provider="stocknews", endpoint=f"ws://127.0.0.1:{news_port}/ws", token=token, enabled=True)
        provider_account_set(provider="insightsentry", endpoint=f"ws://127.0.0.1:{quotes_port}/live", api_key=api_key,
                             enabled=True)
        provider_account_set(provider="stocktwits", endpoint=f"http://127.0.0.1:{crowd_port}/sentiment",
                             username="demo", password=password, enabled=True)
        provider_account_set(provider="knowsis", endpoint=f"ws://127.0.0.1:{pusher_port}", api_key="demo-app-key",
                             secret=pusher_secret, enabled=True)
        provider_account_set(provider="trendspottr", endpoint=f"http://127.0.0.1:{trends_port}", api_key=ts_key,
                             enabled=True)

        from daphne.server import Server

        from project.asgi import application

        stop = asyncio.Event()
        simulators = [
            StockNewsSimulator([token], port=news_port, news_interval=news_interval),
            InsightSentrySimulator([api_key], port=quotes_port, tick_interval=0.5),
            StockTwitsSimulator([f"demo:{password}"], port=crowd_port, interval=0.4),
            KnowsisSimulator("demo-app-key", pusher_secret, port=pusher_port, news_interval=3.0),
            TrendSpottrSimulator([ts_key], port=trends_port, interval=20.0, retry_interval=30.0),
        ]
        public_url = f"http://{'localhost' if host == '127.0.0.1' else host}:{port}"

        async def background() -> None:
            for simulator in simulators:
                await simulator.start()
            await sync_to_async(trendspottr_demo_setup)(public_base_url=public_url)
            feeds = ("stocknews", "insightsentry", "stocktwits", "knowsis")
            # Alert destinations are delivered as in production, by the outbox worker.
            await asyncio.gather(*(run_feed(name, stop=stop) for name in feeds), DeliveryWorker().run(stop))

        def start_background() -> None:
            task = asyncio.ensure_future(background())
            task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.error("demo feed failed", exc_info=t.exception()))

        reactor.callWhenRunning(start_background)
        reactor.addSystemEventTrigger("before", "shutdown", stop.set)
        url = public_url + "/"
        self.stdout.write(self.style.SUCCESS(f"\nTickerwire demo at {url}  (admin: {url}admin/)"))
        self.stdout.write("Logins (password for all: %s):" % DEMO_PASSWORD)
        for username, team, role in logins:
            self.stdout.write(f"  {username:<6} {team} ({role})")
        self.stdout.write(f"Instrument catalogue: {CATALOGUE.name}, {catalogue.summary()}.")
        self.stdout.write(f"Channel layer: {settings.CHANNEL_LAYERS['default']['BACKEND']}. Ctrl-C stops.\n")
        Server(application=application, endpoints=[f"tcp:port={port}:interface={host}"], signal_handlers=True).run()
