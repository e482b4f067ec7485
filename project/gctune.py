"""Garbage collection tuned for long-running servers and workers (measured in bench/README.md).

Everything alive after start-up (Django, the URLconf, the models) is moved out of the collector's
reach with gc.freeze(), so a full collection no longer walks it; and generation 0 is collected
after GC_GEN0_THRESHOLD allocations instead of 700, so short-lived frames and dicts are counted in
fewer, cheaper passes. Reference counting still frees almost everything at once; the cyclic
collector only has less pointless work.
"""

from __future__ import annotations

import gc
import os


def tune_gc() -> None:
    threshold = int(os.environ.get("GC_GEN0_THRESHOLD", "50000"))
    if threshold <= 0:  # 0 turns the tuning off
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
