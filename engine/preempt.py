"""A pre-termination signal (SLURM's --signal=USR2@N, submitit's preemption / time-limit warning):
the run finishes the epoch it is in, saves its resume state and exits with PREEMPTED; the same
command (the requeued job) then resumes from that epoch. SIGTERM still stops at once (engine.run_lock),
resuming from the last epoch saved before it.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNAL = signal.SIGUSR2
PREEMPTED = 75  # EX_TEMPFAIL: stopped on request, resume state saved; run the same command again

_requested = threading.Event()


class Preempted(Exception):
    """Raised at an epoch end after a stop signal; carries the number of epochs done."""

    def __init__(self, epochs_done: int):
        super().__init__(epochs_done)
        self.epochs_done = epochs_done


def _on_signal(signum, frame) -> None:
    _requested.set()


def install() -> None:
    """Catch STOP_SIGNAL (its default action would kill the run without saving); main thread only.
    A new run starts with no stop requested (train.main may run several times in one process)."""
    _requested.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(STOP_SIGNAL, _on_signal)


def requested() -> bool:
    return _requested.is_set()
