"""Timing helper shared by the benchmarks (no torch import, so memory measurements start clean)."""

from __future__ import annotations

import statistics
import time


def call_times(fn, repeats: int, warmup: bool = True) -> list[float]:
    """Wall times of `repeats` calls of fn, after one warm-up call (skip it for an fn already warm)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeats: int, warmup: bool = True) -> float:
    """Median of call_times: the typical call."""
    return statistics.median(call_times(fn, repeats, warmup))


def fastest_time(fn, repeats: int) -> float:
    """Shortest of call_times: on a shared machine, the least disturbed call."""
    return min(call_times(fn, repeats))
