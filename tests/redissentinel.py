"""A Redis Sentinel group on loopback: a primary, one replica and three sentinels, for failover tests.

Like tests/redisserver.py, private and without persistence; the shared Redis is never touched.
Sentinels judge a primary down after DOWN_AFTER_MS (production: 30 s or so) so a failover completes
in a few seconds. Every wait polls a condition with a deadline.

    with SentinelGroup(tmp_path) as group:     # started; every process killed on exit
        group.sentinels_setting                # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3" (REDIS_SENTINELS)
        old = group.kill_primary()             # SIGKILL: no goodbye to clients or replicas
        new = group.wait_for_failover(old)     # the port the sentinels now name, once it is a primary
        group.client(new)                      # a plain redis.Redis to that node
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.redisserver import REDIS_SERVER, _free_port

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
# Also how long a failed election waits before the next try (twice this): small, so a split vote
# costs seconds, not minutes; large enough for a promotion on a loaded 2-core machine.
FAILOVER_TIMEOUT_MS = 4000


def _wait(predicate: Callable[[], object], *, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except (redis.RedisError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class SentinelGroup:
    def __init__(self, directory: Path, *, master: str = MASTER) -> None:
        self.dir, self.master = Path(directory), master
        self.primary_port, self.replica_port = _free_port(), _free_port()
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def _spawn(self, port: int, args: list[str]) -> None:
        log = open(self.dir / f"redis-{port}.log", "ab")
        self.procs[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor

    def _data_node(self, port: int, *extra: str) -> None:
        self._spawn(port, [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                           "no", "--dir", str(self.dir), "--loglevel", "notice", *extra])

    def _sentinel(self, port: int) -> None:
        conf = self.dir / f"sentinel-{port}.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} 2\n"
                        f"sentinel down-after-milliseconds {self.master} {DOWN_AFTER_MS}\n"
                        f"sentinel failover-timeout {self.master} {FAILOVER_TIMEOUT_MS}\n"
                        f"sentinel parallel-syncs {self.master} 1\n")
        # Debian's redis-server is also the sentinel (`redis-sentinel` is the same binary).
        sentinel = shutil.which("redis-sentinel")
        self._spawn(port, [sentinel, str(conf)] if sentinel else [REDIS_SERVER, str(conf), "--sentinel"])

    def start(self, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        left = lambda: max(0.1, deadline - time.monotonic())  # noqa: E731
        # Redis 7 waits 5 s by default for more replicas before a full sync: one is all there is.
        self._data_node(self.primary_port, "--repl-diskless-sync-delay", "0")
        self._data_node(self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        _wait(lambda: self._info(self.replica_port, "replication").get("master_link_status") == "up",
              timeout=left(), what="the replica to sync")
        for port in self.sentinel_ports:
            self._sentinel(port)
        # A failover needs a majority of the sentinels to know each other (hello messages every
        # 2 s) and a replica they have seen healthy: killing the primary before would strand it.
        _wait(self._ready, timeout=left(), what="three sentinels that agree and see the replica")

    def _ready(self) -> bool:
        for port in self.sentinel_ports:
            client = self.client(port)
            try:
                state = client.sentinel_master(self.master)
                replicas = client.sentinel_slaves(self.master)
                client.execute_command("SENTINEL", "CKQUORUM", self.master)
            finally:
                client.close()
            if state["num-other-sentinels"] < 2 or state["port"] != self.primary_port:
                return False
            if not any(r["port"] == self.replica_port and r["flags"] == "slave"
                       and r.get("master-link-status") == "ok" for r in replicas):
                return False
        return True

    def _info(self, port: int, section: str) -> dict:
        client = self.client(port)
        try:
            return client.info(section)
        finally:
            client.close()

    def named_primary(self) -> set[int]:
        """The primary's port as each reachable sentinel names it."""
        ports = set()
        for port in self.sentinel_ports:
            client = self.client(port)
            try:
                ports.add(int(client.sentinel_get_master_addr_by_name(self.master)[1]))
            except (redis.RedisError, OSError):
                pass
            finally:
                client.close()
        return ports

    def kill_primary(self) -> int:
        """SIGKILL the node the sentinels name primary; returns its port."""
        (port,) = self.named_primary()
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=5)
        return port

    def wait_for_failover(self, old: int, *, timeout: float = 20) -> int:
        """The new primary's port, once every sentinel names it and it acts as primary."""
        def promoted() -> int | None:
            named = self.named_primary()
            if len(named) != 1 or old in named:
                return None
            (port,) = named
            return port if self._info(port, "replication").get("role") == "master" else None

        return _wait(promoted, timeout=timeout, what=f"the sentinels to promote a replica of :{old}")

    def stop(self) -> None:
        procs, self.procs = list(self.procs.values()), {}
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # no persistence, nothing to flush: the quickest bounded teardown
        for proc in procs:
            proc.wait(timeout=5)

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
