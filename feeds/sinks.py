"""The bounded way from this process' hub to one browser socket.

A frame is written at once when the socket keeps up. When it does not (the kernel and Twisted
already hold LIVE_SOCKET_BUFFER_BYTES for it), frames wait in the sink's queue, bounded by
LIVE_SOCKET_QUEUE_FRAMES and LIVE_SOCKET_QUEUE_BYTES. Over the bound the queue first *conflates*
(an older quote, or an older update of the same bar, superseded by a newer one is removed; the
browser is told with a `skip` frame that names the seqs left out on purpose), then *drops* the
newest frames. Every removal is counted, per socket and in the metrics; a dropped frame is a gap the
browser notices by its seq, or by the `gap` frame sent once the queue has drained, and recovers
from the stream's history. A stalled browser only
ever costs its own queue: writing never waits, so nobody else's latency moves.

Under Daphne, frames go straight to the socket's transport, framed once per process
(autobahn's PreparedMessage) however many sockets get them. Under any other ASGI server (and
Channels' test communicator) they go through ASGI `send`.

An idle socket costs little here (issue 11; measured with bench/fanout.py): the objects have __slots__, and a
sink holds a queue only while frames wait.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
from collections import deque

from . import metrics

__all__ = ["Frame", "Sink", "writer_for", "daphne_protocol"]

log = logging.getLogger(__name__)
NO_FRAMES = ()  # a sink's queue while nothing waits (a deque costs ~600 bytes per socket)


class Frame:
    """One text frame for browsers, shared by every socket of this process that gets it."""

    __slots__ = ("stream", "seq", "key", "data", "_text", "_prepared")

    def __init__(self, stream: str, seq: int, key: str, data: bytes) -> None:
        self.stream, self.seq, self.key, self.data = stream, seq, key, data
        self._text: str | None = None
        self._prepared = None

    @classmethod
    def text_frame(cls, text: str) -> Frame:
        return cls("", 0, "", text.encode())

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.data.decode()
        return self._text

    def prepared(self, factory):
        if self._prepared is None:
            self._prepared = factory.prepareMessage(self.data, False)
        return self._prepared


def daphne_protocol(send):
    """Daphne's WebSocket protocol object behind an ASGI `send`, or None (another server, or `send`
    wrapped by a middleware: frames then go through ASGI). Daphne 4.2 passes
    `send=partial(server.handle_reply, protocol)` (daphne/server.py create_application; pinned by
    tests/feeds/test_sinks.py). Read from `send` rather than put in the scope by a middleware: that
    cost a copy of the scope and a suspended coroutine per open socket."""
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        if hasattr(protocol, "sendPreparedMessage") and hasattr(protocol, "transport"):
            return protocol
    return None


def _backlog(transport) -> int:
    """Bytes Twisted holds for this socket (twisted.internet.abstract.FileDescriptor's buffer)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # not a plain TCP transport (TLS in Daphne): nothing to read it from
        return 0


class ProtocolWriter:
    """Writes prepared frames to Daphne's protocol; ready while its transport's backlog is small.

    The kernel's send buffer is bounded too (`kernel_bytes`, SO_SNDBUF): Linux would otherwise grow
    it to tcp_wmem's maximum (4 MiB by default) for a browser that stopped reading."""

    __slots__ = ("protocol", "limit")

    def __init__(self, protocol, limit: int, kernel_bytes: int = 0) -> None:
        self.protocol, self.limit = protocol, limit
        if kernel_bytes:
            try:
                protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, kernel_bytes)
            except (AttributeError, OSError):  # not a TCP socket (TLS wrapper, a test transport)
                pass

    def ready(self) -> bool:
        protocol = self.protocol
        return protocol.state == protocol.STATE_OPEN and _backlog(protocol.transport) < self.limit

    def write(self, frame: Frame) -> None:
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return
        prepared = frame.prepared(protocol.factory)
        transport = protocol.transport
        sock = getattr(transport, "socket", None)
        # Nothing waiting anywhere (autobahn, Twisted): send now, as asyncio's own transports do,
        # instead of Twisted's buffer + add_writer + next-iteration send + remove_writer, which cost
        # three system calls and a loop turn per frame. What the kernel does not take goes through
        # Twisted as before, so order and backpressure hold. Any other transport (TLS): Twisted.
        if (sock is not None and not protocol.send_queue and transport.connected and not _backlog(transport)
                and not transport.disconnecting and protocol._perMessageCompress is None):
            data = prepared.payloadHybi
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the peer went away: Twisted's reader reports the loss
                return
            if sent < len(data):
                transport.write(data[sent:])
            return
        protocol.sendPreparedMessage(prepared)


class AsgiWriter:
    """Any ASGI server: one `websocket.send` per frame, in order (its own buffering is unbounded)."""

    __slots__ = ("send", "_tail")

    def __init__(self, send) -> None:
        self.send = send
        self._tail: asyncio.Future | None = None

    def ready(self) -> bool:
        return True

    def write(self, frame: Frame) -> None:
        previous = self._tail

        async def send_after() -> None:
            if previous is not None:
                await asyncio.shield(previous)
            try:
                await self.send({"type": "websocket.send", "text": frame.text})
            except Exception:  # the socket went away: the consumer's disconnect cleans up
                metrics.SOCKET_SEND_DROPS.labels("send_error").inc()

        self._tail = asyncio.ensure_future(send_after())


def writer_for(send, *, buffer_bytes: int, kernel_bytes: int = 0):
    protocol = daphne_protocol(send)
    return ProtocolWriter(protocol, buffer_bytes, kernel_bytes) if protocol is not None else AsgiWriter(send)


class Sink:
    """One socket's bounded queue. `held` (while a watch request is answered) keeps live frames
    queued until the answer and the recovered history have gone first."""

    __slots__ = ("writer", "max_frames", "max_bytes", "on_waiting", "on_control", "queue", "queued_bytes", "held",
                 "closed", "skipped", "gaps", "sent", "conflated", "dropped")

    def __init__(self, writer, *, max_frames: int, max_bytes: int, on_waiting=None, on_control=None) -> None:
        self.writer = writer
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.on_waiting = on_waiting  # called once when frames start waiting: the hub polls the writer
        self.on_control = on_control
        self.queue: deque[Frame] | tuple = NO_FRAMES  # a deque while frames wait
        self.queued_bytes = 0
        self.held = False
        self.closed = False
        self.skipped: dict[str, list[int]] = {}  # stream -> seqs conflated away, told before its next frame
        self.gaps: dict[str, int] = {}  # stream -> newest seq dropped, told once the queue drained
        self.sent = self.conflated = self.dropped = 0

    # -- from the hub ---------------------------------------------------------------------
    def offer(self, frame: Frame) -> None:
        if self.closed:  # the server closed the socket; the hub lets go of it at the disconnect
            metrics.SOCKET_SEND_DROPS.labels("closing").inc()
            return
        if not self.queue and not self.held and self.writer.ready():
            self._write(frame)
            return
        self._enqueue(frame)

    def control(self, message: dict) -> None:
        if not self.closed and self.on_control is not None:
            self.on_control(message)

    def flush(self) -> bool:
        """Write what the socket takes now. True when the queue is empty."""
        while self.queue and not self.held and not self.closed and self.writer.ready():
            frame = self.queue.popleft()
            self.queued_bytes -= len(frame.data)
            self._write(frame)
        if not self.queue:
            self.queue = NO_FRAMES  # let the deque go: most sockets are idle most of the time
        if not self.queue and self.gaps and not self.held and not self.closed:
            # Caught up: name what was dropped, so a browser notices a gap even on a stream where
            # nothing follows the drop.
            for stream, seq in self.gaps.items():
                self.writer.write(Frame.text_frame(json.dumps({"type": "gap", "stream": stream, "seq": seq},
                                                              separators=(",", ":"))))
            self.gaps.clear()
        return not self.queue

    # -- from the consumer ----------------------------------------------------------------
    def hold(self) -> None:
        self.held = True

    def release(self, first: Frame | None = None, frames: list[Frame] = (), upto: dict[str, int] | None = None) -> None:
        """Send `first` now (the answer to a watch request), then `frames` (history), then what was
        queued meanwhile, less what the answer already covers (`upto`: stream -> seq): each stream
        then reaches the browser once, in seq order."""
        if first is not None and not self.closed:
            self.writer.write(first)
        if upto and self.queue:
            kept = deque(f for f in self.queue if not (f.seq and f.seq <= upto.get(f.stream, 0)))
            self.queued_bytes -= sum(len(f.data) for f in self.queue) - sum(len(f.data) for f in kept)
            self.queue = kept
        if frames:
            self.queue = deque([*frames, *self.queue])
            self.queued_bytes += sum(len(frame.data) for frame in frames)
        self.held = False
        self._bound()
        if not self.flush():
            self._waiting()

    def close(self) -> None:
        if not self.closed and self.queue:
            metrics.SOCKET_SEND_DROPS.labels("closing").inc(len(self.queue))
        self.closed = True
        self.queue = NO_FRAMES
        self.queued_bytes = 0

    # -- inside ---------------------------------------------------------------------------
    def _write(self, frame: Frame) -> None:
        if self.skipped and frame.stream in self.skipped:
            seqs = self.skipped.pop(frame.stream)
            self.writer.write(Frame.text_frame(json.dumps(
                {"type": "skip", "stream": frame.stream, "seqs": seqs}, separators=(",", ":"))))
        self.writer.write(frame)
        self.sent += 1
        metrics.WEBSOCKET_FRAMES_SENT.inc()

    def _enqueue(self, frame: Frame) -> None:
        was_empty = not self.queue
        if was_empty:
            self.queue = deque()
        self.queue.append(frame)
        self.queued_bytes += len(frame.data)
        self._bound()
        if was_empty and not self.held:
            self._waiting()

    def _waiting(self) -> None:
        if self.queue and self.on_waiting is not None:
            self.on_waiting(self)

    def _over(self) -> bool:
        return len(self.queue) > self.max_frames or self.queued_bytes > self.max_bytes

    def _bound(self) -> None:
        if not self._over():
            return
        self._conflate()
        # Then the newest go: the browser applies frames in seq order, so what it needs next is the
        # oldest; what is dropped at the tail it recovers from the history once it has caught up (a
        # `gap` frame then names the newest seq dropped per stream).
        while self._over():
            frame = self.queue.pop()
            self.queued_bytes -= len(frame.data)
            self.dropped += 1
            metrics.SOCKET_SEND_DROPS.labels("overflow").inc()
            if frame.seq:
                self.gaps[frame.stream] = max(frame.seq, self.gaps.get(frame.stream, 0))

    def _conflate(self) -> None:
        """Keep only the newest frame of each (stream, key); older ones become skips."""
        newest: set[tuple[str, str]] = set()
        kept: deque[Frame] = deque()
        removed: list[Frame] = []
        for frame in reversed(self.queue):
            if frame.key:
                ident = (frame.stream, frame.key)
                if ident in newest:
                    removed.append(frame)
                    continue
                newest.add(ident)
            kept.appendleft(frame)
        if not removed:
            return
        for frame in reversed(removed):
            self.skipped.setdefault(frame.stream, []).append(frame.seq)
            self.queued_bytes -= len(frame.data)
        for seqs in self.skipped.values():
            seqs.sort()
        self.queue = kept
        self.conflated += len(removed)
        metrics.SOCKET_FRAMES_CONFLATED.inc(len(removed))
