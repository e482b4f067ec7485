"""The browser's WebSocket: authenticate, authorise every watch request, forward events.

Protocol (JSON text frames):
    browser -> {"type": "watch", "watchlists": [ids], "instruments": [ids],
                "since": {stream: {"epoch": e, "seq": n}}}          replaces what it watches; since optional
    browser -> {"type": "ping"}                          answered with {"type": "pong"}
    server  -> {"type": "watching", "watchlists": [...], "instruments": [...],
                "streams": {stream: {"epoch": e, "seq": n, "recovered": bool}}}
               Every stream (instrument.<id>, audience.<key>) the socket now receives, at the position
               its subscription took effect. recovered: the events since `since` follow at once, before
               any live one; else the browser takes its snapshot now (subscribe first, then snapshot) and
               ignores events up to `seq`.
    server  -> {"type": "event", "stream": s, "epoch": e, "seq": n, "event": {...}}   built once by
               feeds.livestore; seq grows by 1 per event of the stream: a jump is a gap to recover.
    server  -> {"type": "skip", "stream": s, "seqs": [n, ...]}   left out on purpose for a slow socket
               (superseded quotes/bars): not a gap
    server  -> {"type": "gap", "stream": s, "seq": n}   a slow socket's queue dropped events of s up to n:
               recover (watch with since), as for a seq jump
    server  -> {"type": "error", "error": code, "detail": text}
    server  -> {"type": "revoked", "reason": text}        access changed: resync, show the reason
    server  -> {"type": "access_ended", "code": n, "reason": text}   then close with that code:
               4401 the session ended (logout, expiry, password changed), 4403 account deactivated.
               The browser must not reconnect blindly after these (the reason is in the frame as
               well as the close: Daphne 4.2 drops close reasons).
    server  -> {"type": "feed_status", ...}, {"type": "watchlist_changed", ...}   unsequenced notices
Frames reach the socket through this process' hub (feeds/hub.py) and the socket's bounded sink
(feeds/sinks.py); the consumer has no channel-layer inbox of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected  # what Daphne's WebSocket protocol raises on a closed socket
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.cookie import parse_cookie

from feeds import metrics
from feeds.broadcast import REVOKE_TYPE
from feeds.db import live_connection
from feeds.groups import audience_group, feed_health_group, instrument_group, user_group
from feeds.hub import HubUnavailable, get_hub
from feeds.livestore import Position
from feeds.sinks import Frame, writer_for

from .selectors import session_digest, socket_access_get, socket_audiences_get, watch_request_authorise

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024
MAX_WATCHLISTS = 200
MAX_SINCE = 1000
CLOSE_TOO_BIG = 1009
# The live subscription failed: reconnect later (live.js' backoff) and recover. "Like HTTP 503", in the
# application range: autobahn lets a server close with 1000 or 3000-4999 only.
CLOSE_TRY_AGAIN = 4503
# Why a socket is closed for auth reasons (session_user_get's answers): the close code, and the text the
# page shows. 44xx: "like HTTP 401/403", in the range RFC 6455 leaves to applications.
CLOSE_SESSION_ENDED, CLOSE_DEACTIVATED = 4401, 4403
ACCESS_ENDED = {
    "signed_out": (CLOSE_SESSION_ENDED, "Signed out."),
    "password_changed": (CLOSE_SESSION_ENDED, "Signed out: the password was changed."),
    "deactivated": (CLOSE_DEACTIVATED, "Your access changed: this account was deactivated."),
}


def _on_db_thread(func):
    """`func` (a read) on the database thread, on a connection kept across calls (feeds/db.py).

    Not channels' database_sync_to_async: it closes the thread's connection before and after every
    call when CONN_MAX_AGE is 0, so each socket opened one or more database connections (a quarter
    of the server's time connecting 1000 sockets on SQLite, a backend fork each on PostgreSQL).
    live_connection still replaces a connection that broke (or outlived a positive CONN_MAX_AGE)
    and repeats the read once."""
    return sync_to_async(live_connection(func), thread_sensitive=True)


_access_get = _on_db_thread(socket_access_get)
_audiences_get = _on_db_thread(socket_audiences_get)
_watch_authorise = _on_db_thread(watch_request_authorise)


def _session_key(scope) -> str:
    """The session cookie, read as channels' CookieMiddleware reads it (the first Cookie header)."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME, "")
    return ""


def _id_list(value) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_WATCHLISTS
            and all(isinstance(i, int) and not isinstance(i, bool) for i in value))


def _since(value) -> dict[str, Position] | None:
    """The browser's positions, {stream: {"epoch": str, "seq": int}}; None if malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_SINCE:
        return None
    out = {}
    for stream, position in value.items():
        if not (isinstance(position, dict) and isinstance(position.get("epoch"), str)
                and isinstance(position.get("seq"), int) and not isinstance(position.get("seq"), bool)
                and 0 <= position["seq"] < 2**63 and len(position["epoch"]) <= 64):  # Redis stream ids are 64-bit
            return None
        out[stream] = Position(position["epoch"], position["seq"])
    return out


class StreamConsumer(AsyncWebsocketConsumer):
    """Authenticates the socket itself (project/asgi.py routes it without channels' session and auth
    middleware): one database trip reads the session and the user, a second (once it has joined the
    user's group, so no membership change is missed) the user's teams, and the socket then
    keeps plain values (user id, staff flag, session key, ids) rather than the session, the user's
    model instance and three copies of the scope, for as long as it is open."""

    # No channel-layer inbox per socket: the process' hub writes to the socket's sink.
    channel_layer_alias = "tickerwire.no-layer"
    # Metrics (feeds/metrics.py): sockets open in this process, and forwarded frames sent or dropped.
    counted_open = False
    closing = False
    sink = None
    user_id = None
    # What the socket watches, as sorted tuples: a small set costs 216 bytes, a tuple of one id 48,
    # and these live as long as the socket (issue 11; measured with bench/fanout.py).
    watchlists = singles = instruments = audiences = ()
    _tasks = ()
    _access: asyncio.Lock | None = None
    _access_users = 0

    async def connect(self) -> None:
        # Re-validated on every revoke and ping: an open socket must not outlive its session.
        self.session_key = _session_key(self.scope)
        user_id, staff, _, _ = await _access_get(session_key=self.session_key, audiences=False)
        if user_id is None:
            log.warning("websocket refused: not authenticated (client %s)", self.scope.get("client"))
            metrics.WEBSOCKET_CONNECTIONS.labels("refused").inc()
            await self.close()
            return
        self.user_id, self.staff = user_id, staff
        await self.accept()
        self.counted_open = True
        metrics.WEBSOCKETS_OPEN.inc()
        metrics.WEBSOCKET_CONNECTIONS.labels("accepted").inc()
        self.hub = await get_hub()
        writer = writer_for(self.base_send, buffer_bytes=settings.LIVE_SOCKET_BUFFER_BYTES,
                            kernel_bytes=settings.LIVE_SOCKET_KERNEL_BUFFER_BYTES)
        self.sink = self.hub.sink(writer, on_control=self._control, on_lost=self._lost)
        try:
            async with self._access_change():  # a revoke arriving meanwhile waits for this to finish
                await self.hub.join(self.sink, [user_group(user_id)] + ([feed_health_group()] if staff else []))
                # The teams are read once the user's group is joined: a membership change made from
                # now on reaches this socket as a revoke, and one made before is in what is read.
                await self._apply_audiences(await _audiences_get(user_id=user_id))
        except HubUnavailable:
            await self.close(code=CLOSE_TRY_AGAIN)

    async def dispatch(self, message) -> None:
        # As AsyncConsumer.dispatch, without its close_old_connections() before every message: that
        # is a trip to the database thread per connect, watch request and ping, for handlers that
        # reach the database only through _on_db_thread, which looks after its connection itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        # As AsyncWebsocketConsumer's, without the channel-layer groups (there are none) and the
        # close_old_connections() trip (see dispatch).
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def close(self, code=None, reason=None) -> None:
        self.closing = True
        if self.sink is not None:
            self.sink.close()  # what still arrives until the disconnect is a counted drop
        await super().close(code, reason)

    async def __call__(self, scope, receive, send) -> None:
        # Here rather than in disconnect(): the gauge comes down and the sink leaves the hub however
        # the consumer ends (disconnect, an exception, cancellation at shutdown).
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.sink is not None:
                self.hub.drop(self.sink)
            for task in getattr(self, "_tasks", ()):
                task.cancel()
            if self.counted_open:
                self.counted_open = False
                metrics.WEBSOCKETS_OPEN.dec()

    @contextlib.asynccontextmanager
    async def _access_change(self):
        """One access change at a time (watch requests, revokes, pings). The lock exists only while
        one is under way or waiting: kept, it cost an idle socket 350 bytes."""
        if self._access is None:
            self._access = asyncio.Lock()
        lock = self._access
        self._access_users += 1
        try:
            async with lock:
                yield
        finally:
            self._access_users -= 1
            if not self._access_users:
                self._access = None

    def _streams(self) -> list[str]:
        return sorted(instrument_group(i) for i in self.instruments) + sorted(audience_group(a) for a in self.audiences)

    def _leave_all_groups(self) -> None:
        self.hub.drop(self.sink)
        self.instruments, self.audiences = (), ()

    # -- from the hub (plain callbacks: they must not block the fan-out) ---------------------------
    def _control(self, message: dict) -> None:
        if message.get("type") == REVOKE_TYPE:
            self._spawn(self.access_revoke(message))

    def _lost(self) -> None:
        self._spawn(self.close(code=CLOSE_TRY_AGAIN))

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        if not self._tasks:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_unless_gone(self, text: str) -> bool:
        """Send a frame; False if the browser had already gone. A reply can be meant for a socket the
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
        async with self._access_change():
            if await self._recheck(session_ended=bool(ended) and ended == session_digest(session_key=self.session_key)):
                await self._reply({"type": "revoked", "reason": message.get("reason") or ""})

    async def _recheck(self, *, session_ended: bool = False) -> bool:
        """Close the socket if its session no longer logs the user in; else make its groups match
        what the user may see now. False if closed."""
        user_id, staff, audiences, why = (None, False, (), "signed_out") if session_ended else (
            await _access_get(session_key=self.session_key, user_id=self.user_id))
        if user_id is None:
            await self._end_access(why)
            return False
        if self.staff != staff:  # fresh: is_staff as it is now
            if staff:
                await self.hub.join(self.sink, [feed_health_group()])
            else:
                self.hub.leave(self.sink, [feed_health_group()])
            self.staff = staff
        await self._apply_audiences(audiences)
        await self._apply_watch(set(self.watchlists), set(self.singles))
        return True

    async def _end_access(self, why: str) -> None:
        """Leave every group first (nothing more reaches this socket), say why, then close."""
        code, reason = ACCESS_ENDED[why]
        log.info("websocket user %s closed: %s", self.user_id, why)
        self._leave_all_groups()
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
            log.warning("websocket user %s: message over %d bytes refused", self.user_id, MAX_MESSAGE_BYTES)
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
        try:
            async with self._access_change():
                await handler(content)
        except HubUnavailable:
            await self.close(code=CLOSE_TRY_AGAIN)

    async def _receive_ping(self, content: dict) -> None:
        # The session and memberships are re-checked on every ping too: the fallback for a revoke lost
        # on the way, and how an expired session ends.
        if await self._recheck():
            await self._reply({"type": "pong"})

    async def _receive_watch(self, content: dict) -> None:
        lists, singles = content.get("watchlists", []), content.get("instruments", [])
        since = _since(content.get("since"))
        if not (_id_list(lists) and _id_list(singles)) or since is None:
            await self._error("bad_request", f"'watchlists' and 'instruments' must be lists of at most "
                                             f"{MAX_WATCHLISTS} integer ids; 'since' maps streams to "
                                             "{epoch, seq}")
            return
        # Held from the subscription until the answer and the recovered history are out: each stream
        # then reaches the browser in seq order, once.
        self.sink.hold()
        first, frames, upto = None, [], {}
        try:
            refused_lists, refused_singles = await self._apply_watch(set(lists), set(singles))
            if refused_lists or refused_singles:
                log.warning("websocket user %s: watch refused for watchlists %s instruments %s",
                            self.user_id, sorted(refused_lists), sorted(refused_singles))
                await self._error("forbidden", f"not allowed: watchlists {sorted(refused_lists)}"
                                               f" instruments {sorted(refused_singles)}")
            streams = self._streams()
            recoveries = await self.hub.read(streams, {s: p for s, p in since.items() if s in streams})
            answer = {}
            for stream, recovery in recoveries.items():
                position = recovery.position
                answer[stream] = {"epoch": position.epoch, "seq": position.seq, "recovered": recovery.frames is not None}
                upto[stream] = position.seq
                frames += [Frame(stream, seq, "", text.encode()) for seq, text in recovery.frames or ()]
            first = Frame.text_frame(json.dumps({
                "type": "watching", "watchlists": sorted(self.watchlists), "instruments": sorted(self.instruments),
                "streams": answer}))
        except HubUnavailable:
            raise
        except Exception as exc:  # Redis failed between subscribe and read: the browser retries
            log.warning("websocket user %s: watch failed (%s: %s)", self.user_id, type(exc).__name__, exc)
            raise HubUnavailable(str(exc)) from exc
        finally:
            self.sink.release(first, frames, upto)

    async def _apply_watch(self, lists: set[int], singles: set[int] = frozenset()) -> tuple[set[int], set[int]]:
        """Authorise the request now and make the socket's groups match. Returns the refused ids."""
        allowed_instruments, refused_lists, refused_singles = await _watch_authorise(
            user_id=self.user_id, watchlist_ids=lists, instrument_ids=set(singles)
        )
        current = set(self.instruments)
        self.hub.leave(self.sink, [instrument_group(gone) for gone in current - allowed_instruments])
        await self.hub.join(self.sink, [instrument_group(new) for new in allowed_instruments - current])
        self.watchlists = tuple(sorted(lists - refused_lists))
        self.singles = tuple(sorted(set(singles) - refused_singles))
        self.instruments = tuple(sorted(allowed_instruments))
        return refused_lists, refused_singles

    async def _apply_audiences(self, allowed: set[str]) -> None:
        """Team alerts (e.g. TrendSpottr's) reach a socket through its user's teams' audiences
        (socket_access_get's, read with the session)."""
        allowed, current = set(allowed), set(self.audiences)
        self.hub.leave(self.sink, [audience_group(gone) for gone in current - allowed])
        await self.hub.join(self.sink, [audience_group(new) for new in allowed - current])
        self.audiences = tuple(sorted(allowed))

    async def _reply(self, content: dict) -> None:
        await self._send_unless_gone(json.dumps(content))

    async def _error(self, code: str, detail: str) -> None:
        await self._reply({"type": "error", "error": code, "detail": detail})
