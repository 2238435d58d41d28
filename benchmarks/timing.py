"""Timing helper shared by the benchmarks (no torch import, so memory measurements start clean)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int, warmup: bool = True) -> float:
    """Median wall time of `repeats` calls of fn, after one warm-up call (skip it for an fn already warm)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
