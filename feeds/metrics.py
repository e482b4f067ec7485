"""Prometheus metrics: every Tickerwire metric is defined here, and served from here.

Each process (a Daphne server, a `runfeed` worker) counts what it sees and serves its own
metrics on a port of its own, bound to loopback by default (`METRICS_PORT`, `METRICS_BIND`;
`runfeed --metrics-port`): an operator's Prometheus scrapes it, users never reach it, and it
is never the public Daphne port. prometheus_client's default collectors add the process' CPU,
memory, file descriptors and garbage collection.

What is counted where:
- workers (feeds/status.py, feeds/pipeline.py, feeds/broadcast.py): provider frames received,
  parse errors, reconnects, events stored/published/dropped, store failures, queue depth, state;
- servers (dashboard/consumers.py): sockets open, accepted/refused, frames sent, send drops;
- whichever process calls `group_send` (feeds/broadcast.py: workers, and the server for webhook
  alerts): messages the Redis layer refused because a receiver's inbox was over `capacity`.
Not counted (not visible to our code): messages channels-redis discards inside a receiving
process' bounded buffer, and frames Daphne discards for a socket it already knows is closed.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Enum, Gauge, start_http_server

__all__ = [
    "FEED_MESSAGES", "FEED_PARSE_ERRORS", "FEED_RECONNECTS", "FEED_STATE", "EVENTS_STORED", "EVENTS_PUBLISHED",
    "EVENTS_DROPPED", "STORE_FAILURES", "PIPELINE_QUEUE_DEPTH", "WEBSOCKETS_OPEN", "WEBSOCKET_CONNECTIONS",
    "WEBSOCKET_FRAMES_SENT", "SOCKET_SEND_DROPS", "SOCKET_FRAMES_CONFLATED", "LIVE_SUBSCRIPTION_LOST",
    "LayerCapacityDrops", "serve", "served_port",
]

log = logging.getLogger(__name__)

FEED_STATES = ["connecting", "connected", "degraded", "backing_off", "auth_failed", "refused", "disabled", "stopped"]

# -- feed workers ------------------------------------------------------------------------
FEED_MESSAGES = Counter(
    "tickerwire_feed_messages_received", "Frames received from the provider (control frames included).", ["provider"])
FEED_PARSE_ERRORS = Counter(
    "tickerwire_feed_parse_errors", "Provider frames that could not be parsed and were skipped.", ["provider"])
FEED_RECONNECTS = Counter(
    "tickerwire_feed_reconnects", "Connection attempts after the first one.", ["provider"])
FEED_STATE = Enum(
    "tickerwire_feed_state", "The worker's link state as shown on the health page.", ["provider"], states=FEED_STATES)
EVENTS_STORED = Counter(
    "tickerwire_events_stored", "New events stored (duplicates not counted).", ["provider"])
EVENTS_PUBLISHED = Counter(
    "tickerwire_events_published", "Events handed to the channel layer for browsers.", ["provider"])
EVENTS_DROPPED = Counter(
    "tickerwire_events_dropped",
    "Events that did not reach browsers: store_failed (a frame the database rejected: not stored, not published), "
    "layer_error (group_send raised), no_instrument (stored, but no instrument to publish to).",
    ["provider", "reason"])
STORE_FAILURES = Counter(
    "tickerwire_store_failures",
    "Attempts to store a batch that raised (a lost connection is retried; see events_dropped).", ["provider"])
PIPELINE_QUEUE_DEPTH = Gauge(
    "tickerwire_pipeline_queue_depth", "Events waiting in the pipeline to be stored.", ["provider"])
LEASE_HELD = Gauge(
    "tickerwire_feed_lease_held",
    "1 while this worker holds its account's lease and consumes, 0 while it stands by (feeds/lease.py).", ["provider"])
LEASE_TAKEOVERS = Counter(
    "tickerwire_feed_lease_acquired", "Times this worker acquired its account's lease.", ["provider"])

# -- servers -----------------------------------------------------------------------------
WEBSOCKETS_OPEN = Gauge("tickerwire_websockets_open", "Browser sockets open in this process.")
WEBSOCKET_CONNECTIONS = Counter(
    "tickerwire_websocket_connections", "Browser socket handshakes, by result (accepted, refused).", ["result"])
WEBSOCKET_FRAMES_SENT = Counter(
    "tickerwire_websocket_frames_sent", "Event frames forwarded to browser sockets.")
SOCKET_SEND_DROPS = Counter(
    "tickerwire_socket_send_drops",
    "Messages for browser sockets that were dropped: overflow (a slow socket's bounded queue was full after "
    "conflating; the browser sees a seq gap and recovers from history), closing (arrived after the server closed "
    "the socket), send_error (send raised), layer_full (channels-redis refused a group_send over capacity).",
    ["reason"])
SOCKET_FRAMES_CONFLATED = Counter(
    "tickerwire_socket_frames_conflated",
    "Quote and bar frames a slow socket's queue left out because a newer one for the same instrument superseded "
    "them (the browser is told with a skip frame).")
LIVE_SUBSCRIPTION_LOST = Counter(
    "tickerwire_live_subscription_lost",
    "Times this server's live subscription (Redis pub/sub) failed; its sockets were closed to resync.")
# Children created up front are exported at 0, so a rate() has a starting point.
for _result in ("accepted", "refused"):
    WEBSOCKET_CONNECTIONS.labels(_result)
for _reason in ("overflow", "layer_full", "closing", "send_error"):
    SOCKET_SEND_DROPS.labels(_reason)


class LayerCapacityDrops(logging.Filter):
    """Counts the messages channels-redis refuses for channels over capacity.

    `group_send` reports them only in an INFO log line ("N of M channels over capacity in group
    G"), so this filter sits on the `channels_redis.core` logger (see LOGGING in settings). That
    logger is set to INFO so the count never depends on LOG_LEVEL; `show_from` keeps the record
    out of the log below the configured level, as before.
    """

    def __init__(self, show_from: str | int = logging.INFO) -> None:
        super().__init__()
        self.show_from = logging.getLevelName(show_from) if isinstance(show_from, str) else show_from

    def filter(self, record: logging.LogRecord) -> bool:
        # Marked once counted: each django.setup() (manage.py, then project.asgi in the demo)
        # applies LOGGING again and adds another instance of this filter to the logger.
        if not getattr(record, "tickerwire_counted", False) and record.args \
                and str(record.msg).endswith("channels over capacity in group %s"):
            record.tickerwire_counted = True
            try:
                SOCKET_SEND_DROPS.labels("layer_full").inc(int(record.args[0]))
            except (TypeError, ValueError, IndexError):
                pass
        return record.levelno >= self.show_from


# -- serving -----------------------------------------------------------------------------
_lock = threading.Lock()
_server = None


def serve(port: int, *, bind: str = "127.0.0.1") -> int:
    """Serve this process' metrics on `bind:port` (0: any free port), once per process.

    Returns the bound port; a second call returns the first server's port. Raises OSError when
    the port is taken: each process needs its own port, and a scrape target that silently
    shows another process' numbers would be worse than a failed start.
    """
    global _server
    with _lock:
        if _server is None:
            _server, _ = start_http_server(port, addr=bind)
            log.info("metrics served on %s:%d/metrics", bind, _server.server_port)
        return _server.server_port


def served_port() -> int | None:
    return _server.server_port if _server is not None else None
