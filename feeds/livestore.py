"""Where live events are numbered, kept for recovery, and passed between processes.

Every browser-bound event belongs to a *stream* (a group name: `instrument.7`, `audience.team-3`).
Publishing one event, atomically, in Redis (a Lua script, so publishers never interleave):
  1. takes the stream's next sequence number (`seq`, +1 per event) under its `epoch` (a random
     string made when the stream's position is first needed, or found written by another Redis
     server, as after a failover; a new epoch means "history reset");
  2. builds the exact text browsers receive, `{"type":"event","stream":…,"epoch":…,"seq":…,"event":…}`;
  3. appends it to the stream's history (a Redis Stream, entry id `<seq>-0`, at most
     LIVE_HISTORY_SIZE entries, expiring LIVE_HISTORY_SECONDS after the last event: Centrifugo's
     bounded history, the model for recovery after a short disconnect);
  4. PUBLISHes it, with a one-line header the hub reads (`<seq> <conflation key>`), on the
     stream's pub/sub channel. Each server process subscribes once per stream (feeds/hub.py).
A batch of events is one script call: one round trip per batch, not per event. A stream's position
expires 12 history lifetimes after its last use (a stream that comes back later starts a new epoch,
and its browsers take a snapshot).

Unsequenced frames (feed health, notices) and control messages (access revoked) travel on the
same channels with the headers `- -` and `! -`.

`LocalLive` does the same in this process, for the embedded default (no Redis).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

import redis.exceptions

from project.redisclient import PerLoop, RedisTarget

__all__ = ["Outgoing", "Position", "Recovery", "RedisLive", "LocalLive", "event_frame_text",
           "HEADER_TEXT", "HEADER_CONTROL"]

HEADER_TEXT = b"- -"  # an unsequenced frame: forwarded as it is
HEADER_CONTROL = b"! -"  # a message for the consumer itself (JSON), never forwarded


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One thing to publish on `stream`.

    sequenced (the default): `body` is the event's JSON object; it gets a seq and goes to history.
    Otherwise `body` is a whole frame text (header `- -`) or, with control=True, a JSON message
    for the consumers (header `! -`)."""

    stream: str
    body: str
    key: str = "-"  # conflation key: a newer frame with the same (stream, key) supersedes it
    sequenced: bool = True
    control: bool = False


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """A stream's position when read, and the frames after `since` (None: history does not reach)."""

    position: Position
    frames: list[tuple[int, str]] | None


def event_frame_text(stream: str, epoch: str, seq: int, body: str) -> str:
    # Kept byte-for-byte equal to the Lua script's concatenation (tests compare the two).
    return f'{{"type":"event","stream":"{stream}","epoch":"{epoch}","seq":{seq},"event":{body}}}'


# Both scripts start here. A stream's position is valid only on the server that wrote it, so the
# server's run_id (new at every start) is kept beside the epoch. After a Sentinel failover the new
# primary holds the old one's positions as far as asynchronous replication got: it may lack the
# last entries browsers already have, and numbering on from there would give a new event a seq a
# browser holds for another one (it would drop it as a duplicate, silently). A position another
# server wrote (a promoted replica, a restart from a dump) is dropped with its history instead: a
# new epoch starts and browsers take their snapshot.
_POSITION = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local function position(pos, hist, candidate)
  local held = redis.call('HMGET', pos, 'epoch', 'run')
  if held[1] and held[2] == run then
    return held[1]
  end
  redis.call('DEL', pos, hist)
  redis.call('HSET', pos, 'epoch', candidate, 'run', run)
  return candidate
end
"""

# KEYS: per sequenced item, its position hash and its history stream.
# ARGV: maxlen, ttl ms, epoch candidate, then per item: channel, stream, key, body, mode
# (mode "s" sequenced, "t" text, "c" control; unsequenced items have no KEYS). The last KEY names
# the batch: redis-py re-sends a command whose connection broke before the reply, and a script
# that ran already must not number and publish the batch again, so it answers what it did.
_PUBLISH = _POSITION + """
local batch = KEYS[#KEYS]
local done = redis.call('GET', batch)
if done then return cjson.decode(done) end
local maxlen, ttl, candidate = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local seqs, k = {}, 1
for i = 4, #ARGV, 5 do
  local channel, stream, key, body, mode = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if mode == 's' then
    local pos, hist = KEYS[k], KEYS[k + 1]
    k = k + 2
    local epoch = position(pos, hist, candidate)
    local seq = redis.call('HINCRBY', pos, 'seq', 1)
    local text = '{"type":"event","stream":"' .. stream .. '","epoch":"' .. epoch .. '","seq":' .. seq ..
      ',"event":' .. body .. '}'
    redis.call('XADD', hist, 'MAXLEN', '~', maxlen, seq .. '-0', 't', text)
    redis.call('PEXPIRE', hist, ttl)
    redis.call('PEXPIRE', pos, ttl * 12)
    redis.call('PUBLISH', channel, seq .. ' ' .. key .. '\\n' .. text)
    seqs[#seqs + 1] = seq
  else
    redis.call('PUBLISH', channel, (mode == 'c' and '! -' or '- -') .. '\\n' .. body)
    seqs[#seqs + 1] = 0
  end
end
redis.call('SET', batch, cjson.encode(seqs), 'PX', 60000)
return seqs
"""

# KEYS: per stream, its position hash and its history stream.
# ARGV: ttl ms, epoch candidate, count, then per stream the seq after which its history is
# wanted ("" for none). Returns per stream {epoch, seq, entries}: one script, so nothing falls
# between a position and the history read with it.
_READ = _POSITION + """
local ttl, candidate, count = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS, 2 do
  local pos, hist = KEYS[i], KEYS[i + 1]
  local epoch = position(pos, hist, candidate)
  redis.call('PEXPIRE', pos, ttl * 12)
  local since, entries = ARGV[3 + (i + 1) / 2], {}
  if since ~= '' then
    entries = redis.call('XRANGE', hist, '(' .. since .. '-0', '+', 'COUNT', count)
  end
  out[#out + 1] = {epoch, redis.call('HGET', pos, 'seq') or '0', entries}
end
return out
"""


class _Script:
    def __init__(self, text: str) -> None:
        self.text, self.sha = text, hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, client, keys: list[str], args: list):
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # a new primary, a restart, SCRIPT FLUSH: EVAL caches it
            return await client.eval(self.text, len(keys), *keys, *args)


_publish_script, _read_script = _Script(_PUBLISH), _Script(_READ)


class RedisLive:
    def __init__(self, *, target: RedisTarget | None = None, url: str = "", prefix: str, history_size: int,
                 history_seconds: float, connection: dict, send_timeout: float) -> None:
        self.target = target or RedisTarget(url=url)
        self.prefix = prefix
        self.history_size, self.history_ms = history_size, int(history_seconds * 1000)
        # Publishers and readers never block-read: their socket timeout is the send bound.
        options = {**connection, "socket_timeout": send_timeout}
        self._clients = PerLoop(lambda: self.target.client(**options))
        self._subscriber_options = connection

    def channel(self, stream: str) -> str:
        return f"{self.prefix}:live:{stream}"

    def stream_of(self, channel: str) -> str:
        return channel[len(self.prefix) + 6:]

    def _keys(self, stream: str) -> list[str]:
        return [f"{self.prefix}:live-pos:{stream}", f"{self.prefix}:live-hist:{stream}"]

    async def publish(self, items: list[Outgoing]) -> list[int]:
        """Publish `items` in order, in one round trip. Returns each item's seq (0: unsequenced)."""
        if not items:
            return []
        keys, argv = [], [self.history_size, self.history_ms, secrets.token_hex(4)]
        for item in items:
            mode = "s" if item.sequenced else ("c" if item.control else "t")
            if mode == "s":
                keys += self._keys(item.stream)
            argv += [self.channel(item.stream), item.stream, item.key, item.body, mode]
        keys.append(f"{self.prefix}:live-batch:{secrets.token_hex(12)}")
        return await _publish_script(self._clients.get(), keys, argv)

    async def read(self, streams: list[str], since: dict[str, Position]) -> dict[str, Recovery]:
        """Each stream's position (made if new, or renewed if another server wrote it) and, where
        `since` names it under the same epoch, the history after it, atomically."""
        keys, argv = [], [self.history_ms, secrets.token_hex(4), self.history_size + 1]
        for stream in streams:
            keys += self._keys(stream)
            argv.append(since[stream].seq if stream in since else "")
        replies = await _read_script(self._clients.get(), keys, argv)
        out = {}
        for stream, (epoch, seq, entries) in zip(streams, replies):
            position = Position(epoch.decode(), int(seq))
            frames = None
            if stream in since:
                # Each entry is [b"<seq>-0", [b"t", text]].
                frames = _reaching(since[stream], position,
                                   [(int(eid.split(b"-")[0]), fields[1].decode()) for eid, fields in entries])
            out[stream] = Recovery(position, frames)
        return out

    async def ping(self) -> None:
        await self._clients.get().ping()

    def subscription(self, deliver) -> RedisSubscription:
        return RedisSubscription(self, deliver)


def _reaching(since: Position, position: Position, entries: list[tuple[int, str]]) -> list | None:
    """The entries that take a browser from `since` to `position`, or None if there is a hole."""
    if since.epoch != position.epoch or since.seq > position.seq:
        return None
    if since.seq == position.seq:
        return []
    if not entries or entries[0][0] != since.seq + 1:
        return None
    return [entry for entry in entries if entry[0] <= position.seq]


class RedisSubscription:
    """This process' one pub/sub connection. `run()` passes each message to `deliver(stream, payload)`
    until the connection fails (then raises); subscribe() returns once Redis confirmed, so every
    later PUBLISH arrives."""

    def __init__(self, live: RedisLive, deliver) -> None:
        self._live, self._deliver = live, deliver
        options = {k: v for k, v in live._subscriber_options.items() if k not in ("socket_timeout", "retry",
                                                                                   "retry_on_error")}
        # No read timeout: the connection idles between events. A dead link is found by the
        # keepalive options and by run()'s periodic PING.
        self._client = live.target.client(socket_timeout=None, **options)
        self._pubsub = self._client.pubsub()
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._connected = asyncio.Event()  # redis-py reads only once a first SUBSCRIBE made the connection

    async def subscribe(self, streams: list[str]) -> None:
        loop = asyncio.get_running_loop()
        waits = []
        for stream in streams:
            channel = self._live.channel(stream)
            future = loop.create_future()
            self._pending.setdefault(channel, []).append(future)
            waits.append(future)
        await self._pubsub.subscribe(*(self._live.channel(s) for s in streams))
        self._connected.set()
        await asyncio.gather(*waits)

    async def unsubscribe(self, streams: list[str]) -> None:
        await self._pubsub.unsubscribe(*(self._live.channel(s) for s in streams))

    @property
    def server(self) -> str:
        """host:port this subscription is connected to (through Sentinel: the primary it found)."""
        connection = self._pubsub.connection
        return f"{connection.host}:{connection.port}" if connection is not None else "-"

    async def run(self, *, ping_every: float = 30.0) -> None:
        stream_of, deliver = self._live.stream_of, self._deliver
        await self._connected.wait()
        last = time.monotonic()
        while True:
            message = await self._pubsub.get_message(timeout=ping_every)
            if message is None:
                if time.monotonic() - last >= ping_every:
                    await self._pubsub.ping()  # a half-open link raises here instead of idling forever
                    last = time.monotonic()
                continue
            last = time.monotonic()
            kind = message["type"]
            if kind == "message":
                deliver(stream_of(message["channel"].decode()), message["data"])
            elif kind == "subscribe":
                waiting = self._pending.get(message["channel"].decode())
                if waiting:
                    future = waiting.pop(0)
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        for waiting in self._pending.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(ConnectionError("subscription closed"))
        self._pending.clear()
        try:
            await self._pubsub.aclose()
        finally:
            await self._client.aclose()


class LocalLive:
    """The same contract in this process (the embedded default): history in memory, delivery to
    every hub of the process on its own loop."""

    def __init__(self, *, history_size: int, history_seconds: float) -> None:
        self.history_size, self.history_seconds = history_size, history_seconds
        self._lock = threading.Lock()
        self._positions: dict[str, Position] = {}
        self._history: dict[str, deque] = {}
        self._hubs: dict[object, tuple[asyncio.AbstractEventLoop, object]] = {}  # subscription -> (loop, deliver)

    def _position(self, stream: str) -> Position:
        if stream not in self._positions:
            self._positions[stream] = Position(secrets.token_hex(4), 0)
            self._history[stream] = deque(maxlen=self.history_size)
        return self._positions[stream]

    async def publish(self, items: list[Outgoing]) -> list[int]:
        seqs, sends = [], []
        with self._lock:
            now = time.monotonic()
            for item in items:
                if not item.sequenced:
                    seqs.append(0)
                    sends.append((item.stream, (HEADER_CONTROL if item.control else HEADER_TEXT) + b"\n" +
                                  item.body.encode()))
                    continue
                old = self._position(item.stream)
                position = self._positions[item.stream] = Position(old.epoch, old.seq + 1)
                text = event_frame_text(item.stream, position.epoch, position.seq, item.body)
                history = self._history[item.stream]
                if history and now - history[-1][2] > self.history_seconds:
                    history.clear()  # expired, as the Redis history does after its TTL
                history.append((position.seq, text, now))
                seqs.append(position.seq)
                sends.append((item.stream, f"{position.seq} {item.key}\n{text}".encode()))
            hubs = list(self._hubs.values())
        for loop, deliver in hubs:
            for stream, payload in sends:
                if loop is _running_loop():
                    deliver(stream, payload)
                else:
                    loop.call_soon_threadsafe(deliver, stream, payload)
        return seqs

    async def read(self, streams: list[str], since: dict[str, Position]) -> dict[str, Recovery]:
        out = {}
        with self._lock:
            for stream in streams:
                position = self._position(stream)
                frames = None
                if stream in since:
                    entries = [(seq, text) for seq, text, _ in self._history[stream] if seq > since[stream].seq]
                    frames = _reaching(since[stream], position, entries)
                out[stream] = Recovery(position, frames)
        return out

    async def ping(self) -> None:
        return None

    def subscription(self, deliver) -> LocalSubscription:
        return LocalSubscription(self, deliver)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LocalSubscription:
    """Every stream at once: filtering happens in the hub, which only knows its own groups.
    Made on the hub's loop; receives from the moment it is made."""

    def __init__(self, live: LocalLive, deliver) -> None:
        self._live = live
        with live._lock:
            live._hubs[self] = (asyncio.get_running_loop(), deliver)

    async def subscribe(self, streams: list[str]) -> None:
        return None

    async def unsubscribe(self, streams: list[str]) -> None:
        return None

    server = "this process"

    async def run(self, **_) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        with self._live._lock:
            self._live._hubs.pop(self, None)
