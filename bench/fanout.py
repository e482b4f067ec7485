"""Fan-out benchmark: feeds.broadcast -> Redis layer -> Daphne consumer -> N WebSocket clients.

Starts Daphne in a subprocess on a throw-away SQLite file and the real Redis layer, opens N
authenticated sockets that watch one watchlist, publishes M events as fast as the publisher
can (or at --rate), and prints delivered messages/s and latency percentiles. Loopback only,
bounded in count and time. Clients and publisher share this process, so the figures are a
floor for the server, not a ceiling.

    python bench/fanout.py --clients 200 --events 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(tmp: Path) -> dict[str, str]:
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_LAYER_PREFIX": f"twbench-{secrets.token_hex(4)}", "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0", "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return env


async def client(url: str, cookie: str, origin: str, watchlist: int, expected: int, latencies: list[float]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Cookie": cookie}, origin=origin, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "watch", "watchlists": [watchlist]}))
        await ws.recv()
        client.ready += 1
        got = 0
        while got < expected:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "event":
                latencies.append(time.monotonic() - float(message["event"]["external_id"].split(":")[1]))
                got += 1


client.ready = 0


async def main(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from asgiref.sync import sync_to_async
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY

    from dashboard.models import Watchlist
    from feeds import events as ev
    from feeds.broadcast import publish_events

    def session_for(username: str) -> tuple[str, int, int]:
        user = get_user_model().objects.get(username=username)
        store = SessionStore()
        store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        watchlist = Watchlist.objects.filter(team__memberships__user=user).first()
        return store.session_key, watchlist.id, watchlist.items.first().instrument_id

    session, watchlist, instrument_id = await sync_to_async(session_for)("alice")
    base = f"127.0.0.1:{args.port}"
    latencies: list[float] = []
    per_client = args.events
    clients = [asyncio.create_task(client(f"ws://{base}/ws/stream/", f"sessionid={session}", f"http://{base}",
                                          watchlist, per_client, latencies)) for _ in range(args.clients)]
    async with asyncio.timeout(60):
        while client.ready < args.clients:
            await asyncio.sleep(0.05)
    now = datetime.now(timezone.utc)
    started = time.monotonic()
    for i in range(args.events):
        event = ev.News(provider="stocknews", code="AAPL", received_at=now, instrument_id=instrument_id, symbol="AAPL",
                        external_id=f"{i}:{time.monotonic()}", headline="benchmark", published_at=now)
        await publish_events([event])
        if args.rate:
            await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))
    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*clients)
    except TimeoutError:
        print("some messages did not arrive within the time limit (layer capacity drops)")
    elapsed = time.monotonic() - started
    latencies.sort()
    delivered = len(latencies)
    pct = lambda p: latencies[min(delivered - 1, int(p * delivered))] * 1000 if delivered else float("nan")  # noqa: E731
    print(f"clients={args.clients} events={args.events} delivered={delivered}/{args.clients * args.events}")
    print(f"throughput={delivered / elapsed:,.0f} msg/s over {elapsed:.2f}s  "
          f"latency p50={pct(0.5):.1f}ms p99={pct(0.99):.1f}ms max={latencies[-1] * 1000 if latencies else 0:.1f}ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0, help="events/s (0: as fast as possible)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = configure(Path(tmp))
        run = lambda *a: subprocess.run([sys.executable, "manage.py", *a], cwd=ROOT, env=env, check=True,  # noqa: E731
                                        capture_output=True)
        run("migrate", "--noinput")
        run("seed_demo")
        args.port = free_port()
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port),
                                   "project.asgi:application"], cwd=ROOT, env=env)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", args.port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            asyncio.run(main(args))
        finally:
            daphne.terminate()
            daphne.wait(timeout=10)
