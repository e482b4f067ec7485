"""`manage.py runfeed <provider>`: one feed worker. SIGTERM/SIGINT stop it within seconds."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from feeds.providers import FEEDS
from feeds.runner import run_feed


class Command(BaseCommand):
    help = "Consume one provider's feed: normalise, store and broadcast what arrives."

    def add_arguments(self, parser) -> None:
        parser.add_argument("provider", choices=sorted(FEEDS))

    def handle(self, *args, provider: str, **options) -> None:
        code = asyncio.run(self._main(provider))
        if code:
            raise CommandError(f"{provider} feed stopped (exit code {code}); see the log and FeedStatus", returncode=code)

    async def _main(self, provider: str) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_feed(provider, stop=stop)
