"""The browser's WebSocket: authenticate, authorise every watch request, forward events.

Protocol (JSON text frames):
    browser -> {"type": "watch", "watchlists": [ids], "instruments": [ids]}   replaces what it watches
    browser -> {"type": "ping"}                          answered with {"type": "pong"}
    server  -> {"type": "watching", "watchlists": [...], "instruments": [...]}
    server  -> {"type": "event", "event": {...}}         built once by feeds.broadcast
    server  -> {"type": "error", "error": code, "detail": text}
    server  -> {"type": "revoked", "reason": text}        access changed: resync, show the reason
    server  -> {"type": "access_ended", "code": n, "reason": text}   then close with that code:
               4401 the session ended (logout, expiry, password changed), 4403 account deactivated.
               The browser must not reconnect blindly after these (the reason is in the frame as
               well as the close: Daphne 4.2 drops close reasons).
"""

from __future__ import annotations

import json
import logging

from autobahn.exception import Disconnected  # what Daphne's WebSocket protocol raises on a closed socket
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from feeds import metrics
from feeds.broadcast import FORWARD_TYPE
from feeds.groups import audience_group, feed_health_group, instrument_group, user_group

from .selectors import audiences_for_user, session_digest, session_user_get, watch_request_authorise

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024
MAX_WATCHLISTS = 200
CLOSE_TOO_BIG = 1009
# Why a socket is closed for auth reasons (session_user_get's answers): the close code, and the text the
# page shows. 44xx: "like HTTP 401/403", in the range RFC 6455 leaves to applications.
CLOSE_SESSION_ENDED, CLOSE_DEACTIVATED = 4401, 4403
ACCESS_ENDED = {
    "signed_out": (CLOSE_SESSION_ENDED, "Signed out."),
    "password_changed": (CLOSE_SESSION_ENDED, "Signed out: the password was changed."),
    "deactivated": (CLOSE_DEACTIVATED, "Your access changed: this account was deactivated."),
}


def _id_list(value) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_WATCHLISTS
            and all(isinstance(i, int) and not isinstance(i, bool) for i in value))


class StreamConsumer(AsyncWebsocketConsumer):
    # Metrics (feeds/metrics.py): sockets open in this process, and forwarded frames sent or dropped.
    counted_open = False
    closing = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            log.warning("websocket refused: not authenticated (client %s)", self.scope.get("client"))
            metrics.WEBSOCKET_CONNECTIONS.labels("refused").inc()
            await self.close()
            return
        self.user = user
        # Re-validated on every revoke and ping: an open socket must not outlive its session.
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None) or ""
        self.session_digest = session_digest(session_key=self.session_key)
        self.staff = user.is_staff
        self.watchlists: set[int] = set()
        self.singles: set[int] = set()  # instruments watched one by one (the instrument page)
        self.instruments: set[int] = set()
        self.audiences: set[str] = set()
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        if self.staff:  # the feed health page (staff only) listens on the same socket
            await self.channel_layer.group_add(feed_health_group(), self.channel_name)
        await self._apply_audiences()
        await self.accept()
        self.counted_open = True
        metrics.WEBSOCKETS_OPEN.inc()
        metrics.WEBSOCKET_CONNECTIONS.labels("accepted").inc()

    async def close(self, code=None, reason=None) -> None:
        self.closing = True
        await super().close(code, reason)

    async def __call__(self, scope, receive, send) -> None:
        # Here rather than in disconnect(): the gauge comes down however the consumer ends
        # (disconnect, an exception, cancellation at shutdown).
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.counted_open:
                self.counted_open = False
                metrics.WEBSOCKETS_OPEN.dec()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "user"):
            await self._leave_all_groups()

    async def _leave_all_groups(self) -> None:
        for instrument_id in self.instruments:
            await self.channel_layer.group_discard(instrument_group(instrument_id), self.channel_name)
        for audience in self.audiences:
            await self.channel_layer.group_discard(audience_group(audience), self.channel_name)
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
        await self.channel_layer.group_discard(feed_health_group(), self.channel_name)
        self.instruments, self.audiences = set(), set()

    async def dispatch(self, message: dict) -> None:
        # Hot path: a broadcast event is forwarded as the text it was built as. Channels'
        # stock dispatch first hops to a thread to close stale DB connections; this handler
        # never touches the ORM, so it skips that hop (notes/performance.md, section 4.6).
        if message["type"] == FORWARD_TYPE:
            await self.forward_text(message)
            return
        await super().dispatch(message)

    async def forward_text(self, message: dict) -> None:
        if self.closing:  # we closed the socket; the server would discard the frame unseen
            metrics.SOCKET_SEND_DROPS.labels("closing").inc()
            return
        if await self._send_unless_gone(message["text"]):
            metrics.WEBSOCKET_FRAMES_SENT.inc()

    async def _send_unless_gone(self, text: str) -> bool:
        """Send a frame; False if the browser had already gone. A broadcast can reach a socket the
        browser closed a moment ago, before the server has told us: Daphne's WebSocket library then
        raises on send. That is a drop, counted, not an application error."""
        try:
            await self.send(text_data=text)
        except (Disconnected, ConnectionError):
            metrics.SOCKET_SEND_DROPS.labels("send_error").inc()
            return False
        return True

    async def access_revoke(self, message: dict) -> None:
        """The user's access changed (dashboard.services.user_access_revoke): re-validate, then resync."""
        if self.closing:
            return
        ended = message.get("ended_session") or ""
        if await self._recheck(session_ended=bool(ended) and ended == self.session_digest):
            await self._reply({"type": "revoked", "reason": message.get("reason") or ""})

    async def _recheck(self, *, session_ended: bool = False) -> bool:
        """Close the socket if its session no longer logs the user in; else make its groups match
        what the user may see now. False if closed."""
        user, why = (None, "signed_out") if session_ended else await database_sync_to_async(session_user_get)(
            session_key=self.session_key, user_id=self.user.pk)
        if user is None:
            await self._end_access(why)
            return False
        self.user = user  # fresh: is_staff, is_active as they are now
        if self.staff != user.is_staff:
            change = self.channel_layer.group_add if user.is_staff else self.channel_layer.group_discard
            await change(feed_health_group(), self.channel_name)
            self.staff = user.is_staff
        await self._apply_audiences()
        await self._apply_watch(self.watchlists, self.singles)
        return True

    async def _end_access(self, why: str) -> None:
        """Leave every group first (nothing more reaches this socket), say why, then close."""
        code, reason = ACCESS_ENDED[why]
        log.info("websocket user %s closed: %s", self.user.pk, why)
        await self._leave_all_groups()
        await self._reply({"type": "access_ended", "code": code, "reason": reason})
        await self.close(code=code, reason=reason)

    # -- browser messages -----------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:  # e.g. a watch request racing our close for an ended session: not answered
            return
        if text_data is None:
            await self._error("bad_request", "send JSON text frames")
            return
        if len(text_data.encode("utf-8")) > MAX_MESSAGE_BYTES:
            log.warning("websocket user %s: message over %d bytes refused", self.user.pk, MAX_MESSAGE_BYTES)
            await self._error("too_large", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error("bad_json", "the message is not valid JSON")
            return
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error("bad_request", "expected an object with a string 'type'")
            return
        handler = {"watch": self._receive_watch, "ping": self._receive_ping}.get(content["type"])
        if handler is None:
            await self._error("unknown_type", "supported types: watch, ping")
            return
        await handler(content)

    async def _receive_ping(self, content: dict) -> None:
        # The session and memberships are re-checked on every ping too: the fallback for a revoke lost
        # on the layer, and how an expired session ends.
        if await self._recheck():
            await self._reply({"type": "pong"})

    async def _receive_watch(self, content: dict) -> None:
        lists, singles = content.get("watchlists", []), content.get("instruments", [])
        if not (_id_list(lists) and _id_list(singles)):
            await self._error("bad_request", f"'watchlists' and 'instruments' must be lists of at most "
                                             f"{MAX_WATCHLISTS} integer ids")
            return
        refused_lists, refused_singles = await self._apply_watch(set(lists), set(singles))
        if refused_lists or refused_singles:
            log.warning("websocket user %s: watch refused for watchlists %s instruments %s",
                        self.user.pk, sorted(refused_lists), sorted(refused_singles))
            await self._error("forbidden", f"not allowed: watchlists {sorted(refused_lists)}"
                                           f" instruments {sorted(refused_singles)}")
        await self._reply(
            {"type": "watching", "watchlists": sorted(self.watchlists), "instruments": sorted(self.instruments)}
        )

    async def _apply_watch(self, lists: set[int], singles: set[int] = frozenset()) -> tuple[set[int], set[int]]:
        """Authorise the request now and make the socket's groups match. Returns the refused ids."""
        allowed_instruments, refused_lists, refused_singles = await database_sync_to_async(watch_request_authorise)(
            user=self.user, watchlist_ids=lists, instrument_ids=set(singles)
        )
        for gone in self.instruments - allowed_instruments:
            await self.channel_layer.group_discard(instrument_group(gone), self.channel_name)
        for new in allowed_instruments - self.instruments:
            await self.channel_layer.group_add(instrument_group(new), self.channel_name)
        self.watchlists = lists - refused_lists
        self.singles = set(singles) - refused_singles
        self.instruments = allowed_instruments
        return refused_lists, refused_singles

    async def _apply_audiences(self) -> None:
        """Team alerts (e.g. TrendSpottr's) reach a socket through its user's teams' audiences."""
        allowed = await database_sync_to_async(audiences_for_user)(user=self.user)
        for gone in self.audiences - allowed:
            await self.channel_layer.group_discard(audience_group(gone), self.channel_name)
        for new in allowed - self.audiences:
            await self.channel_layer.group_add(audience_group(new), self.channel_name)
        self.audiences = allowed

    async def _reply(self, content: dict) -> None:
        await self._send_unless_gone(json.dumps(content))

    async def _error(self, code: str, detail: str) -> None:
        await self._reply({"type": "error", "error": code, "detail": detail})
