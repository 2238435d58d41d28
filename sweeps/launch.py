"""Running a plan's units: a pool of local workers (one per visible GPU, or N on CPUs), or submitit.

Both launchers run the same two kinds of job, each given the path of the plan file it was
submitted with: `encode_group` (sweeps.encode) per (model, dataset), then `run_pack`, a pack of
units one after the other. A job re-checks every unit before running it, so a job that runs twice
(requeued, resubmitted) skips what is already finished.

On SLURM a run job is `RunPack`, which submitit can checkpoint: at the pre-termination signal
(--signal=USR2@N before the time limit, or a preemption) it passes the signal to the train.py it is
running, which finishes its epoch, saves its resume state and exits (engine/preempt.py); submitit
then requeues the job, which skips the finished units and resumes the interrupted run.
"""

from __future__ import annotations

import os
import queue
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from engine.errors import UserError
from engine.preempt import PREEMPTED, STOP_SIGNAL
from engine.run_lock import TERMINATED
from engine.runs import FINISHED, RUNNING, STALE, drop_resume_state, run_status, stopped_at
from sweeps.plan import REPO, SKIP_FINISHED, Unit, option, pack, requested_settings
from sweeps.state import log_path, read_plan, same_run, unit_status, write_state


def train_command(argv: list[str], nproc: int) -> list[str]:
    """`argv` under torchrun with `nproc` processes when it trains a method that reads pixels
    (engine/distributed.py); evaluation and the methods on cached features stay one process."""
    if nproc <= 1 or "--eval-only" in argv or len(argv) < 2 or not argv[1].endswith("train.py"):
        return argv
    import backbones  # noqa: F401  (the registries split_trainer_name reads)
    import trainers  # noqa: F401
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import TrainerX, split_trainer_name
    from sweeps.plan import train_config

    method, _ = split_trainer_name(option(argv, "--trainer"))
    cls = TRAINER_REGISTRY.get(method)
    cached = cls.uses_frozen_image_features
    if cls.frozen_image_path.__func__ is not TrainerX.frozen_image_path.__func__:  # the run's config decides
        cfg = train_config(argv)[1]
        cached = cls.frozen_image_path(cfg) and cfg.FEATURES.ENABLED
    if cached:
        return argv
    return [argv[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *argv[1:]]


def run_unit(sweep_dir: str, unit: Unit, gpu: str | None = None, nproc: int = 1) -> bool:
    """Run a unit's commands in order, output to SWEEP_DIR/logs/<id>.log; records done or failed."""
    log = log_path(sweep_dir, unit.id)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = {**os.environ, **unit.env}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    record = {"log": log, "commands": same_run(unit.commands)}
    write_state(sweep_dir, unit.id, state="running", started=time.time(), host=socket.gethostname(), **record)
    with open(log, "a", encoding="utf-8") as out:
        for command, run_dir in zip(unit.commands, unit.outputs):
            if SKIP_FINISHED not in command:  # --redo-stale: these settings replace whatever is there
                drop_stale_resume_state(command, run_dir, out)
            argv = train_command(command, nproc)
            out.write(f"$ {shlex.join(argv)}\n")
            out.flush()
            code = _run_child(argv, env, out)
            # Stopped by a signal (preemption, time limit, scancel): resumable, neither done nor failed;
            # the run's folder (resume state, no results) makes the unit interrupted: the next sweep resumes it.
            if code in (PREEMPTED, TERMINATED) or code < 0:
                write_state(sweep_dir, unit.id, state="interrupted", returncode=code, ended=time.time(), **record)
                return False
            if code != 0:
                write_state(sweep_dir, unit.id, state="failed", returncode=code, ended=time.time(), **record)
                return False
    write_state(sweep_dir, unit.id, state="done", returncode=0, ended=time.time(), **record)
    return True


def drop_stale_resume_state(command: list[str], run_dir: str, out) -> None:
    """A resume state saved with other settings would make train.py refuse to start; a redo starts afresh."""
    status = run_status(run_dir, requested_settings(command))
    if status.state == STALE and status.resume is not None:
        drop_resume_state(run_dir)
        out.write(f"note: {run_dir}: dropped the resume state ({stopped_at(status.resume)}) saved with other "
                  f"settings ({'; '.join(status.differences[:4])}); the run starts afresh\n")


_CHILD: list[subprocess.Popen] = []  # the train.py this job process is running, for RunPack.checkpoint


def _run_child(argv: list[str], env: dict, out) -> int:
    # Polled rather than waited on: a signal handler (submitit's) may then wait for the child too.
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    _CHILD[:] = [proc]
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    finally:
        _CHILD.clear()
    return proc.returncode


def _exited(pid: int) -> bool:
    """Whether `pid` has ended (a zombie counts: it is not reaped here, its parent frame does that)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


class RunPack:
    """`run_pack` as a submitit job that can be checkpointed and requeued (SLURM's pre-termination signal)."""

    def __init__(self, nproc: int = 1):
        self.nproc = nproc

    def __call__(self, plan_path: str, unit_ids: list[str], gpu: str | None = None) -> int:
        return run_pack(plan_path, unit_ids, gpu, self.nproc)

    def checkpoint(self, plan_path: str, unit_ids: list[str], gpu: str | None = None):
        """Called by submitit on the signal: let the running train.py save at its epoch end, then requeue
        the same job (it skips what finished and resumes the rest)."""
        import submitit

        for proc in list(_CHILD):
            try:
                os.kill(proc.pid, STOP_SIGNAL)  # SLURM may have signalled it already; once more is harmless
            except ProcessLookupError:
                continue
            while not _exited(proc.pid):
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(self, plan_path, unit_ids, gpu)


def sweep_dir_of(plan_path: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(plan_path)))


def run_pack(plan_path: str, unit_ids: list[str], gpu: str | None = None, nproc: int = 1) -> int:
    """A job's body: the plan's units `unit_ids`, one after the other (pixel-path training under torchrun
    with `nproc` processes when above 1); returns how many failed."""
    sweep_dir = sweep_dir_of(plan_path)
    units = {u.id: u for u in read_plan(plan_path)["units"]}
    failed = 0
    for uid in unit_ids:
        if unit_status(sweep_dir, units[uid]).state in (FINISHED, RUNNING):
            continue  # done meanwhile (a job run twice), or another process is writing it
        failed += not run_unit(sweep_dir, units[uid], gpu, nproc)
    return failed


def encode_command(plan_path: str, group: str) -> list[str]:
    return [sys.executable, "-m", "sweeps.encode", plan_path, group]


def launch_local(plan_path: str, units: list[Unit], workers: int, gpus: list[str], nproc: int = 0) -> list[str]:
    """Encoding jobs, then the units, on `gpus` (one worker each, or one per `nproc` GPUs running pixel-path
    training under torchrun) or `workers` CPU workers; returns the groups whose encoding failed (their
    runs then encode on their own)."""
    sweep_dir = sweep_dir_of(plan_path)
    nproc = max(nproc, 1)
    if nproc > 1 and gpus:
        if len(gpus) < nproc:
            raise UserError(f"--gpus-per-job {nproc}: only {len(gpus)} GPU(s) visible here")
        gpus = [",".join(gpus[i:i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]
    slots = gpus or [None] * max(workers, 1)
    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)

    def with_slot(fn, *args):
        slot = free.get()
        try:
            return fn(*args, slot)
        finally:
            free.put(slot)

    def encode(group: str, slot: str | None) -> str | None:
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {})}
        log = os.path.join(sweep_dir, "logs", f"encode-{group.replace('/', '-')}.log")
        with open(log, "w", encoding="utf-8") as out:
            code = subprocess.run(encode_command(plan_path, group), env=env, stdout=out, stderr=subprocess.STDOUT,
                                  cwd=REPO).returncode
        return None if code == 0 else f"{group} (see {log})"

    os.makedirs(os.path.join(sweep_dir, "logs"), exist_ok=True)
    groups = sorted({u.group for u in units})
    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        encode_failures = [g for g in pool.map(lambda g: with_slot(encode, g), groups) if g]
        list(pool.map(lambda u: with_slot(lambda uid, slot: run_pack(plan_path, [uid], slot, nproc), u.id), units))
    return encode_failures


def slurm_executor(sweep_dir: str, options: dict):
    """A submitit executor for SLURM (or its local executor: cluster "local"), set from `options`
    (tools/sweep.py's options): cluster, time, gpus, cpus, mem_gb, partition, account, max_concurrent."""
    try:
        import submitit
    except ImportError as err:
        raise UserError("the slurm launcher needs submitit: pip install submitit") from err
    # Job processes import this package by name: give them the repository.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    executor = submitit.AutoExecutor(folder=os.path.join(sweep_dir, "submitit"), cluster=options["cluster"])
    gpus = options.get("gpus_per_job") or options["gpus"]  # a torchrun job asks for its processes' GPUs
    params = {"timeout_min": options["time"], "gpus_per_node": gpus, "cpus_per_task": options["cpus"],
              "name": os.path.basename(sweep_dir)}
    if options.get("signal_delay") is not None:  # seconds before the time limit that SIGUSR2 comes
        params["slurm_signal_delay_s"] = options["signal_delay"]
    if options.get("mem_gb"):
        params["mem_gb"] = options["mem_gb"]
    slurm = {"slurm_partition": options.get("partition"), "slurm_account": options.get("account"),
             "slurm_array_parallelism": options.get("max_concurrent")}
    executor.update_parameters(**params, **{k: v for k, v in slurm.items() if v})
    return executor


def slurm_extra(pairs: list[str]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise UserError(f"--slurm-extra takes KEY=VALUE pairs; got {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


def launch_submitit(plan_path: str, units: list[Unit], options: dict) -> tuple[list, list]:
    """Submit the encoding jobs as one array and the packed units (about options["job_minutes"] each)
    as another that waits for it; returns (encoding jobs, run jobs). The local executor waits for both."""
    sweep_dir = sweep_dir_of(plan_path)
    extra = slurm_extra(options.get("slurm_extra") or [])
    executor = slurm_executor(sweep_dir, options)
    if extra:
        executor.update_parameters(slurm_additional_parameters=extra)
    from sweeps.encode import encode_group

    groups = sorted({u.group for u in units})
    encode_jobs = executor.map_array(encode_group, [plan_path] * len(groups), groups) if groups else []
    local = options["cluster"] == "local"
    if local:
        for job in encode_jobs:  # no scheduler to hold the runs back: wait here
            job.result()
    elif encode_jobs:
        array_id = encode_jobs[0].job_id.split("_")[0]
        executor.update_parameters(slurm_additional_parameters={**extra, "dependency": f"afterany:{array_id}"})
    packs = [[units[i].id for i in job] for job in pack([u.estimate_s for u in units], options["job_minutes"] * 60)]
    run_jobs = executor.map_array(RunPack(options.get("gpus_per_job") or 1), [plan_path] * len(packs), packs)
    if local:
        for job in run_jobs:
            job.result()
    return encode_jobs, run_jobs


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
