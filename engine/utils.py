"""Small helpers: seeding, logging to log.txt, atomic writes, JSON."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import UserError

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


class NoSpaceError(UserError, OSError):
    """A write failed for want of disk space (or quota). Also an OSError, so code that carries on
    without an optional cache file still does."""


# What torch.save raises when its stream cannot be written (it hides the errno).
_TORCH_WRITE_FAILURES = ("unexpected pos", "basic_ios::clear", "PytorchStreamWriter failed writing",
                         "file write failed")


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _mount_point(folder: str) -> str:
    here = os.path.abspath(folder)
    while not os.path.ismount(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    return here


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors and arrays inside `obj` (dicts, lists, tuples): what torch.save will write."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)  # torch tensors and numpy arrays
    return nbytes if isinstance(nbytes, int) else 0


def write_failure(err: BaseException, path: str | os.PathLike, needed: int | None) -> UserError | None:
    """A one-line UserError for a write that failed on a full disk, with the sizes involved; None
    for any other failure (which is raised as it is)."""
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    torch_write = isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITE_FAILURES)
    if not (full or torch_write):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    sizes = (f"writing {os.path.basename(path)} needs about {human_size(needed) if needed else 'an unknown size'}, "
             f"{human_size(free) if free is not None else 'an unknown amount'} is free there")
    fix = ("Free some space (feature caches, <DATA>/<NAME>/feature_cache, can be deleted: they are rebuilt) or "
           "write elsewhere (--output-dir / OUTPUT_ROOT, FEATURES.CACHE_DIR); nothing was half-written, so the "
           "same command then continues.")
    if full or (free is not None and needed is not None and free < needed + (64 << 20)):
        return NoSpaceError(f"no space left on {folder} (file system {_mount_point(folder)}): {sizes}. {fix}")
    return UserError(f"writing {path} failed ({str(err).strip().splitlines()[0][:200]}); {sizes}. A full disk, a "
                     f"quota or a network file system that dropped the write are the usual causes. {fix}")


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
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        friendly = write_failure(err, path, len(data))
        if friendly is not None:
            raise friendly from err
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
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        friendly = write_failure(err, path, tensor_bytes(obj))
        if friendly is not None:
            raise friendly from err
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


class _RunLogFile(logging.FileHandler):
    """log.txt. A write that fails (a full disk) is said once on the terminal, and the run goes on
    logging there, instead of a logging traceback for every later line."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):  # a bad log call, not the file: logging's own report
            super().handleError(record)
            return
        friendly = write_failure(err, self.baseFilename, None)
        why = str(friendly).split(". ", 1)[0] if friendly is not None else f"{type(err).__name__}: {err}"
        sys.stderr.write(f"note: {self.baseFilename} cannot be written ({why}); logging to the terminal only\n")
        logging.getLogger(LOGGER_NAME).removeHandler(self)
        try:
            self.close()
        except OSError:
            pass


def discard_held_records() -> None:
    """Drop the lines held for a log file that was never opened (the run stopped before it began)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in [h for h in logger.handlers if isinstance(h, _HeldRecords)]:
        logger.removeHandler(h)


def open_log_file(output_dir: str) -> None:
    """Start OUTPUT_DIR/log.txt, writing first the lines held since `setup_logger(defer=True)`."""
    logger = logging.getLogger(LOGGER_NAME)
    held = [h for h in logger.handlers if isinstance(h, _HeldRecords)]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "log.txt")
    if os.path.exists(path):
        path += time.strftime("-%Y-%m-%d-%H-%M-%S")
    handler = _RunLogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for h in held:
        for record in h.records:
            handler.handle(record)
        logger.removeHandler(h)
    logger.addHandler(handler)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
