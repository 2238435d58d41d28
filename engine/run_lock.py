"""One writer per run folder: a run holds `<run dir>/.run.lock` while it trains or evaluates.

The lock file holds JSON {pid, host, started, command}. It is created complete in one step (written
to a temporary file, then hard-linked to its name, which fails when the name exists), so a reader
never sees half a lock. A lock whose process is gone (same host, pid no longer running, or the pid now
belongs to a later process) is stale and is taken over; a lock from another host cannot be checked
and counts as live.

`lock_holder(run_dir)` is what tables and status tools read to call a run "running".
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from engine.errors import UserError

LOCK_FILE = ".run.lock"
TERMINATED = 128 + signal.SIGTERM  # the exit status of a run stopped by SIGTERM while it held its folder


def lock_path(run_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(run_dir), LOCK_FILE)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, from /proc), or None where unknown;
    it tells a recycled pid from the process that took the lock."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in parentheses may contain spaces
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


_BEING_WRITTEN = {"host": "?", "started": "?", "command": "(a run whose lock is being written)"}


def _read_lock(run_dir: str | os.PathLike) -> dict | None:
    """The lock's record, {} when the file exists but cannot be parsed (debris), None when there is none.
    An unparseable lock a few seconds old may still be being written (file systems without hard
    links): it counts as held."""
    path = lock_path(run_dir)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        return record
    return dict(_BEING_WRITTEN) if age < 10 else {}


def _is_stale(record: dict) -> bool:
    if not record:
        return True  # unparseable: locks are written whole, so this is debris, not a live writer
    if record.get("host") != socket.gethostname():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = record.get("pid_start")
    return started is not None and _process_start(pid) not in (None, started)


def lock_holder(run_dir: str | os.PathLike) -> dict | None:
    """The live holder of run_dir's lock ({pid, host, started, command}), or None when the folder is
    not locked or its lock is stale (its process is gone)."""
    record = _read_lock(run_dir)
    if record is None or _is_stale(record):
        return None
    return record


def describe_holder(record: dict) -> str:
    """'pid 123 on host node1 since 2026-01-02 10:00:00 UTC (5 min ago): python train.py ...'"""
    since = record.get("started", "?")
    try:
        began = datetime.datetime.fromisoformat(since)
        minutes = (datetime.datetime.now(datetime.UTC) - began).total_seconds() / 60
        since = f"{began.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} ({minutes:.0f} min ago)"
    except (TypeError, ValueError):
        pass
    return f"pid {record.get('pid', '?')} on host {record.get('host', '?')} since {since}: {record.get('command', '?')}"


def _new_record(command: str | None) -> dict:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([sys.executable, *sys.argv]),
        "pid_start": _process_start(pid),
    }


def _try_create(path: str, record: dict) -> bool:
    """Create `path` holding `record` in one step; False when it already exists."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".run.lock.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as err:  # a file system without hard links: exclusive create instead
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        try:
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(out, "w", encoding="utf-8") as f:
            json.dump(record, f)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _folder_guard(folder: str):
    """Serialise stale-lock takeovers between processes (flock on the folder itself, no extra file);
    where the file system refuses, creation stays atomic and only the takeover is unguarded."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _make_dirs(folder: str) -> list[str]:
    """mkdir -p, returning the folders it created (deepest last), so an unused run folder can be removed."""
    created = []
    here = os.path.abspath(folder)
    while not os.path.isdir(here):
        created.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    os.makedirs(folder, exist_ok=True)
    return list(reversed(created))


class RunLock:
    """Context manager: hold run_dir's lock for the block; released on exit, on an exception and on
    SIGTERM (turned into SystemExit while the lock is held, so the block unwinds).

    A second holder stops with a UserError naming the running process, or, with wait=True, polls
    until the folder is free. On release, the folders this lock created are removed again when the
    run left nothing in them (a run that stopped before writing anything leaves no trace).
    """

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None, wait: bool = False,
                 poll_s: float = 5.0, on_wait=None):
        self.run_dir = os.path.abspath(os.fspath(run_dir))
        self.path = lock_path(self.run_dir)
        self.command, self.wait, self.poll_s, self.on_wait = command, wait, poll_s, on_wait
        self.record: dict | None = None
        self.created_dirs: list[str] = []
        self.waited = False
        self._old_sigterm = None

    def _make_run_dir(self) -> None:
        try:
            made = _make_dirs(self.run_dir)
        except OSError as err:
            raise UserError(f"Cannot create the output folder {self.run_dir} ({err.strerror}): choose another "
                            "--output-dir (OUTPUT_ROOT for the scripts), or fix its permissions.") from err
        self.created_dirs += [d for d in made if d not in self.created_dirs]

    def acquire(self) -> None:
        try:
            self._take()
        except BaseException:  # refused, or Ctrl-C while waiting: leave no empty folders behind
            self._remove_created_dirs()
            raise
        self._install_sigterm()

    def _take(self) -> None:
        record = _new_record(self.command)
        while True:
            self._make_run_dir()  # again each time: the run we waited for removes a folder it left empty
            with _folder_guard(self.run_dir):
                try:
                    if _try_create(self.path, record):
                        self.record = record
                        break
                except FileNotFoundError:
                    continue
                holder = _read_lock(self.run_dir)
                if holder is not None and _is_stale(holder):
                    try:
                        os.unlink(self.path)  # a killed run's lock: take it over
                    except FileNotFoundError:
                        pass
                    continue
            if holder is None:
                continue  # released between our two looks
            if not self.wait:
                raise UserError(
                    f"{self.run_dir} is in use by another run: {describe_holder(holder)}.\n"
                    "Wait for it to end, or pass --wait-for-lock (WAIT_FOR_LOCK=1 for the scripts) to start when "
                    "it does; to run both, give this one another --output-dir (OUTPUT_ROOT). If that process no "
                    f"longer runs (on another machine), delete {self.path}."
                )
            if not self.waited and self.on_wait is not None:
                self.on_wait(f"waiting for the run holding {self.run_dir} to end: {describe_holder(holder)}")
            self.waited = True
            time.sleep(self.poll_s)

    def release(self) -> None:
        self._restore_sigterm()
        if self.record is None:
            return
        mine = _read_lock(self.run_dir)
        if mine and mine.get("pid") == self.record["pid"] and mine.get("started") == self.record["started"]:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.record = None
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        for folder in reversed(self.created_dirs):  # deepest first; stops at the first one in use
            try:
                os.rmdir(folder)
            except OSError:
                break

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame):
            raise SystemExit(TERMINATED)

        self._old_sigterm = signal.signal(signal.SIGTERM, stop)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
        self._old_sigterm = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
