"""A sweep folder: one plan file per submission, the sweep's own records, and where each unit stands.

SWEEP_DIR/plans/<time>-<pid>.json   the grid and units of one invocation, written once, atomically;
                                    its jobs are given its path, so a later (larger, smaller, other)
                                    grid in the same folder never changes what a queued job runs
SWEEP_DIR/state/<unit>.json         the sweep's last attempt at a unit (log, exit status)
SWEEP_DIR/logs/<unit>.log           that attempt's output

Whether a unit is done is the engine's answer (engine.runs.run_status) for each of its run folders,
against the settings its train.py commands ask for; the sweep's own record only adds failures that
left nothing in the run folder (a run that could not start).
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.runs import FAILED, FINISHED, INTERRUPTED, PENDING, RUNNING, STALE, run_status
from engine.utils import write_json
from sweeps.plan import Unit, replacing, requested_settings

STATES = (FINISHED, STALE, FAILED, RUNNING, PENDING, INTERRUPTED)


# ----- plan files ----------------------------------------------------------------------------------------


def write_plan(sweep_dir: str, grid: dict, units: list[Unit], submitted: list[str]) -> str:
    """A new plan file for this submission (never an existing one rewritten); returns its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = os.path.join(sweep_dir, "plans", f"{stamp}-{os.getpid()}.json")
    n = 1
    while os.path.exists(path):  # two submissions in the same second from one process
        n += 1
        path = os.path.join(sweep_dir, "plans", f"{stamp}-{os.getpid()}-{n}.json")
    plan = {"created": time.time(), "grid": grid, "units": [asdict(u) for u in units], "submitted": submitted}
    try:
        write_json(plan, path)
    except OSError as err:
        raise UserError(f"cannot write the sweep's plan in {sweep_dir} ({err.strerror or err}); "
                        "pass --sweep-dir a folder you can write to") from err
    return path


def read_plan(path: str) -> dict:
    """{"grid", "units" (Unit objects), "submitted" (unit ids)} of a plan file."""
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
        plan["units"] = [Unit(**u) for u in plan["units"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot read the sweep plan {path} ({err})") from err
    plan.setdefault("submitted", [u.id for u in plan["units"]])
    return plan


def latest_plan(sweep_dir: str) -> str:
    """The newest plan file of the sweep folder (the grid last asked for)."""
    plans = sorted(glob.glob(os.path.join(sweep_dir, "plans", "*.json")), key=os.path.getmtime)
    if plans:
        return plans[-1]
    legacy = os.path.join(sweep_dir, "plan.json")  # folders written before plans/ existed
    if os.path.isfile(legacy):
        return legacy
    raise UserError(f"{sweep_dir} holds no sweep (no plans/*.json); start one with tools/sweep.py --sweep-dir")


# ----- the sweep's own records -----------------------------------------------------------------------------


def state_path(sweep_dir: str, uid: str) -> str:
    return os.path.join(sweep_dir, "state", f"{uid}.json")


def read_state(sweep_dir: str, uid: str) -> dict:
    try:
        with open(state_path(sweep_dir, uid), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_state(sweep_dir: str, uid: str, **state) -> None:
    write_json(state, state_path(sweep_dir, uid))


def log_path(sweep_dir: str, uid: str) -> str:
    return os.path.join(sweep_dir, "logs", f"{uid}.log")


# ----- where a unit stands ---------------------------------------------------------------------------------


@dataclass
class UnitStatus:
    """A unit's state (one of STATES) from its run folders, with what explains it."""

    state: str
    differences: list[str] = field(default_factory=list)  # stale: "KEY: finished (or saved) -> requested"
    reason: str = ""
    logs: list[str] = field(default_factory=list)  # failed: the sweep's log and the run's log.txt
    log_tail: list[str] = field(default_factory=list)


def unit_status(sweep_dir: str, unit: Unit) -> UnitStatus:
    """The unit's state: running if any run folder is being written, else failed, stale, interrupted,
    pending in that order of precedence, finished when every run folder finished with the requested
    settings. An interrupted run whose last attempt the sweep saw exit on an error is failed (crashed)."""
    runs = [run_status(out, requested_settings(argv)) for argv, out in zip(unit.commands, unit.outputs)]
    record = read_state(sweep_dir, unit.id)
    if record.get("commands") != same_run(unit.commands):
        record = {}  # the sweep's record is of another request (other settings) for this unit
    sweep_log = record.get("log", "")
    states = [r.state for r in runs]
    if RUNNING in states:
        return UnitStatus(RUNNING, reason=runs[states.index(RUNNING)].reason)
    failed = [r for r in runs if r.state == FAILED]
    # The sweep saw the unit fail but its folders hold no trace (it stopped before the run began).
    if not failed and record.get("state") == FAILED and STALE not in states and set(states) != {FINISHED}:
        return UnitStatus(FAILED, reason=f"exit status {record.get('returncode')}", logs=[sweep_log],
                          log_tail=tail(sweep_log))
    if failed:
        logs = [p for p in (sweep_log, os.path.join(failed[0].run_dir, "log.txt")) if p and os.path.isfile(p)]
        return UnitStatus(FAILED, reason=failed[0].reason, logs=logs,
                          log_tail=tail(sweep_log) if record.get("state") == FAILED else failed[0].log_tail[-5:])
    stale = [r for r in runs if r.state == STALE]
    if stale:
        return UnitStatus(STALE, differences=stale[0].differences, reason=stale[0].reason)
    interrupted = [r for r in runs if r.state == INTERRUPTED]
    if interrupted:
        return UnitStatus(INTERRUPTED, reason=interrupted[0].reason,
                          logs=[p for p in (sweep_log,) if p and os.path.isfile(p)])
    if all(s == FINISHED for s in states):
        return UnitStatus(FINISHED)
    return UnitStatus(PENDING)


def same_run(commands: list[list[str]]) -> list[list[str]]:
    """Commands as the sweep's record keeps them: --skip-finished or not, the same runs."""
    return [replacing(c) for c in commands]


def tail(path: str, lines: int = 5) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line for line in f.read().splitlines() if line.strip()][-lines:]
    except OSError:
        return []


def statuses(sweep_dir: str, units: list[Unit]) -> dict[str, UnitStatus]:
    return {u.id: unit_status(sweep_dir, u) for u in units}


def to_run(units: list[Unit], by_id: dict[str, UnitStatus], retry_failed: bool, redo_stale: bool) -> list[Unit]:
    """The units a submission runs: pending and interrupted ones (their runs resume), failed ones when
    retried, stale ones when redone (their commands then replace the finished run, as FORCE=1 does for
    the scripts, or the resume state saved with other settings: sweeps.launch.run_unit)."""
    wanted = {PENDING, INTERRUPTED} | ({FAILED} if retry_failed else set()) | ({STALE} if redo_stale else set())
    todo = [u for u in units if by_id[u.id].state in wanted]
    for unit in todo:
        if by_id[unit.id].state == STALE:
            unit.commands = [replacing(c) for c in unit.commands]
    return todo


def counts(by_id: dict[str, UnitStatus]) -> dict[str, int]:
    found = [s.state for s in by_id.values()]
    return {state: found.count(state) for state in STATES}
