"""A CPU budget of its own for one process (a Linux cgroup with a CFS quota), for bench/fanout.py.

Why: "two server processes deliver at least 1.8x one" is a question about the server, asked of a
machine with a core per process. On this 2-core machine the client process, Redis and two servers
share two cores, so uncapped the client is the limit long before the servers are. Capping every
server process to the same fraction of a core (`--cpu-cap 0.4`) leaves the client the rest and makes
"one process" and "two processes" the same question a bigger machine answers: how much does a
process deliver within one budget, and does a second budget add as much again.

cgroup v1 (`/sys/fs/cgroup/cpu`, cpu.cfs_quota_us) and v2 (`cpu.max`) are both handled. Needs write
access to the cgroup tree (root in a container usually has it); `available()` says whether it does.
Every cgroup made here is removed in `close()`, its processes moved back to the parent first.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# A short period: the budget is spread over the second in 10 ms slices, not spent early in 100 ms
# ones and then throttled for the rest (which would show as latency spikes rather than a lower rate).
PERIOD_US = 10_000


def _root() -> tuple[Path, int] | None:
    """(directory under which we make cgroups, cgroup version) or None."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, 1
    for v2 in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        controllers = v2 / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return v2, 2
    return None


def available() -> bool:
    found = _root()
    return found is not None and os.access(found[0], os.W_OK)


class CpuCap:
    """`cpus` of CPU time per wall-clock second for the processes added (0.4: 4 ms every 10 ms)."""

    def __init__(self, cpus: float, name: str = "twbench") -> None:
        found = _root()
        if found is None or not os.access(found[0], os.W_OK):
            raise RuntimeError("no writable cgroup cpu controller here: --cpu-cap needs one")
        self.parent, self.version = found
        self.cpus = cpus
        self.path = self.parent / f"{name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path.mkdir()
        quota = max(1000, round(cpus * PERIOD_US))
        if self.version == 1:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move `pid` (all its threads) into the budget; children it forks later follow it."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        """How long the processes waited for their budget (cpu.stat): a capped server that is never
        throttled was not the limit."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        if not self.path.exists():
            return
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (self.parent / "cgroup.procs").write_text(pid)
            except OSError:  # it exited meanwhile
                pass
        self.path.rmdir()

    def __enter__(self) -> "CpuCap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
