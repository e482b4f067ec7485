"""Knowsis Push API over Pusher (pysher, wrapped by feeds.transports.pusher).

Wire reference: ../shared/providers/knowsis-push-api.md. One channel per asset: the
instrument's Knowsis `websocket_channel`. The account holds the Pusher app key (`api_key`)
and secret (`secret`, used to sign `private-` channel subscriptions); the endpoint is the
Pusher host as a URL (`wss://ws-CLUSTER.pusher.com`, or the simulator's `ws://127.0.0.1:PORT`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timezone

from feeds.logthrottle import throttle_for
from feeds.pipeline import Pipeline
from feeds.providers.base import UnsupportedMessage
from feeds.status import StatusSink
from feeds.transports.pusher import PusherSupervisor, classify

from .parse import IGNORED_EVENTS, PROVIDER, parse_event

__all__ = ["KnowsisFeed", "EVENTS"]

log = logging.getLogger(__name__)

EVENTS = ("datapoint", "anomaly_alert_triggered", "anomaly_alert_removed", "price", "top_content",
          "tweets", "remove_tweets")


class KnowsisFeed:
    name = PROVIDER

    def __init__(self, *, endpoint: str, key: str, secret: str, pipeline: Pipeline, status: StatusSink,
                 **supervisor_kwargs) -> None:
        self.pipeline = pipeline
        self.status = status
        self.ignored = 0
        self.supervisor = PusherSupervisor(name=PROVIDER, endpoint=endpoint, key=key, secret=secret, events=EVENTS,
                                           on_event=self.on_event, status=status,
                                           classifier=classify,  # Pusher protocol 7 close-code ranges, as is
                                           **supervisor_kwargs)

    @classmethod
    def from_account(cls, account, **kwargs) -> KnowsisFeed:
        return cls(endpoint=account.endpoint, key=account.api_key, secret=account.secret, **kwargs)

    async def run(self) -> None:
        await self.supervisor.run()

    def stop(self) -> None:
        self.supervisor.stop()

    def set_watched(self, codes: Iterable[str]) -> None:
        self.supervisor.set_channels(codes)

    async def on_event(self, channel: str, event: str, data: object) -> None:
        if event in IGNORED_EVENTS:
            self.ignored += 1
            self.status.detail("ignored_events", self.ignored)
            return
        try:
            events = parse_event(event, data, channel=channel, received_at=datetime.now(timezone.utc))
        except UnsupportedMessage as exc:
            self.status.parse_error()
            throttle_for("skipped:knowsis").log(log, logging.WARNING, "knowsis: skipped %s on %s (%s): %.2000r",
                                                event, channel, exc, data)
            return
        await self.pipeline.submit(events)
