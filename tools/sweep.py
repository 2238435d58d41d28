"""Run a grid of seeded runs on a pool of local workers or on SLURM (through submitit), resumably.

    python tools/sweep.py --root DATA --methods BiomedCoOp CoOp --datasets btmri busi \\
        --shots 1 2 4 8 16 --seeds 1 2 3 --models BiomedCLIP --launcher local --workers 2
    python tools/sweep.py --grid configs/sweeps/example_grid.yaml --launcher slurm --partition gpu
    python tools/sweep.py ... --dry-run          # the plan: runs, jobs, image-tower passes, cost
    python tools/sweep.py ... --quick            # a trial of the whole grid: TRAIN.TRIAL_EPOCHS 1 for every run
    python tools/sweep.py status SWEEP_DIR       # finished / stale / failed / running / pending / interrupted

The runs are the scripts' own (scripts/<method>/few_shot.sh; base2new.sh with --protocol base2new;
dg.sh with --protocol dg: each dataset is a source, trained few-shot, then scored on its
domain-generalisation targets), written where the scripts write them. A run is finished when its
results.json records the settings asked for now; one made with other settings is stale and is left
alone, named with the keys that differ, unless --redo-stale (the scripts' FORCE=1) replaces it. A
run stopped mid-way (killed, preempted, cancelled) with its resume state is interrupted, and the
next sweep resumes it; a failed run (it crashed, or left nothing to resume) is left alone unless
--retry-failed. Before fanning out, one job per (model, dataset) encodes the frozen image features
the runs will read. A grid file is YAML with the option names as keys (a single value may stand for
a list); options given on the command line win. The local launcher ends with a summary and exits 1
unless every run of the grid is finished.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from engine.errors import UserError
from engine.runs import FAILED, FINISHED, INTERRUPTED, PENDING, STALE
from sweeps import grid as grids
from sweeps import launch, plan, state


def report(units, by_id, sweep_dir: str, tail: bool = False) -> dict:
    """Counts, then each stale run with its differing keys and each failed run with its logs."""
    counts = state.counts(by_id)
    print(f"{len(units)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for unit in units:
        s = by_id[unit.id]
        if s.state == STALE:
            resume = s.reason.startswith("its resume state")  # no results.json: an interrupted run of other settings
            print(f"STALE  {unit.label}: {'; '.join(s.differences[:4]) or s.reason}"
                  + (f" ({s.reason})" if resume and s.differences else ""))
        elif s.state == FAILED:
            print(f"FAILED {unit.label}: {s.reason} (log: {', '.join(s.logs) or 'none'})")
            if tail:
                print("\n".join(f"    {line}" for line in s.log_tail))
        elif s.state == INTERRUPTED:
            print(f"INTERRUPTED {unit.label}: {s.reason}")
    if counts[STALE]:
        print("Stale runs were made with other settings: --redo-stale replaces them with these settings "
              "(another --output-root keeps both).")
    if counts[INTERRUPTED]:
        print("Interrupted runs (killed, preempted or cancelled mid-run) resume where they stopped when the sweep "
              "is run again; no option needed.")
    if counts[FAILED]:
        print(f"--retry-failed runs failed runs again; `python tools/sweep.py status {sweep_dir}` shows their logs.")
    return counts


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", help="YAML file with the grid (methods, datasets, shots, seeds, models, root, ...)")
    p.add_argument("--methods", nargs="+", help=f"methods: {' '.join(grids.method_scripts())}")
    p.add_argument("--datasets", nargs="+", help="dataset config names (btmri busi ...)")
    p.add_argument("--shots", nargs="+", type=int, help="K values (few_shot and dg; default 16)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default 1 2 3)")
    p.add_argument("--models", nargs="+", help="backbones (BiomedCLIP CLIP PubMedCLIP PMCCLIP, or twins)")
    p.add_argument("--protocol", choices=grids.PROTOCOLS,
                   help="few_shot (default), base2new, or dg (datasets are DG sources: btmri busi)")
    p.add_argument("--root", help="data root")
    p.add_argument("--output-root", help="where runs go (default output, as the scripts)")
    p.add_argument("--extra-opts", help='config overrides for every run, e.g. "OPTIM.MAX_EPOCH 10"')
    p.add_argument("--quick", action="store_true", help=f"a trial run of the grid: adds {grids.QUICK_OPTS} "
                   "(every method, CLIP-LoRA's iteration budget included, trains at most one epoch)")
    p.add_argument("--sweep-dir", help="plans, state and logs of this sweep (default <output-root>/sweeps/sweep)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--workers", type=int, default=0, help="local: parallel CPU workers when no GPU is visible "
                   "(default 1); with GPUs, one worker per visible GPU")
    p.add_argument("--retry-failed", action="store_true",
                   help="run the runs that failed last time again (interrupted runs resume without it)")
    p.add_argument("--redo-stale", action="store_true",
                   help="replace runs finished with other settings (FORCE=1 for the scripts)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and cost; run nothing")
    g = p.add_argument_group("slurm")
    g.add_argument("--partition", default="")
    g.add_argument("--account", default="")
    g.add_argument("--time", type=int, default=120, help="minutes per job (default 120)")
    g.add_argument("--job-minutes", type=float, default=60, help="target duration of a packed job (default 60)")
    g.add_argument("--gpus", type=int, default=1, help="GPUs per job (default 1)")
    g.add_argument("--cpus", type=int, default=8, help="CPUs per job (default 8)")
    g.add_argument("--mem-gb", type=int, default=0, help="memory per job in GB (default: the cluster's)")
    g.add_argument("--max-concurrent", type=int, default=0, help="jobs of the array running at once (0 = no cap)")
    g.add_argument("--gpus-per-job", type=int, default=0, help="pixel-path runs train on N GPUs under torchrun")
    g.add_argument("--signal-delay", type=int, help="seconds before --time that SIGUSR2 comes (default 90): requeue")
    g.add_argument("--slurm-extra", nargs="*", default=[], metavar="KEY=VALUE", help="more SLURM parameters")
    g.add_argument("--cluster", choices=["slurm", "local"], default="slurm",
                   help="local = submitit's local executor: try a SLURM set-up on one machine")
    return p.parse_args(argv)


def dry_run(units, by_id, jobs, launcher: str) -> None:
    from sweeps.cost import cost_lines, count_passes

    commands = [c for u in units for c in u.commands]
    print(f"{len(units)} units (one seed of one script call each), {len(commands)} train.py command(s)")
    print("\n".join(cost_lines(count_passes(commands))))
    if launcher == "slurm":
        print(f"{len(jobs)} SLURM job(s) of runs, plus {len({u.group for u in units})} feature-encoding job(s)")
    hours = sum(u.estimate_s for u in units) / 3600
    print(f"estimated cost: about {hours:.1f} GPU-hours (a rough figure, for packing)")
    print(f"each unit's state ({', '.join(state.STATES)}) and name:")
    for unit in units:
        print(f"  {by_id[unit.id].state:<11}  {unit.label}")


def sweep(args) -> int:
    grid = grids.build_grid(grids.read_grid_file(args.grid) if args.grid else {}, vars(args), args.grid or "the grid")
    grid = grids.with_quick(grid) if args.quick else grid
    sweep_dir = os.path.abspath(args.sweep_dir or os.path.join(grid["output_root"], "sweeps", "sweep"))
    notes: list[str] = []
    units = plan.plan_units(grid, notes, estimate=True)
    print("".join(f"note: {note}\n" for note in notes), end="", file=sys.stderr)
    by_id = state.statuses(sweep_dir, units)
    if args.dry_run:
        dry_run(units, by_id, plan.pack([u.estimate_s for u in units], args.job_minutes * 60), args.launcher)
        return 0
    todo = state.to_run(units, by_id, args.retry_failed, args.redo_stale)
    plan_path = state.write_plan(sweep_dir, grid, units, [u.id for u in todo])
    left = {s: n for s, n in state.counts(by_id).items() if n and s != PENDING}
    print(f"{len(units)} runs: " + ", ".join(f"{n} {s}" for s, n in left.items()) + (", " if left else "")
          + f"{len(todo)} to run (plan: {plan_path})")
    if args.launcher == "slurm" and todo:
        encode_jobs, run_jobs = launch.launch_submitit(plan_path, todo, vars(args))
        print(f"submitted {len(encode_jobs)} encoding job(s) and {len(run_jobs)} run job(s); "
              f"follow with `python tools/sweep.py status {sweep_dir}`")
        if args.cluster != "local":
            return 0
    elif todo:
        for group in launch.launch_local(plan_path, todo, args.workers, launch.visible_gpus(), args.gpus_per_job):
            print(f"warning: feature encoding for {group} failed; its runs encoded on their own", file=sys.stderr)
    print("summary: ", end="")
    counts = report(units, state.statuses(sweep_dir, units), sweep_dir)
    return 0 if counts[FINISHED] == len(units) else 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["status"]:
            if len(argv) != 2:
                raise UserError("usage: python tools/sweep.py status SWEEP_DIR")
            units = state.read_plan(state.latest_plan(argv[1]))["units"]
            report(units, state.statuses(argv[1], units), argv[1], tail=True)
            return 0
        return sweep(parse_args(argv))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader of the output stopped (`--dry-run | head`): no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # as a shell reports a command stopped by SIGPIPE
    sys.exit(code)
