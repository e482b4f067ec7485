"""bench/cpucap.py: a process moved into a cap gets no more CPU than its budget, waits for it, and the
cgroup is gone afterwards. Skipped where the cgroup tree is not writable (not root, or no cpu
controller): `fanout.py --cpu-cap` refuses to start there instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cpucap  # noqa: E402

pytestmark = pytest.mark.skipif(not cpucap.available(), reason="no writable cgroup cpu controller here")

SPIN = "import time\nt0 = time.monotonic()\nwhile time.monotonic() - t0 < 1.0: pass\nprint(time.process_time())"


def test_a_capped_busy_process_gets_its_budget_only_and_the_cgroup_is_removed():
    with cpucap.CpuCap(0.2) as cap:
        child = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
        cap.add(child.pid)
        out, _ = child.communicate(timeout=30)
        throttled = cap.throttled_seconds()
        path = cap.path
    # Spinning for 1 s of wall time: uncapped it would use ~1 s of CPU. Capped at 0.2 CPU it gets
    # about 0.2 s (plus what it used before it was moved in, and one period of slack).
    assert float(out) < 0.6
    assert throttled > 0
    assert not path.exists()
