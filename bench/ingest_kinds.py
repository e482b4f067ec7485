"""The kinds bench/ingest.py measures, and how one is flooded: each kind's provider and simulator, the
processes started for a run, the worker's metrics, and `flood_and_wait`, which times one flood until
the worker is done with it."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _common import free_port, proc_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
CONTROL_TOKEN = secrets.token_hex(8)
POLL_SECONDS = 0.05  # the worker's CPU time is read this often ...
METRICS_EVERY = 40  # ... and its metrics when it idled through a poll, or at every 40th (2 s) while busy
SETTLED_SECONDS = 0.5  # counters unchanged this long after the last frame: the worker is done
BUSY_SHARE = 0.3  # of a core: a worker using less than that over a poll is idle


@dataclass(frozen=True)
class Kind:
    name: str
    provider: str
    frames_per_event: float  # frames to send for --events input events (about)
    flood: dict = field(default_factory=dict)  # extra /control/flood parameters
    rows_sql: str = ""

    def events(self, summary: dict) -> int:
        """Input events the announced frames hold (the simulator's own count)."""
        if self.name == "news":
            return summary["news"] + summary["quotes"]
        if self.name in ("quotes", "bars"):
            return summary[self.name]
        if self.name == "crowd":
            return summary["mentions"]
        return sum(summary["events"].values())


KINDS = {k.name: k for k in (
    Kind("news", "stocknews", 0.45, {}, "SELECT count(*) FROM feeds_newsitem"),
    Kind("quotes", "insightsentry", 1.0, {"kind": "quote"}, "SELECT count(*) FROM feeds_quote"),
    Kind("bars", "insightsentry", 1.0, {"kind": "series"}, "SELECT count(*) FROM feeds_bar"),
    Kind("crowd", "stocktwits", 0.75, {}, "SELECT count(*) FROM feeds_crowdmention"),
    Kind("datapoints", "knowsis", 1.0, {"events": "datapoint"},
         "SELECT count(*) FROM feeds_sentimentsample WHERE provider = 'knowsis'"),
    Kind("prices", "knowsis", 1.0, {"events": "price"}, "SELECT count(*) FROM feeds_quote WHERE provider = 'knowsis'"),
)}

# provider -> (simulate token, endpoint path, automatic traffic off)
SIMULATORS = {
    "stocknews": ("demo-token", "/ws", None),
    "insightsentry": ("demo-key", "/live", ("ticks", {"interval": "0"})),
    "stocktwits": ("demo:demo-password", "/sentiment", ("interval", {"seconds": ""})),
    "knowsis": ("demo-key:demo-secret", "", None),
}


# -- processes ----------------------------------------------------------------------------------
class Child:
    """A process started here, its output in a log file; stopped by pid."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n" + "\n".join(text.splitlines()[-lines:]) if text else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def http_json(url: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Simulator:
    def __init__(self, provider: str, env: dict, log: Path) -> None:
        self.provider, self.port = provider, free_port()
        token = SIMULATORS[provider][0]
        self.child = Child(f"{provider} simulator", [
            sys.executable, "manage.py", "simulate", provider, "--port", str(self.port), "--token", token,
            "--news-interval", "0", "--control-token", CONTROL_TOKEN, "--seed", "1"], env, log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.stats()
                break
            except OSError:
                if not self.child.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the {provider} simulator did not start{self.child.tail()}") from None
                time.sleep(0.1)
        quiet = SIMULATORS[provider][2]
        if quiet:
            self.control(quiet[0], **quiet[1])

    @property
    def endpoint(self) -> str:
        scheme = "http" if self.provider == "stocktwits" else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{SIMULATORS[self.provider][1]}"

    def control(self, action: str, **params) -> dict:
        query = urllib.parse.urlencode({"token": CONTROL_TOKEN, **params})
        return http_json(f"http://127.0.0.1:{self.port}/control/{action}?{query}")

    def stats(self) -> dict:
        return self.control("stats")

    def subscribed(self, instruments: int) -> bool:
        stats = self.stats()
        if self.provider == "stocknews":
            return stats["openConnections"] >= 1 and stats["received"] >= 1  # connected, subscribe sent
        if self.provider == "stocktwits":
            return stats["open_streams"] >= 1
        per_connection = {"insightsentry": 2 * instruments, "knowsis": instruments}[self.provider]
        return any(len(subs) >= per_connection for subs in stats["subscriptions"].values())


METRIC_LINE = re.compile(r'^(\w+)\{provider="(\w+)"\} (\S+)$', re.M)


def worker_metrics(port: int, provider: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, label, value in METRIC_LINE.findall(text) if label == provider}


@dataclass
class Sample:
    at: float
    received: float
    stored: float
    published: float
    depth: float
    cpu: float


def sample(port: int, provider: str, pid: int) -> Sample:
    values = worker_metrics(port, provider)
    return Sample(time.monotonic(), values.get("tickerwire_feed_messages_received_total", 0.0),
                  values.get("tickerwire_events_stored_total", 0.0), values.get("tickerwire_events_published_total", 0.0),
                  values.get("tickerwire_pipeline_queue_depth", 0.0), proc_cpu_seconds(pid))


def flood_and_wait(sim: Simulator, kind: Kind, frames: int, metrics_port: int, worker: Child,
                   timeout: float) -> dict:
    """One flood of `frames`, timed from the moment its frames are built until the worker is done.

    Done: it received every frame, its queue is empty and its counters held still for
    SETTLED_SECONDS. Its CPU time (/proc, free for it) is read every poll, and the clock stops at
    the last poll where it was still busy: a worker flooded is CPU-bound until it is done, then
    idles. Its metrics are read only once a poll found it idle (or every METRICS_EVERY polls): a
    scrape costs the worker 10-20 ms of CPU, 8 % of a flood when it was read every 250 ms."""
    pid = worker.proc.pid
    before = sample(metrics_port, kind.provider, pid)
    summary = sim.control("flood", count=frames, **kind.flood)
    t0 = time.monotonic()
    sent = summary.get("frames", summary.get("messages"))
    cpu_trace = [(t0, proc_cpu_seconds(pid))]
    last = before
    settled_since = None
    deadline = t0 + timeout
    polls = 0
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        polls += 1
        cpu_trace.append((time.monotonic(), proc_cpu_seconds(pid)))
        (t1, c1), (t2, c2) = cpu_trace[-2:]
        if c2 - c1 >= BUSY_SHARE * (t2 - t1) and polls % METRICS_EVERY:
            continue  # still busy with the flood: do not disturb it
        if not worker.alive():
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}){worker.tail()}")
        current = sample(metrics_port, kind.provider, pid)
        finished = current.received - before.received >= sent and current.depth == 0
        moved = (current.stored, current.published, current.received) != (last.stored, last.published, last.received)
        last = current
        if not finished or moved:
            settled_since = None
            continue
        settled_since = settled_since or current.at
        if current.at - settled_since >= SETTLED_SECONDS:
            return {"summary": summary, "complete": True, "before": before, "end": current, "t0": t0,
                    "busy_until": _busy_until(cpu_trace)}
    return {"summary": summary, "complete": False, "before": before, "end": last, "t0": t0,
            "busy_until": cpu_trace[-1]}


def _busy_until(trace: list[tuple[float, float]]) -> tuple[float, float]:
    """(time, CPU seconds) at the last poll after which the worker still used at least BUSY_SHARE of a
    core: the end of its work on the flood (an idle worker wakes only briefly, for its heartbeat)."""
    end = trace[min(1, len(trace) - 1)]  # never seen busy (a flood done within one poll): one poll
    for (t1, c1), (t2, c2) in zip(trace, trace[1:]):
        if c2 - c1 >= BUSY_SHARE * (t2 - t1):
            end = (t2, c2)
    return end
