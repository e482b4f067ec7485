"""N browser-like WebSocket connections in one process, as light as Python allows.

A minimal RFC 6455 client on plain asyncio protocols: the HTTP/1.1 upgrade with Cookie and Origin
headers, no extensions (no permessage-deflate), unmasked server frames parsed in place, pings
answered, masked client frames. Each connection sends one watch request and counts as connected
when the server's `{"type": "watching"}` arrives.

Every event frame carries the publisher's CLOCK_MONOTONIC stamp in `"external_id":"bench:<seq>:<ns>"`;
CLOCK_MONOTONIC is one clock for every process on the machine, so latency = arrival - stamp. The
frame is not JSON-decoded (that would cost the clients more CPU than the raw server spends): the
stamp is found by a regular expression, so unknown fields and other frame types ("watching",
"skip", "pong", ...) are ignored without a parse.

Talks to the orchestrator (bench/fanout.py) in JSON lines: results on stdout, commands on stdin.

    -> {"type": "connected", "connected": n, "failed": k, "seconds": s, ...}      once, after connecting
    <- {"cmd": "start", "events": M}          count events 0..M-1 from now on
    <- {"cmd": "drain", "timeout": T, "idle": I}
    -> {"type": "drained", ...latency and loss...}  when all N*M arrived, nothing arrived for I s, or T s
    <- {"cmd": "close"}                        close every socket and exit (so does stdin EOF)

Bounded: --max-seconds ends the process whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import struct
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, proc_cpu_seconds, raise_nofile_limit  # noqa: E402

STAMP = re.compile(rb'"external_id":\s*"bench:(\d+):(\d+)"')
WATCHING = re.compile(rb'"type":\s*"watching"')
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final frame (clients must mask, RFC 6455 §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # XOR the whole payload at once as one big integer: no per-byte Python loop.
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


class Recorder:
    """What every connection received during the measured window (one per process)."""

    def __init__(self) -> None:
        self.events = 0
        self.latencies = array("q")  # ns, in arrival order
        self.seqs = array("l")  # the event of each latency
        self.delivered: array | None = None  # per event seq: how many sockets got it
        self.seen: list[bytearray] = []  # per connection: a flag per seq (duplicates)
        self.duplicates = 0
        self.unexpected = 0
        self.last_arrival = 0
        self.frames_other = 0
        self.started_at = 0  # monotonic ns of "start"

    def start(self, events: int, connections: int) -> None:
        self.events = events
        self.latencies = array("q")
        self.seqs = array("l")
        self.delivered = array("I", bytes(4 * events))
        self.seen = [bytearray(events) for _ in range(connections)]
        self.duplicates = self.unexpected = self.frames_other = 0
        self.last_arrival = 0
        self.started_at = time.monotonic_ns()


RECORDER = Recorder()


class Connection(asyncio.Protocol):
    def __init__(self, index: int, request: bytes, watch_frame: bytes, ready: asyncio.Future) -> None:
        self.index = index
        self.request = request
        self.watch_frame = watch_frame
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.closed_code: int | None = None
        self.lost = False
        self.lost_at = 0  # monotonic ns

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.lost, self.lost_at = True, time.monotonic_ns()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before watching ({exc or self.closed_code})"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:buffer.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"handshake refused: {status.decode(errors='replace')}"))
                self.transport.close()
                return
            del buffer[:end + 4]
            self.upgraded = True
            self.transport.write(self.watch_frame)
        now = time.monotonic_ns()
        rec = RECORDER
        search = STAMP.search
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
                head = 10
            if b1 & 0x80:  # a masked server frame is a protocol error; read it anyway
                head += 4
            start, end = pos + head, pos + head + length
            if end > size:
                break
            pos = end
            # Hot path, inlined: a final, unmasked text frame holding one stamped event. Searched in
            # place (no copy); a frame the search does not settle takes the general path below.
            if b0 == 0x81 and not b1 & 0x80:
                match = search(buffer, start, end)
                if match is not None and search(buffer, match.end(), end) is None:
                    seq = int(match.group(1))
                    if seq >= rec.events:
                        rec.unexpected += 1
                        continue
                    seen = rec.seen[self.index]
                    if seen[seq]:
                        rec.duplicates += 1
                    else:
                        seen[seq] = 1
                        rec.delivered[seq] += 1
                        rec.latencies.append(now - int(match.group(2)))
                        rec.seqs.append(seq)
                        rec.last_arrival = now
                    continue
            payload = bytes(buffer[start:end])
            if b1 & 0x80:
                key = buffer[start - 4:start]
                payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            self.frame(b0 & 0x80, b0 & 0x0F, payload, now)
        if pos:
            del buffer[:pos]

    # -- frames ------------------------------------------------------------------------------
    def frame(self, fin: int, opcode: int, payload: bytes, now: int) -> None:
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if not fin:
                self.fragments, self.fragment_opcode = [payload], opcode
                return
            self.message(payload, now)
        elif opcode == OP_CONT:
            self.fragments.append(payload)
            if fin:
                whole, self.fragments = b"".join(self.fragments), []
                self.message(whole, now)
        elif opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.closed_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self.transport.is_closing():
                self.transport.write(client_frame(OP_CLOSE, payload[:2]))
                self.transport.close()

    def message(self, payload: bytes, now: int) -> None:
        rec = RECORDER
        found = False
        for match in STAMP.finditer(payload):
            found = True
            seq = int(match.group(1))
            if rec.delivered is None or seq >= rec.events:
                rec.unexpected += 1
                continue
            seen = rec.seen[self.index]
            if seen[seq]:
                rec.duplicates += 1
                continue
            seen[seq] = 1
            rec.delivered[seq] += 1
            rec.latencies.append(now - int(match.group(2)))
            rec.seqs.append(seq)
            rec.last_arrival = now
        if found:
            return
        if not self.ready.done() and WATCHING.search(payload):
            self.ready.set_result(None)
        else:
            rec.frames_other += 1

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            finally:
                self.transport.close()


def handshake_request(host: str, port: int, path: str, cookie: str, origin: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Origin: {origin}",
             "User-Agent: tickerwire-bench/1 (browser-like)"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect_all(args, loop) -> tuple[list[Connection], dict]:
    watch_frame = client_frame(OP_TEXT, args.watch.encode())
    gate = asyncio.Semaphore(args.connect_concurrency)
    connections: list[Connection] = []
    errors: dict[str, int] = {}

    async def one(index: int, port: int) -> None:
        async with gate:
            ready = loop.create_future()
            origin = args.origin or f"http://{args.host}:{port}"
            request = handshake_request(args.host, port, args.path, args.cookie, origin)
            conn = Connection(index, request, watch_frame, ready)
            try:
                await loop.create_connection(lambda: conn, args.host, port)
                connections.append(conn)
                await asyncio.wait_for(ready, args.connect_timeout)
            except (OSError, ConnectionError, TimeoutError) as exc:
                reason = type(exc).__name__ + (f": {str(exc)[:80]}" if str(exc) else "")
                errors[reason] = errors.get(reason, 0) + 1
                conn.close()

    ports = [int(p) for p in args.ports.split(",")]
    started = time.monotonic()
    await asyncio.gather(*(one(i, ports[i % len(ports)]) for i in range(args.clients)))
    seconds = time.monotonic() - started
    ok = sum(1 for c in connections if c.ready.done() and not c.ready.exception() and not c.lost)
    return connections, {"type": "connected", "connected": ok, "failed": args.clients - ok, "seconds": seconds,
                         "errors": errors}


def summary(connections: list[Connection], sockets: int, drain_seconds: float, cpu_seconds: float) -> dict:
    rec = RECORDER
    lat = rec.latencies
    count = len(lat)
    ordered = sorted(lat)
    ms = lambda ns: None if ns is None else round(ns / 1e6, 3)  # noqa: E731
    # Growing backlog: median latency of the last 20 % of events minus the first 20 %. By event, not by
    # arrival: with few events, the first and last arrivals are one event's fastest and slowest sockets,
    # and that spread is not a backlog.
    fifth = max(1, rec.events // 5)
    backlog_growth = None
    if rec.events >= 2 and count:
        first = sorted(v for v, q in zip(lat, rec.seqs) if q < fifth)
        last = sorted(v for v, q in zip(lat, rec.seqs) if q >= rec.events - fifth)
        if first and last:
            backlog_growth = ms(last[len(last) // 2] - first[len(first) // 2])
    delivered = rec.delivered or array("I")
    return {
        "type": "drained",
        "events": rec.events,
        "deliveries": count,
        "duplicates": rec.duplicates,
        "unexpected": rec.unexpected,
        "other_frames": rec.frames_other,
        "events_complete": sum(1 for d in delivered if d >= sockets),
        "events_never_delivered": sum(1 for d in delivered if d == 0),
        "last_arrival_ns": rec.last_arrival,
        "latency_ms": {"p50": ms(percentile(ordered, 50)), "p90": ms(percentile(ordered, 90)),
                       "p99": ms(percentile(ordered, 99)), "p999": ms(percentile(ordered, 99.9)),
                       "max": ms(ordered[-1] if count else None), "min": ms(ordered[0] if count else None)},
        "backlog_growth_ms": backlog_growth,
        "sockets_closed": sum(1 for c in connections if c.lost),
        "sockets_closed_during": sum(1 for c in connections if c.lost and c.lost_at >= rec.started_at),
        # seconds after "start" at which each socket closed (the first 20)
        "closed_after_s": sorted(round((c.lost_at - rec.started_at) / 1e9, 3) for c in connections
                                 if c.lost and c.lost_at >= rec.started_at)[:20],
        "close_codes": sorted({c.closed_code for c in connections if c.closed_code is not None}),
        "drain_seconds": round(drain_seconds, 3),
        "client_cpu_seconds": round(cpu_seconds, 3),
    }


async def run(args) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit = lambda obj: print(json.dumps(obj), flush=True)  # noqa: E731
    connections, connected = await connect_all(args, loop)
    emit(connected)
    cpu_at_start = proc_cpu_seconds(os.getpid())
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "start":
            RECORDER.start(int(command["events"]), args.clients)
            cpu_at_start = proc_cpu_seconds(os.getpid())
        elif command["cmd"] == "drain":
            began = time.monotonic()
            deadline = began + float(command.get("timeout", 30))
            idle_ns = int(float(command.get("idle", 2)) * 1e9)
            wanted = RECORDER.events * args.clients
            scanned, slowest = 0, 0
            while time.monotonic() < deadline and len(RECORDER.latencies) < wanted:
                # A server seconds behind may go quiet for a while and then deliver: the silence that
                # ends the drain is at least 1.5x the worst latency seen so far.
                latencies = RECORDER.latencies
                if len(latencies) > scanned:
                    slowest, scanned = max(slowest, max(latencies[scanned:])), len(latencies)
                quiet = max(idle_ns, int(1.5 * slowest))
                last = RECORDER.last_arrival or int(began * 1e9)
                if time.monotonic_ns() - last > quiet and (time.monotonic() - began) * 1e9 > quiet:
                    break
                await asyncio.sleep(0.05)
            emit(summary(connections, args.clients, time.monotonic() - began, proc_cpu_seconds(os.getpid()) - cpu_at_start))
        elif command["cmd"] == "close":
            break
    for conn in connections:
        conn.close()
    await asyncio.sleep(0.2)  # let the close frames go out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", required=True, help="comma-separated; connections are spread over them")
    parser.add_argument("--path", default="/ws/stream/")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--cookie", default="")
    parser.add_argument("--origin", default="", help="default: http://HOST:PORT of each connection")
    parser.add_argument("--watch", default='{"type":"watch","watchlists":[]}')
    parser.add_argument("--connect-concurrency", type=int, default=50,
                        help="handshakes in flight at once (stays under the server's listen backlog)")
    parser.add_argument("--connect-timeout", type=float, default=60, help="per connection, seconds")
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args(argv)
    raise_nofile_limit()

    async def bounded() -> None:
        try:
            await asyncio.wait_for(run(args), args.max_seconds)
        except TimeoutError:
            print("wsclient: --max-seconds reached", file=sys.stderr)

    asyncio.run(bounded())
    return 0


if __name__ == "__main__":
    sys.exit(main())
