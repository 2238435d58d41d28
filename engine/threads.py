"""TRAIN.THREADS: how many CPU threads torch uses for feature extraction and for the training step.

N (a whole number) fixes both. auto (the default) measures instead of trusting the core count: on a
shared or busy machine a thread pool that waits for a core it does not get makes many small
operations (a prompt learner's text tower) several times slower than one thread, while on a quiet
machine more threads win. So

- the training step: before the first epoch, a forward pass the size of one step (no gradient, the
  RNG untouched) is timed at 1, 2, 4, ... threads up to the cores this process may use, two
  interleaved rounds after a warm-up each, and the step starts at the count whose best pass was
  fastest (a count within 5% of it that uses fewer threads wins, being less exposed to load), logged
  once per process for that method and size. One moment of a shared machine should not decide a run
  of thousands of steps, so training re-checks on its own steps (engine/trainer.py run_epoch, the loop
  every method's step runs in): after 16 steps at the choice, one step at each other count, then
  twice as many steps each time the choice holds (at most 128), switching, logged once per switch, by
  the re-check rule below (StepThreads). A step at another count is the run's own step, not extra
  work; an epoch's short last step is not compared;
- extraction: the first images of a job go through the tower in trial chunks of the size the rest
  will take, two rounds over the candidate counts (1 2 1 2), and the job goes on at the count whose
  best chunk was fastest per image (a slowdown only adds time, so one slow trial does not decide it);
  a long job re-checks: after 8 chunks, then twice as many each time the choice holds (at most 64),
  one chunk at each other count, switching when one beats the current count's median chunk since the
  last check (same 5% rule; ThreadTrials holds this rule for both). Every trial chunk is the job's
  own work, so measuring costs no extra pass, only the chunks a slower count runs; a job too small to
  measure uses the count the process last chose for that model.

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
    the machine's load falls on every count alike) and pick by each count's best call, as ThreadTrials
    decides; the pick and the best seconds per count."""
    for n in candidates:
        with torch_threads(n):
            fn()
    trials = ThreadTrials(candidates, candidates[-1], rounds)
    while trials.pending:
        n = trials.next()
        with torch_threads(n):
            start = time.perf_counter()
            fn()
            trials.record(n, time.perf_counter() - start)
    return trials.choice, trials.compared


class ThreadTrials:
    """The rule both auto choices share, over units of work (an extraction chunk, a training step) timed
    as they run: `rounds` interleaved trial rounds over the candidate counts (1 2 1 2), decided on each
    count's best unit (a slowdown only adds time, so one slow moment does not decide); then, when
    `recheck` is set, after that many steady units at the choice one unit at each other count, switching
    when pick() prefers one over the choice's median unit since the last check. The gap doubles while
    the choice holds (at most `recheck_max`) and starts again at `recheck` after a switch. `changed(old,
    new, compared)` is called after each decision (old None: the first); no rounds: already decided."""

    def __init__(self, candidates: list[int], choice: int, rounds: int, recheck: int = 0, recheck_max: int = 0,
                 changed: Callable[[int | None, int, dict[int, float]], None] | None = None):
        self.candidates, self.choice, self.changed = candidates, choice, changed
        self.pending: list[int] = candidates * rounds  # counts of the trial units still to run, in order
        self.samples: dict[int, list[float]] = {n: [] for n in candidates}
        self.compared: dict[int, float] = {}  # what the last decision compared
        self.decided = not rounds
        self.steady: list[float] = []  # units at `choice` since the last check
        self.recheck, self.recheck_max, self.interval = recheck, recheck_max, recheck
        self.until_check = recheck if recheck else -1  # -1: never

    def next(self) -> int:
        """The count for the next unit."""
        return self.pending[0] if self.pending else self.choice

    def record(self, threads: int, seconds: float) -> None:
        """The unit just run at `threads` (what next() gave) took `seconds`."""
        if self.pending:
            self.pending.pop(0)
            self.samples[threads].append(seconds)
            if not self.pending:
                self._decide()
            return
        if self.until_check < 0:
            return
        self.steady.append(seconds)
        self.until_check -= 1
        if self.until_check == 0:
            self.pending = [n for n in self.candidates if n != self.choice]

    def _decide(self) -> None:
        if not self.decided:  # the first trials: each count's best unit
            self.decided, old = True, None
            self.compared = {n: min(s) for n, s in self.samples.items()}
            self.choice = pick(self.compared)
        else:  # a re-check: the choice's typical unit against each other count's unit just run
            old = self.choice
            self.compared = {n: (statistics.median(self.steady) if n == old else self.samples[n][-1])
                             for n in self.candidates}
            self.choice = pick(self.compared)
            self.interval = self.recheck if self.choice != old else min(2 * self.interval, self.recheck_max)
        self.steady = []
        self.until_check = self.interval if self.recheck else -1
        if self.changed is not None:
            self.changed(old, self.choice, self.compared)


def describe(seconds: dict[int, float], unit: str = "") -> str:
    return ", ".join(f"{n}: {s * 1000:.1f} ms{unit}" for n, s in seconds.items())


def step_threads(setting, key: tuple, probe: Callable[[], object] | None, log: Callable[[str], None]) -> int:
    """Threads for the training step to start at under TRAIN.THREADS `setting`; auto times `probe` once
    per process and `key` (method, model, size), logs the choice once, and training goes on with
    StepThreads. No probe: the latest choice for `key`, else the cores it has."""
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
                f"(a step-sized forward pass per thread count, best of 2: {describe(seconds)}); training "
                f"re-checks the other counts on real steps")
    return _chosen[key]


class ExtractionThreads:
    """Thread counts for the tower calls of one extraction. Under auto, when the job has the images,
    its first calls are trial chunks, ROUNDS rounds over the candidate counts; the job goes on at the
    count with the fastest chunk per image and re-checks the other counts now and then (see the module
    docstring). The process remembers the latest choice per model for jobs too small to measure. A
    fixed count is used throughout."""

    # Images per trial chunk: the chunk the rest of the job runs at on a CPU (engine/features.py
    # CPU_TOWER_CHUNK), so the counts are compared as they will be used: on 2 shared cores, 2 threads
    # were up to 1.5-2x slower per image on chunks of 4 than on chunks of 25, so 4-image trials chose 1
    # thread where 2 were faster (benchmarks/run_all.py section 3 prints both chunk sizes).
    TRIAL = 25
    # Two rounds, interleaved: with one chunk per count, one slow moment during the faster count's chunk
    # chose 1 thread for a whole job where 2 measured 1.69x faster right after (run_all --quick). The
    # first round also pays each count's first-call costs, which the per-count minimum then drops.
    ROUNDS = 2
    # Steady chunks before the first re-check and the most between two: a wrong choice is caught within
    # 200 images, and one that holds costs a chunk at each other count ever more rarely.
    RECHECK, RECHECK_MAX = 8, 64

    @classmethod
    def trial_images(cls, candidates: int) -> int:
        """Images the trials take: a job with fewer is not measured."""
        return cls.TRIAL * cls.ROUNDS * candidates

    def __init__(self, setting, images: int, key: str = "", log: Callable[[str], None] | None = None):
        fixed = parse_threads(setting)
        limit = thread_limit()
        self.candidates = thread_candidates(limit)
        self.key, self.log = ("extraction", key), log
        measure = fixed is None and limit > 1 and images >= self.trial_images(len(self.candidates))
        self.start = fixed if fixed is not None else _chosen.get(self.key, limit)
        # Seconds per image of full chunks; None: not measured, `start` throughout.
        self.plan = ThreadTrials(self.candidates, self.start, self.ROUNDS, self.RECHECK, self.RECHECK_MAX,
                                 self._changed) if measure else None
        self.run: dict[int, int] = {}  # images encoded at each count

    @property
    def trials(self) -> list[int]:
        """Counts of the trial (or re-check) chunks still to run; empty: steady at `choice`."""
        return self.plan.pending if self.plan else []

    @property
    def choice(self) -> int:
        return self.plan.choice if self.plan else self.start

    @property
    def samples(self) -> dict[int, list[float]]:
        return self.plan.samples if self.plan else {n: [] for n in self.candidates}

    def chunks(self, pixels, chunk: int):
        """(images, thread count) for each tower call over a loader batch: trial chunks while measuring,
        then `chunk` images at a time. Call `record` after each."""
        start = 0
        while start < len(pixels):
            n = self.TRIAL if self.trials else chunk
            yield pixels[start : start + n], self.plan.next() if self.plan else self.start
            start += n

    def record(self, threads: int, images: int, seconds: float) -> None:
        """The call just made took `seconds` for `images` images at `threads` threads."""
        self.run[threads] = self.run.get(threads, 0) + images
        # A short chunk (a loader batch's end) is slower per image than a full one: it is not compared,
        # and a trial that came out short is run again on the next chunk.
        if self.plan is not None and images >= self.TRIAL:
            self.plan.record(threads, seconds / images)

    def _changed(self, old: int | None, new: int, per_image: dict[int, float]) -> None:
        if self.log is not None and old is None and _chosen.get(self.key) != new:
            self.log(f"TRAIN.THREADS auto: extraction on {new} thread(s), the fastest per image here, best of "
                     f"{self.ROUNDS} trial chunks per count ({describe(per_image, ' per image')})")
        elif self.log is not None and old is not None and new != old:
            self.log(f"TRAIN.THREADS auto: extraction switches from {old} to {new} thread(s), faster per image "
                     f"now ({describe(per_image, ' per image')})")
        _chosen[self.key] = new


class StepThreads:
    """The training step's count while training runs under auto: starts at `choice` (step_threads'
    pick) and re-checks the other counts on real steps (see the module docstring), switching, logged
    once per switch, when one is clearly faster. A fixed TRAIN.THREADS, or one core, is never re-checked."""

    # Steps at the choice before the first re-check and the most between two: a run of 1,600 steps that
    # holds its choice re-checks about 15 times, one step at each other count each time.
    RECHECK, RECHECK_MAX = 16, 128

    def __init__(self, setting, key: tuple, choice: int, log: Callable[[str], None] | None = None):
        candidates = thread_candidates(thread_limit())
        self.key, self.log = key, log
        measure = parse_threads(setting) is None and len(candidates) > 1 and choice in candidates
        self.plan = ThreadTrials(candidates, choice, 0, self.RECHECK, self.RECHECK_MAX,
                                 self._changed) if measure else None
        self.start = choice
        self.run: dict[int, int] = {}  # steps taken at each count

    @property
    def choice(self) -> int:
        return self.plan.choice if self.plan else self.start

    @contextlib.contextmanager
    def step(self, full: bool = True) -> Iterator[None]:
        """One training step inside the block, at the count the re-checks give, timed; a short step (an
        epoch's last, smaller batch) is not compared."""
        if self.plan is None:
            yield
            return
        import torch

        n = self.plan.next()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        start = time.perf_counter()
        yield
        self.run[n] = self.run.get(n, 0) + 1
        if full:
            self.plan.record(n, time.perf_counter() - start)

    def _changed(self, old: int | None, new: int, seconds: dict[int, float]) -> None:
        if self.log is not None and old is not None and new != old:
            self.log(f"TRAIN.THREADS auto: training step switches from {old} to {new} thread(s), faster now "
                     f"(the median step since the last check against one step at each other count: "
                     f"{describe(seconds)})")
        _chosen[self.key] = new
