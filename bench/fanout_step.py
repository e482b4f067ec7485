"""One step of bench/fanout.py: its child processes, the run-wide state, and `run_step`, which starts a
server, N client sockets and a publisher, measures one stepped rate and stops them all by pid."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (free_port, machine_cpu_seconds, proc_cpu_seconds, proc_peak_rss_kib, proc_rss_kib,
                     wait_healthy)
from cpucap import CpuCap
from fanout_report import verdict

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SETTLE_SECONDS = 1.0
DRAIN_IDLE_SECONDS = 2.0


# -- child processes -----------------------------------------------------------------------------
class Child:
    """A subprocess speaking JSON lines on stdout/stdin; stderr (and non-JSON stdout) go to a log file."""

    def __init__(self, name: str, args: list[str], *, env: dict, logs: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        self.pid = self.proc.pid
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    self._lines.put(json.loads(line))
                    continue
                except ValueError:
                    pass
            self._log.write(line)
        self._lines.put(None)

    def send(self, obj: dict) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def expect(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {kind!r} within {timeout:.0f}s{self.tail()}")
            try:
                message = self._lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if message is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}) before {kind!r}{self.tail()}")
            if message.get("type") == kind:
                return message

    def tail(self, lines: int = 8) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return ("\n  " + "\n  ".join(text)) if text else ""

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()


# -- one step -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    name: str  # "raw", "tickerwire", "tickerwire-2p"
    kind: str  # "raw" or "tickerwire"
    processes: int = 1
    cpu_cap: float | None = None  # CPUs each server process may use (bench/cpucap.py), None: uncapped


class Run:
    """Run-wide state: a temp dir, the template database, one secret and one login for every step."""

    def __init__(self, tmp: Path, root: Path = ROOT) -> None:
        from cryptography.fernet import Fernet

        self.tmp = tmp
        self.root = root  # the checkout whose server is measured (its Daphne, its publish_events)
        self.template = tmp / "template.sqlite3"
        self.redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        self.secret = secrets.token_urlsafe(50)
        self.fernet = Fernet.generate_key().decode()
        self.base_env = {k: v for k, v in os.environ.items()
                         if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CHANNEL_LAYER_PREFIX", "METRICS_PORT")
                         and not k.startswith("PYTEST_")}
        self.base_env["PYTHONUNBUFFERED"] = "1"
        self.base_env["TWBENCH_ROOT"] = str(root)
        self.info: dict = {}

    def django_env(self, database: Path, prefix: str) -> dict[str, str]:
        return {**self.base_env, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": f"sqlite:///{database}",
                "REDIS_URL": self.redis_url, "CHANNEL_LAYER_PREFIX": prefix, "SECRET_KEY": self.secret,
                "FIELD_ENCRYPTION_KEYS": self.fernet, "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0",
                "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING"}

    def prepare(self) -> dict:
        env = self.django_env(self.template, "twbench-prepare")
        done = subprocess.run([sys.executable, str(BENCH / "fanout.py"), "_prepare"], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"preparing the database failed:\n{done.stdout}\n{done.stderr}")
        self.info = json.loads(done.stdout.strip().splitlines()[-1])
        return self.info


def server_log_findings(servers: list[Child], keep: int = 5) -> dict:
    """Warnings and errors the servers logged (LOG_LEVEL=WARNING: nothing else is logged), the first few."""
    lines = []
    for server in servers:
        server._log.flush()
        lines += [line for line in server.log_path.read_text(errors="replace").splitlines()
                  if any(word in line for word in ("WARNING", "ERROR", "Exception inside application", "Traceback"))]
    return {"count": len(lines), "first": [line[:300] for line in lines[:keep]]}


def redis_cpu_seconds(client) -> float | None:
    try:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    except Exception:  # noqa: BLE001 - a nicety; the step does not depend on it
        return None


def run_step(run: Run, cfg: Config, clients: int, rate: float, duration: float, round_no: int) -> dict:
    import redis

    step = f"{cfg.name}-n{clients}-r{rate:g}-{round_no}"
    logs = run.tmp / step
    logs.mkdir()
    events = max(1, round(rate * duration))
    row: dict = {"config": cfg.name, "server": cfg.kind, "processes": cfg.processes, "clients": clients,
                 "rate": rate, "round": round_no, "duration": duration, "events": events,
                 "expected": events * clients, "error": None}
    prefix = f"twbench-{secrets.token_hex(4)}"
    channel = f"{prefix}-raw"
    db = logs / "db.sqlite3"
    info = run.info
    children: list[Child] = []
    caps: list[CpuCap] = []
    rclient = redis.Redis.from_url(run.redis_url)
    try:
        env = run.django_env(db, prefix)
        if cfg.kind == "raw":
            server = Child("server", [sys.executable, str(BENCH / "raw_server.py"), "--port", "0", "--redis-url",
                                      run.redis_url, "--channel", channel, "--max-seconds", "1800"],
                           env=run.base_env, logs=logs)
            children.append(server)
            servers, ports = [server], [server.expect("ready", 30)["port"]]
        else:
            with sqlite3.connect(run.template) as source, sqlite3.connect(db) as target:
                source.backup(target)
            servers, ports = [], []
            for index in range(cfg.processes):
                port = free_port()
                server = Child(f"daphne{index}", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                                  "project.asgi:application"], env=env, logs=logs, cwd=run.root)
                children.append(server)
                servers.append(server)
                ports.append(port)
            for server, port in zip(servers, ports):
                wait_healthy(port, server, 120)
        pids = [s.pid for s in servers]
        if cfg.cpu_cap:
            for pid in pids:  # each server process its own budget, as if it had its own machine share
                caps.append(CpuCap(cfg.cpu_cap))
                caps[-1].add(pid)
            row["cpu_cap"] = cfg.cpu_cap
        rss_start = sum(proc_rss_kib(pid) for pid in pids)
        # Started now, so its imports overlap the clients' connecting.
        publisher = Child("publisher", [
            sys.executable, str(BENCH / "fanout.py"), "_publish", "--mode", cfg.kind, "--redis-url", run.redis_url,
            "--channel", channel, "--instrument-id", str(info["instrument_id"]), "--symbol", info["symbol"],
            "--warmup-instrument-id", str(info.get("warmup_instrument_id") or 0)], env=env, logs=logs, cwd=run.root)
        children.append(publisher)
        watch = json.dumps({"type": "watch", "watchlists": [info["watchlist"]]}, separators=(",", ":"))
        client = Child("clients", [
            sys.executable, str(BENCH / "wsclient.py"), "--ports", ",".join(map(str, ports)), "--clients", str(clients),
            "--cookie", f"sessionid={info['session_key']}", "--watch", watch, "--max-seconds", "1800"],
            env=run.base_env, logs=logs)
        children.append(client)
        connected = client.expect("connected", 60 + 0.12 * clients)
        row.update(connected=connected["connected"], connect_failed=connected["failed"],
                   connect_errors=connected["errors"], connect_seconds=round(connected["seconds"], 3))
        publisher.expect("ready", 120)
        time.sleep(SETTLE_SECONDS)
        rss_idle = sum(proc_rss_kib(pid) for pid in pids)
        row["rss_kib"] = {"start": rss_start, "idle": rss_idle}
        row["kib_per_connection"] = round((rss_idle - rss_start) / clients, 2)

        client.send({"cmd": "start", "events": events})
        time.sleep(0.05)
        wall0, cpu0 = time.monotonic(), sum(proc_cpu_seconds(pid) for pid in pids)
        client_cpu0, redis_cpu0 = proc_cpu_seconds(client.pid), redis_cpu_seconds(rclient)
        machine0 = machine_cpu_seconds()
        row["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
        publisher.send({"cmd": "go", "rate": rate, "count": events})
        published = publisher.expect("published", 3 * duration + 60)
        drain_timeout = 10 + duration
        client.send({"cmd": "drain", "timeout": drain_timeout, "idle": DRAIN_IDLE_SECONDS})
        drained = client.expect("drained", drain_timeout + 30)
        wall = time.monotonic() - wall0
        server_cpu = sum(proc_cpu_seconds(pid) for pid in pids) - cpu0
        if caps:  # a server that never waited for its budget was not the limit
            row["cpu_throttled_seconds"] = round(sum(cap.throttled_seconds() for cap in caps), 3)
        client_cpu, redis_cpu1 = proc_cpu_seconds(client.pid) - client_cpu0, redis_cpu_seconds(rclient)
        machine1 = machine_cpu_seconds()
        row["rss_kib"]["peak"] = sum(proc_peak_rss_kib(pid) for pid in pids)
        row["server_log"] = server_log_findings(servers)

        deliveries = drained["deliveries"]
        # Over the publishing schedule (M / rate), or until the last arrival if that came later.
        span = max(events / rate, (drained["last_arrival_ns"] - published["t0_ns"]) / 1e9) if deliveries else 0
        row.update(
            offered_events_per_s=rate, achieved_events_per_s=round(published["achieved_rate"], 2),
            publish_errors=published["errors"], publisher_lag_ms={k: round(v, 3) for k, v in published["lag_ms"].items()},
            deliveries=deliveries, lost=row["expected"] - deliveries,
            lost_pct=round(100 * (row["expected"] - deliveries) / row["expected"], 3),
            duplicates=drained["duplicates"], events_never_delivered=drained["events_never_delivered"],
            delivered_msgs_per_s=round(deliveries / span, 1) if span > 0 else 0.0,
            latency_ms=drained["latency_ms"], backlog_growth_ms=drained["backlog_growth_ms"],
            sockets_closed=drained["sockets_closed"], sockets_closed_during=drained["sockets_closed_during"],
            closed_after_s=drained["closed_after_s"], close_codes=drained["close_codes"],
            other_frames=drained["other_frames"],
            window_seconds=round(wall, 3), server_cpu_seconds=round(server_cpu, 3),
            server_cpu_pct=round(100 * server_cpu / wall, 1),
            cpu_us_per_msg=round(1e6 * server_cpu / deliveries, 2) if deliveries else None,
            client_cpu_pct=round(100 * client_cpu / wall, 1),
            publisher_cpu_pct=round(100 * published["cpu_seconds"] / max(published["seconds"], 1e-3), 1),
            redis_cpu_pct=(round(100 * (redis_cpu1 - redis_cpu0) / wall, 1)
                           if redis_cpu0 is not None and redis_cpu1 is not None else None),
            machine_cpu_pct=round(100 * (machine1[0] - machine0[0]) / wall, 1),
        )
        # What the rest of the machine (other sessions) took meanwhile: the publisher ran the whole
        # window, Redis is shared, so this is approximate; high values mean a contaminated step.
        ours = server_cpu + client_cpu + published["cpu_seconds"] + (
            (redis_cpu1 - redis_cpu0) if redis_cpu0 is not None and redis_cpu1 is not None else 0)
        row["others_cpu_pct"] = round(max(0.0, 100 * (machine1[0] - machine0[0] - ours) / wall), 1)
    except Exception as exc:  # noqa: BLE001 - one failed step is a row with its reason, not a lost run
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for child in reversed(children):  # clients first, then the publisher, then the servers
            try:
                if child.name == "clients" and child.proc.poll() is None:
                    child.send({"cmd": "close"})
                    child.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
            child.stop()
        for cap in caps:
            cap.close()
        try:
            keys = list(rclient.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                rclient.delete(*keys)
            rclient.close()
        except Exception:  # noqa: BLE001 - keys expire on their own
            pass
        db.unlink(missing_ok=True)
    row["verdict"] = verdict(row)
    return row
