"""A socket's bounded queue (feeds/sinks.py): written at once while the socket keeps up; queued,
then conflated (with a skip frame), then dropped (counted) when it does not; held frames follow
the answer and the history, once each, in seq order."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY

from feeds.sinks import Frame, Sink


class Writer:
    def __init__(self) -> None:
        self.open = True
        self.written: list[dict] = []

    def ready(self) -> bool:
        return self.open

    def write(self, frame: Frame) -> None:
        self.written.append(json.loads(frame.text))


def event(stream: str, seq: int, key: str = "", size: int = 10) -> Frame:
    text = json.dumps({"type": "event", "stream": stream, "seq": seq, "pad": "x" * size})
    return Frame(stream, seq, key, text.encode())


def seqs(written: list[dict]) -> list:
    return [(w["stream"], w["seq"]) if w["type"] == "event" else (w["type"], w.get("seqs")) for w in written]


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make(writer: Writer, **bounds) -> tuple[Sink, list]:
    waiting = []
    sink = Sink(writer, max_frames=bounds.get("frames", 100), max_bytes=bounds.get("bytes", 1 << 20),
                on_waiting=waiting.append)
    return sink, waiting


def test_a_socket_that_keeps_up_gets_each_frame_at_once():
    writer = Writer()
    sink, waiting = make(writer)
    for seq in (1, 2, 3):
        sink.offer(event("instrument.1", seq))
    assert seqs(writer.written) == [("instrument.1", 1), ("instrument.1", 2), ("instrument.1", 3)]
    assert not sink.queue and not waiting and sink.sent == 3


def test_frames_wait_while_the_socket_is_behind_and_follow_in_order_when_it_drains():
    writer = Writer()
    sink, waiting = make(writer)
    sink.offer(event("instrument.1", 1))
    writer.open = False
    sink.offer(event("instrument.1", 2))
    sink.offer(event("instrument.1", 3))
    assert waiting == [sink] and len(sink.queue) == 2  # the hub is asked once to poll it
    writer.open = True
    sink.offer(event("instrument.1", 4))  # never overtakes what waits
    assert seqs(writer.written) == [("instrument.1", 1)]
    assert sink.flush() is True
    assert seqs(writer.written) == [("instrument.1", n) for n in (1, 2, 3, 4)]


def test_over_the_bound_older_quotes_are_conflated_and_the_browser_told_before_that_streams_next_frame():
    writer = Writer()
    writer.open = False
    sink, _ = make(writer, frames=4)
    before = counter("tickerwire_socket_frames_conflated_total")
    sink.offer(event("instrument.1", 1, "quote"))
    sink.offer(event("instrument.1", 2))             # news: never conflated
    sink.offer(event("instrument.2", 1, "quote"))
    sink.offer(event("instrument.1", 3, "quote"))
    sink.offer(event("instrument.1", 4, "quote"))    # 5 > 4 frames: conflate
    assert [(f.stream, f.seq) for f in sink.queue] == [("instrument.1", 2), ("instrument.2", 1), ("instrument.1", 4)]
    assert sink.conflated == 2 and sink.dropped == 0
    assert counter("tickerwire_socket_frames_conflated_total") - before == 2
    writer.open = True
    sink.flush()
    assert seqs(writer.written) == [("skip", [1, 3]), ("instrument.1", 2), ("instrument.2", 1), ("instrument.1", 4)]


def test_a_bar_is_superseded_only_by_an_update_of_the_same_bar():
    writer = Writer()
    writer.open = False
    sink, _ = make(writer, frames=2)
    sink.offer(event("instrument.1", 1, "bar:1m:60"))
    sink.offer(event("instrument.1", 2, "bar:1m:120"))
    sink.offer(event("instrument.1", 3, "bar:1m:120"))
    assert [f.seq for f in sink.queue] == [1, 3] and sink.skipped == {"instrument.1": [2]}


def test_past_conflation_the_newest_frames_are_dropped_and_counted():
    writer = Writer()
    writer.open = False
    sink, _ = make(writer, frames=1000, bytes=1000)
    before = counter("tickerwire_socket_send_drops_total", reason="overflow")
    size = len(event("instrument.1", 10, size=150).data)  # every frame here is this long
    fit = 1000 // size
    for seq in range(1, 11):
        sink.offer(event("instrument.1", seq, size=150))
    assert [f.seq for f in sink.queue] == list(range(1, fit + 1))  # the oldest: what the browser applies next
    assert sink.queued_bytes == sum(len(f.data) for f in sink.queue) <= 1000
    assert sink.dropped == 10 - fit
    assert counter("tickerwire_socket_send_drops_total", reason="overflow") - before == 10 - fit
    writer.open = True
    sink.flush()  # caught up: the drop is named, so the browser recovers it even if nothing follows
    assert seqs(writer.written)[-1] == ("gap", None) and writer.written[-1] == {
        "type": "gap", "stream": "instrument.1", "seq": 10}
    assert [w["seq"] for w in writer.written[:-1]] == list(range(1, fit + 1))


def test_held_frames_follow_the_answer_and_the_history_without_what_the_answer_covers():
    writer = Writer()
    sink, _ = make(writer)
    sink.hold()
    for seq in (5, 6, 7):  # live frames that arrived while the history was read
        sink.offer(event("instrument.1", seq))
    sink.offer(event("instrument.2", 1))
    assert writer.written == []
    answer = Frame.text_frame(json.dumps({"type": "watching"}))
    sink.release(answer, [event("instrument.1", 4), event("instrument.1", 5), event("instrument.1", 6)],
                 upto={"instrument.1": 6, "instrument.2": 0})
    assert seqs(writer.written) == [("watching", None), ("instrument.1", 4), ("instrument.1", 5),
                                    ("instrument.1", 6), ("instrument.1", 7), ("instrument.2", 1)]


def test_a_closed_sink_takes_nothing():
    writer = Writer()
    sink, _ = make(writer)
    sink.close()
    sink.offer(event("instrument.1", 1))
    assert writer.written == [] and not sink.queue


def test_unsequenced_frames_are_never_conflated():
    writer = Writer()
    writer.open = False
    sink, _ = make(writer, frames=2)
    for _ in range(3):
        sink.offer(Frame.text_frame('{"type":"feed_status"}'))
    assert sink.conflated == 0 and sink.dropped == 1


def test_daphnes_send_leads_to_its_protocol_and_a_wrapped_send_goes_through_asgi():
    """Pins what daphne_protocol relies on: Daphne's Server.create_application hands the application
    `send=partial(server.handle_reply, protocol)`."""
    import asyncio
    from types import SimpleNamespace

    from daphne.server import Server

    from feeds.sinks import AsgiWriter, ProtocolWriter, daphne_protocol, writer_for

    class Protocol:  # what ProtocolWriter needs of autobahn's protocol
        transport = None

        def sendPreparedMessage(self, prepared) -> None:  # noqa: N802 - autobahn's name
            pass

    protocol, sends = Protocol(), []

    async def application(scope, receive, send):
        sends.append(send)

    async def main() -> None:
        server = SimpleNamespace(connections={protocol: {}}, application=application, handle_reply=lambda *a: None)
        Server.create_application(server, protocol, {"type": "websocket"})
        await server.connections[protocol]["application_instance"]

    asyncio.run(main())
    assert daphne_protocol(sends[0]) is protocol
    assert isinstance(writer_for(sends[0], buffer_bytes=1024), ProtocolWriter)

    async def wrapped(message):  # a middleware's own send
        await sends[0](message)

    assert daphne_protocol(wrapped) is None and isinstance(writer_for(wrapped, buffer_bytes=1024), AsgiWriter)


def test_an_idle_sink_holds_no_queue_and_lets_it_go_once_drained():
    writer = Writer()
    sink, _ = make(writer)
    assert sink.queue == ()
    writer.open = False
    sink.offer(event("instrument.1", 1))
    assert len(sink.queue) == 1
    writer.open = True
    assert sink.flush() and sink.queue == () and seqs(writer.written) == [("instrument.1", 1)]
