"""TRAIN.THREADS: how many CPU threads torch uses for feature extraction and for the training step.

N (a whole number) fixes both. auto (the default) measures instead of trusting the core count: on a
shared or busy machine a thread pool that waits for a core it does not get makes many small
operations (a prompt learner's text tower) several times slower than one thread, while on a quiet
machine more threads win. So

- the training step: before the first epoch, a forward pass the size of one step (no gradient, the
  RNG untouched) is timed at 1, 2, 4, ... threads up to the cores this process may use, interleaved
  over a few rounds; the fastest count (a count within 5% of it that uses fewer threads wins, being
  less exposed to load) is kept for the rest of the process for that method and size, and logged once;
- extraction: the first images of a job go through the tower in chunks of the size the rest will
  take, one at each candidate count, and the rest at the fastest per image, so measuring costs no
  extra pass; a job too small to measure uses the count the process last measured for that model.

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
    """Thread counts for the tower calls of one extraction. Under auto, when the job has the images,
    its first calls are small trial chunks: one warm-up at the cores it has, then one per candidate
    count; the rest of the job runs at the fastest per image, which the process remembers (per model)
    for jobs too small to measure. A fixed count is used throughout."""

    # Images per trial chunk: the chunk the rest of the job runs at on a CPU (engine/features.py
    # CPU_TOWER_CHUNK), so the counts are compared as they will be used: on 2 shared cores, 2 threads
    # were up to 1.5-2x slower per image on chunks of 4 than on chunks of 25, so 4-image trials chose 1
    # thread where 2 were faster (benchmarks/run_all.py section 3 prints both chunk sizes).
    TRIAL = 25

    def __init__(self, setting, images: int, key: str = "", log: Callable[[str], None] | None = None):
        fixed = parse_threads(setting)
        limit = thread_limit()
        candidates = thread_candidates(limit)
        self.key, self.log = ("extraction", key), log
        self.per_image: dict[int, float] = {}
        measure = fixed is None and limit > 1 and images >= self.TRIAL * (len(candidates) + 2)
        self.trials = [limit, *candidates] if measure else []  # the first is the warm-up
        self.warm_up = measure
        self.choice = fixed if fixed is not None else _chosen.get(self.key, limit)

    def chunks(self, pixels, chunk: int):
        """(images, thread count) for each tower call over a loader batch: trial chunks while measuring,
        then `chunk` images at a time. Call `record` after each."""
        start = 0
        while start < len(pixels):
            n = self.TRIAL if self.trials else chunk
            yield pixels[start : start + n], self.trials[0] if self.trials else self.choice
            start += n

    def record(self, threads: int, images: int, seconds: float) -> None:
        """The call just made took `seconds` for `images` images at `threads` threads."""
        if not self.trials:
            return
        self.trials.pop(0)
        if self.warm_up:
            self.warm_up = False
        else:
            self.per_image[threads] = seconds / max(images, 1)
        if not self.trials:
            self.choice = pick(self.per_image)
            if _chosen.get(self.key) != self.choice and self.log is not None:
                self.log(f"TRAIN.THREADS auto: extraction on {self.choice} thread(s), the fastest per image "
                         f"here ({describe(self.per_image, ' per image')})")
            _chosen[self.key] = self.choice
