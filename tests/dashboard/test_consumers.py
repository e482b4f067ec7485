"""The browser socket: authentication, origin check, per-message authorisation, bad input."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from dashboard.models import Membership
from feeds import events as ev
from feeds.broadcast import publish_events, publish_revoke
from feeds.groups import audience_group, instrument_group, team_audience, user_audience
from project.asgi import application
from tests.factories import team_with_watchlist, user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
ORIGIN = (b"origin", b"http://localhost")


def _setup():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    beta = team_with_watchlist("Beta", {carol: "owner"}, ["XOM"])
    client = Client()
    client.force_login(alice)
    return alice, alpha, beta, client.cookies[settings.SESSION_COOKIE_NAME].value


async def connect(session_key: str | None, origin: tuple = ORIGIN) -> tuple[WebsocketCommunicator, bool]:
    headers = [origin, (b"host", b"localhost")]
    if session_key:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


def news(instrument_id: int, symbol: str, external_id: str) -> ev.News:
    return ev.News(provider="stocknews", code=symbol, received_at=T, instrument_id=instrument_id, symbol=symbol,
                   external_id=external_id, headline=f"{symbol} headline", published_at=T)


async def test_anonymous_is_refused():
    communicator, connected = await connect(None)
    assert not connected


async def test_a_socket_on_another_path_is_refused():
    *_, session = await sync_to_async(_setup)()
    headers = [ORIGIN, (b"host", b"localhost"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())]
    for path in ("/ws/stream/extra/", "/ws/other/", "/ws/stream"):
        with pytest.raises(ValueError, match="No route found"):
            await WebsocketCommunicator(application, path, headers=headers).connect(timeout=5)


async def test_foreign_origin_is_refused():
    *_, session = await sync_to_async(_setup)()
    communicator, connected = await connect(session, origin=(b"origin", b"https://evil.example"))
    assert not connected
    communicator, connected = await connect(session)
    assert connected
    await communicator.disconnect()


async def test_watch_own_list_receives_its_events_and_not_others():
    alice, alpha, beta, session = await sync_to_async(_setup)()
    aapl, xom = await sync_to_async(lambda: (alpha.items.get().instrument, beta.items.get().instrument))()
    communicator, _ = await connect(session)
    await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id]})
    watching = await communicator.receive_json_from(timeout=5)
    streams = watching.pop("streams")
    assert watching == {"type": "watching", "watchlists": [alpha.id], "instruments": [aapl.id]}
    # Its instrument's stream and its audiences' (the team's, its own), none of the other team's.
    own = instrument_group(aapl.id)
    assert sorted(streams) == sorted([own, audience_group(team_audience(alpha.team_id)),
                                      audience_group(user_audience(alice.pk))])
    assert all(set(position) == {"epoch", "seq", "recovered"} and position["recovered"] is False
               for position in streams.values())
    # Sentinel order: the foreign event is published first; if it leaked it would arrive first.
    await publish_events([news(xom.id, "XOM", "foreign"), news(aapl.id, "AAPL", "own")])
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "event" and message["event"]["external_id"] == "own"
    # The next event of the stream after the position the answer gave.
    assert (message["stream"], message["epoch"], message["seq"]) == (own, streams[own]["epoch"], streams[own]["seq"] + 1)
    await communicator.disconnect()


async def test_cross_team_watch_is_refused_and_logged(caplog):
    alice, alpha, beta, session = await sync_to_async(_setup)()
    communicator, _ = await connect(session)
    with caplog.at_level(logging.WARNING, logger="dashboard.consumers"):
        await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id, beta.id, 999999]})
        error = await communicator.receive_json_from(timeout=5)
        ack = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["error"] == "forbidden"
    assert ack["watchlists"] == [alpha.id]
    assert f"user {alice.pk}: watch refused for watchlists [{beta.id}, 999999] instruments []" in caplog.text
    await communicator.disconnect()


@pytest.mark.parametrize(
    "frame,code",
    [("{not json", "bad_json"), ('["watch"]', "bad_request"), ('{"type":"shout"}', "unknown_type"),
     ('{"type":"watch","watchlists":"all"}', "bad_request"), ('{"type":"watch","watchlists":[true]}', "bad_request")],
)
async def test_bad_input_gets_an_error_reply_and_the_socket_stays(frame, code):
    *_, session = await sync_to_async(_setup)()
    communicator, _ = await connect(session)
    await communicator.send_to(text_data=frame)
    reply = await communicator.receive_json_from(timeout=5)
    assert reply["type"] == "error" and reply["error"] == code
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_oversized_frame_is_refused_and_closed():
    *_, session = await sync_to_async(_setup)()
    communicator, _ = await connect(session)
    await communicator.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 17_000}))
    assert (await communicator.receive_json_from(timeout=5))["error"] == "too_large"
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}


async def test_membership_removed_stops_delivery_after_revoke():
    alice, alpha, beta, session = await sync_to_async(_setup)()
    aapl = await sync_to_async(lambda: alpha.items.get().instrument)()
    communicator, _ = await connect(session)
    await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id]})
    await communicator.receive_json_from(timeout=5)
    await sync_to_async(Membership.objects.filter(user=alice).delete)()  # publishes the revoke (receivers)
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "revoked", "reason": "Your access changed: you are no longer a member of Alpha."}
    await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id]})
    assert (await communicator.receive_json_from(timeout=5))["error"] == "forbidden"
    assert (await communicator.receive_json_from(timeout=5))["instruments"] == []
    # Sentinel: the user group's message queues behind the event; if the socket were still
    # in the instrument group, the event would arrive first.
    await publish_events([news(aapl.id, "AAPL", "after-revoke")])
    await publish_revoke(user_id=alice.pk)
    assert await communicator.receive_json_from(timeout=5) == {"type": "revoked", "reason": ""}
    await communicator.disconnect()


async def test_single_instruments_are_authorised_like_watchlists():
    alice, alpha, beta, session = await sync_to_async(_setup)()
    aapl, xom = await sync_to_async(lambda: (alpha.items.get().instrument, beta.items.get().instrument))()
    communicator, _ = await connect(session)
    await communicator.send_json_to({"type": "watch", "instruments": [aapl.id, xom.id]})
    assert (await communicator.receive_json_from(timeout=5))["error"] == "forbidden"
    assert (await communicator.receive_json_from(timeout=5))["instruments"] == [aapl.id]
    await publish_events([news(xom.id, "XOM", "foreign"), news(aapl.id, "AAPL", "own")])
    assert (await communicator.receive_json_from(timeout=5))["event"]["external_id"] == "own"
    await communicator.disconnect()


async def _eventually(predicate, *, timeout: float = 5):
    import asyncio

    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_open_sockets_and_refusals_are_counted_on_the_metrics_port():
    from tests.scrape import delta, scrape, value

    *_, session = await sync_to_async(_setup)()
    before = scrape()
    refused, connected = await connect(None)
    assert not connected
    communicator, connected = await connect(session)
    assert connected
    opened = scrape()
    assert value(opened, "tickerwire_websockets_open") == value(before, "tickerwire_websockets_open") + 1
    assert delta(before, opened, "tickerwire_websocket_connections_total", result="accepted") == 1
    assert delta(before, opened, "tickerwire_websocket_connections_total", result="refused") == 1
    await communicator.disconnect()
    await _eventually(lambda: value(scrape(), "tickerwire_websockets_open") == value(before, "tickerwire_websockets_open"))


async def test_frames_sent_and_frames_dropped_after_close_are_counted():
    from tests.scrape import delta, scrape

    alice, alpha, beta, session = await sync_to_async(_setup)()
    aapl = await sync_to_async(lambda: alpha.items.get().instrument)()
    communicator, _ = await connect(session)
    await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id]})
    await communicator.receive_json_from(timeout=5)
    before = scrape()
    await publish_events([news(aapl.id, "AAPL", "delivered")])
    assert (await communicator.receive_json_from(timeout=5))["event"]["external_id"] == "delivered"
    assert delta(before, scrape(), "tickerwire_websocket_frames_sent_total") == 1
    # The server closes the socket (oversized frame); an event arriving before the disconnect is
    # dropped, and counted.
    await communicator.send_to(text_data="x" * (17 * 1024))
    await communicator.receive_json_from(timeout=5)
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"
    await publish_events([news(aapl.id, "AAPL", "too-late")])
    await _eventually(lambda: delta(before, scrape(), "tickerwire_socket_send_drops_total", reason="closing") == 1)
    assert delta(before, scrape(), "tickerwire_websocket_frames_sent_total") == 1
    await communicator.disconnect()


async def test_a_frame_for_a_socket_the_browser_just_closed_is_a_counted_drop_not_an_application_error():
    """Daphne's WebSocket protocol (autobahn) raises Disconnected when a broadcast reaches a socket the
    browser closed a moment before the server noticed; it used to escape as 'Exception inside
    application' (seen in the stack's burst test). The ASGI send here raises exactly that, for a frame
    the hub writes (an event) and for one the consumer writes (a reply)."""
    from autobahn.exception import Disconnected
    from prometheus_client import REGISTRY

    from dashboard.consumers import StreamConsumer
    from feeds.hub import get_hub
    from feeds.sinks import writer_for

    async def closed_protocol(message):
        raise Disconnected("Attempt to send on a closed protocol")

    consumer = StreamConsumer()
    consumer.base_send = closed_protocol
    drops = lambda: REGISTRY.get_sample_value("tickerwire_socket_send_drops_total", {"reason": "send_error"})  # noqa: E731
    before = drops()
    hub = await get_hub()
    # As the consumer makes its sink (no Daphne protocol in this scope: the ASGI send is the way out).
    sink = hub.sink(writer_for(consumer.base_send, buffer_bytes=settings.LIVE_SOCKET_BUFFER_BYTES))
    try:
        await hub.join(sink, [instrument_group(7002)])
        await publish_events([news(7002, "AAPL", "to-a-closed-socket")])
        await _eventually(lambda: drops() == before + 1)
    finally:
        hub.drop(sink)
    await consumer._reply({"type": "pong"})
    assert drops() == before + 2


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(pid: int) -> None:  # from another thread, so on another connection
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_sockets_still_open_after_postgresql_dropped_the_servers_kept_connection():
    # The consumer keeps its database connection across sockets (whatever CONN_MAX_AGE says); a
    # PostgreSQL restart, a failover or an idle timeout kills it under an idle server.
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: pg_terminate_backend")
    alice, alpha, beta, session = await sync_to_async(_setup)()
    communicator, connected = await connect(session)
    assert connected
    await communicator.disconnect()
    kept = await sync_to_async(_backend_pid, thread_sensitive=True)()  # the thread the consumer reads on
    await sync_to_async(_terminate, thread_sensitive=False)(kept)
    communicator, connected = await connect(session)
    assert connected
    await communicator.send_json_to({"type": "watch", "watchlists": [alpha.id]})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "watching"
    assert await sync_to_async(_backend_pid, thread_sensitive=True)() != kept  # a new connection
    await communicator.disconnect()
