"""`manage.py runfeed <provider>`: one feed worker. SIGTERM/SIGINT stop it within seconds.

With METRICS_PORT set (or `--metrics-port`), the worker serves its Prometheus metrics on that
port, bound to METRICS_BIND (loopback by default). Each worker on a machine needs its own port.
"""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from feeds import metrics
from feeds.logging import set_process_role
from project.gctune import tune_gc
from feeds.providers import FEEDS
from feeds.runner import run_feed


class Command(BaseCommand):
    help = "Consume one provider's feed: normalise, store and broadcast what arrives."

    def add_arguments(self, parser) -> None:
        parser.add_argument("provider", choices=sorted(FEEDS))
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve Prometheus metrics on this port (default: METRICS_PORT; unset: none).")
        parser.add_argument("--metrics-bind", default=None,
                            help="Address for the metrics port (default: METRICS_BIND, 127.0.0.1).")

    def handle(self, *args, provider: str, metrics_port: int | None = None, metrics_bind: str | None = None,
               **options) -> None:
        set_process_role(f"runfeed:{provider}")
        port = metrics_port if metrics_port is not None else settings.METRICS_PORT
        if port is not None:
            try:
                metrics.serve(port, bind=metrics_bind or settings.METRICS_BIND)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on port {port}: {exc}") from exc
        tune_gc()
        code = asyncio.run(self._main(provider))
        if code:
            raise CommandError(f"{provider} feed stopped (exit code {code}); see the log and FeedStatus", returncode=code)

    async def _main(self, provider: str) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_feed(provider, stop=stop)
