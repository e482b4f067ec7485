"""The raw baseline: a plain `websockets` server fed by one Redis pub/sub channel.

Every message published on the channel is `broadcast()` as a text frame, unchanged, to every open
connection: the floor for a Python fan-out with the same broker hop Tickerwire has (Redis), the
same event text, and nothing else: no auth, no groups, no per-socket task on the hot path.
A client's `{"type": "watch", ...}` is answered with `{"type": "watching", ...}` so the benchmark
client connects to it exactly as to Tickerwire; anything else a client sends is ignored.

    python bench/raw_server.py --port 0 --redis-url redis://127.0.0.1:6379/0 --channel twbench-raw-x

Prints one JSON line `{"type": "ready", "port": P}` on stdout once it listens and is subscribed.
Stops on SIGTERM/SIGINT, or after --max-seconds (a bound, so a lost orchestrator cannot leave it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import raise_nofile_limit  # noqa: E402

CONNECTIONS: set = set()


async def handler(websocket) -> None:
    CONNECTIONS.add(websocket)
    try:
        async for message in websocket:
            try:
                request = json.loads(message)
            except ValueError:
                continue
            if isinstance(request, dict) and request.get("type") == "watch":
                await websocket.send(json.dumps({"type": "watching", "watchlists": request.get("watchlists", []),
                                                 "instruments": []}))
    finally:
        CONNECTIONS.discard(websocket)


async def relay(pubsub) -> None:
    from websockets.asyncio.server import broadcast

    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        data = message["data"]
        # Text frames, as Tickerwire sends: broadcast() frames a str as text, bytes as binary.
        broadcast(CONNECTIONS, data.decode("utf-8") if isinstance(data, bytes) else data)


async def serve(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis
    from websockets.asyncio.server import serve as ws_serve

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    client = aioredis.from_url(args.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(args.channel)
    relay_task = asyncio.create_task(relay(pubsub))
    try:
        # compression=None: no permessage-deflate, as the benchmark client never offers it anyway.
        async with ws_serve(handler, args.host, args.port, compression=None, max_queue=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(json.dumps({"type": "ready", "port": port}), flush=True)
            try:
                await asyncio.wait_for(stop, args.max_seconds)
            except TimeoutError:
                print("raw_server: --max-seconds reached, stopping", file=sys.stderr)
    finally:
        relay_task.cancel()
        try:
            await pubsub.aclose()
            await client.aclose()
        except Exception:  # noqa: BLE001 - shutting down
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--max-seconds", type=float, default=3600)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
