"""Small helpers: seeding, logging to log.txt, atomic writes, JSON."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# numpy and torch are imported where used: tools that only read JSON (and every --help) start fast.


def set_random_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _ordinary_mode(fd_or_path: int | str) -> None:
    """mkstemp creates files 0600; give them the mode an ordinary open() would (0666 minus the umask),
    so other users of a shared data folder can read split files, caches and results."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fd_or_path, 0o666 & ~umask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _ordinary_mode(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _ordinary_mode(tmp)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def eval_mode(module) -> Iterator[None]:
    """`module` in eval mode inside the block; afterwards each submodule gets its own mode back
    (a plain train(was_training) would switch on the dropout of towers a trainer keeps in eval)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed) for the `with` block.

    Processes that update the same file (say two runs sharing a feature cache) take turns at the
    read-merge-write step, so neither drops the other's entries. Where fcntl is missing (Windows)
    the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def user_cache_dir() -> str:
    """This user's cache folder: $BIOMEDCOOP_CACHE, else $XDG_CACHE_HOME/biomedcoop, else ~/.cache/biomedcoop."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("BIOMEDCOOP_CACHE") or os.path.join(base, "biomedcoop")


def is_writable_dir(path: str | os.PathLike) -> bool:
    """True when files can be created in `path`, or in the nearest existing folder above it."""
    here = os.path.abspath(path)
    while not os.path.isdir(here):
        parent = os.path.dirname(here)
        if parent == here:
            return False
        here = parent
    return os.access(here, os.W_OK | os.X_OK)


def writable_cache_dir(preferred: str, dataset_dir: str, kind: str, option: str) -> str:
    """`preferred` when it can be written; else a per-user folder for this dataset, with a one-line note.

    Data roots on clusters are often read-only; caches then live in the user's cache folder, one
    sub-folder per dataset location, so two datasets of the same name never share entries.
    """
    if is_writable_dir(preferred):
        return preferred
    digest = hashlib.sha1(os.path.abspath(dataset_dir).encode()).hexdigest()[:10]
    fallback = os.path.join(user_cache_dir(), kind, f"{os.path.basename(dataset_dir) or 'data'}-{digest}")
    get_logger().info(f"note: {preferred} is not writable; caching {kind} in {fallback} instead "
                      f"(set {option} to choose the folder)")
    return fallback


LOGGER_NAME = "biomedcoop"


class _TerminalHandler(logging.StreamHandler):
    """Writes through tqdm.write: an active progress bar is cleared first and redrawn after, so bar
    and message never share a line (which used to eat a log line's first characters). Records
    logged with extra={"file_only": True} (the long config dump) go to log.txt only."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise
            self.handleError(record)


class _HeldRecords(logging.Handler):
    """Keeps records in memory until the run's log file is opened (see `setup_logger(defer=True)`)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def setup_logger(output_dir: str | None, defer: bool = False) -> logging.Logger:
    """Log to stdout and to OUTPUT_DIR/log.txt (a timestamped name if log.txt exists, as Dassl does).

    defer=True holds the file's lines in memory until `open_log_file()`: a run that stops before it
    starts (no weights, bad data) then leaves no log.txt, which tables would count as a failed run.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(message)s")
    stream = _TerminalHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    logger.propagate = False
    if output_dir and defer:
        logger.addHandler(_HeldRecords())
    elif output_dir:
        open_log_file(output_dir)
    return logger


def open_log_file(output_dir: str) -> None:
    """Start OUTPUT_DIR/log.txt, writing first the lines held since `setup_logger(defer=True)`."""
    logger = logging.getLogger(LOGGER_NAME)
    held = [h for h in logger.handlers if isinstance(h, _HeldRecords)]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "log.txt")
    if os.path.exists(path):
        path += time.strftime("-%Y-%m-%d-%H-%M-%S")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for h in held:
        for record in h.records:
            handler.handle(record)
        logger.removeHandler(h)
    logger.addHandler(handler)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
