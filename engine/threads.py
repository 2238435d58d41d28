"""TRAIN.THREADS: how many CPU threads torch uses for feature extraction and for the training step.

N (a whole number) fixes both. auto (the default) measures instead of trusting the core count: on a
shared or busy machine a thread pool that waits for a core it does not get makes many small
operations (a prompt learner's text tower) several times slower than one thread, while on a quiet
machine more threads win. So

- the training step: before the first epoch, a forward pass the size of one step (no gradient, the
  RNG untouched) is timed at 1, 2, 4, ... threads up to the cores this process may use, interleaved
  over a few rounds; the fastest count (a count within 5% of it that uses fewer threads wins, being
  less exposed to load) is kept for the rest of the process for that method and size, and logged once;
- extraction: the first batches of the image tower are encoded at each candidate count in turn and the
  rest at the fastest per image, so measuring costs no extra pass.

The counts never change which numbers a method computes, only how fast; CPU reductions may round
differently at another count, so for bit-identical reruns on a CPU fix TRAIN.THREADS. OMP_NUM_THREADS,
when set, caps the candidates. On CUDA the step runs on the GPU and only extraction's decoding uses
the CPU, so nothing is measured there.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator

from engine.errors import UserError

AUTO = "auto"
TIE = 1.05  # a count within 5% of the fastest counts as fast as it
_chosen: dict[tuple, int] = {}  # (what, size...) -> thread count, once per process


def parse_threads(value) -> int | None:
    """TRAIN.THREADS as a count, or None for auto."""
    text = str(value).strip().lower()
    if text == AUTO:
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UserError(f"TRAIN.THREADS must be auto or a whole number of threads of at least 1; got {value!r}.")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_limit() -> int:
    """The most threads auto tries: this process's cores, capped by OMP_NUM_THREADS when it is set."""
    cores = available_cores()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        cores = min(cores, int(env))
    return max(1, cores)


def thread_candidates(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, then `limit` itself."""
    out, n = [], 1
    while n < limit:
        out.append(n)
        n *= 2
    return [*out, limit]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch on `n` intra-op threads inside the block (None: unchanged); the previous count afterwards."""
    import torch  # here, so that checking TRAIN.THREADS in a config does not load torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def pick(seconds: dict[int, float]) -> int:
    """The fewest threads whose time is within TIE of the fastest."""
    best = min(seconds.values())
    return min(n for n, s in seconds.items() if s <= best * TIE)


def fastest_threads(fn: Callable[[], object], candidates: list[int], rounds: int = 2) -> tuple[int, dict[int, float]]:
    """Time `fn` at each count (one warm-up call each, then `rounds` interleaved rounds, so a change in
    the machine's load falls on every count alike); the pick and the median seconds per count."""
    times: dict[int, list[float]] = {n: [] for n in candidates}
    for n in candidates:
        with torch_threads(n):
            fn()
    for _ in range(rounds):
        for n in candidates:
            with torch_threads(n):
                start = time.perf_counter()
                fn()
                times[n].append(time.perf_counter() - start)
    medians = {n: statistics.median(t) for n, t in times.items()}
    return pick(medians), medians


def describe(seconds: dict[int, float], unit: str = "") -> str:
    return ", ".join(f"{n}: {s * 1000:.1f} ms{unit}" for n, s in seconds.items())


def step_threads(setting, key: tuple, probe: Callable[[], object] | None, log: Callable[[str], None]) -> int:
    """Threads for the training step under TRAIN.THREADS `setting`; auto times `probe` once per process
    and `key` (method, model, size) and logs the choice once. No probe: the cores it has."""
    fixed = parse_threads(setting)
    if fixed is not None:
        return fixed
    limit = thread_limit()
    if limit == 1:
        return 1
    if key not in _chosen:
        if probe is None:
            _chosen[key] = limit
            log(f"TRAIN.THREADS auto: training step on {limit} thread(s) (nothing to time before training)")
        else:
            _chosen[key], seconds = fastest_threads(probe, thread_candidates(limit))
            log(f"TRAIN.THREADS auto: training step on {_chosen[key]} thread(s), the fastest for its size here "
                f"(a step-sized forward pass per thread count: {describe(seconds)})")
    return _chosen[key]


class ExtractionThreads:
    """Thread counts for the batches of one extraction: under auto, batch 0 warms up at the limit,
    batches 1..k try each candidate, the rest use the fastest per image; a fixed count throughout."""

    def __init__(self, setting, batches: int, log: Callable[[str], None] | None = None):
        fixed = parse_threads(setting)
        limit = thread_limit()
        self.candidates = thread_candidates(limit)
        self.log = log
        self.per_image: dict[int, float] = {}
        # Too few batches to measure without slowing most of them: the cores it has.
        self.measuring = fixed is None and limit > 1 and batches >= len(self.candidates) + 3
        self.choice = fixed if fixed is not None else limit
        self.batch = 0

    def next(self) -> int:
        """The count for the next batch."""
        if self.measuring and 1 <= self.batch <= len(self.candidates):
            return self.candidates[self.batch - 1]
        return self.choice

    def record(self, threads: int, images: int, seconds: float) -> None:
        """The batch just encoded took `seconds` for `images` images at `threads` threads."""
        if self.measuring and 1 <= self.batch <= len(self.candidates):
            self.per_image[threads] = seconds / max(images, 1)
            if self.batch == len(self.candidates):
                self.choice = pick(self.per_image)
                if self.log is not None:
                    self.log(f"TRAIN.THREADS auto: extraction on {self.choice} thread(s), the fastest per image "
                             f"here ({describe(self.per_image, ' per image')})")
        self.batch += 1
