"""Run a grid of seeded runs on a pool of local workers or on SLURM (through submitit), resumably.

    python tools/sweep.py --root DATA --methods BiomedCoOp CoOp --datasets btmri busi \\
        --shots 1 2 4 8 16 --seeds 1 2 3 --models BiomedCLIP --launcher local --workers 2
    python tools/sweep.py --grid grid.yaml --launcher slurm --partition gpu --time 120 --gpus 1
    python tools/sweep.py ... --dry-run          # the plan: runs, jobs, image-tower passes, cost
    python tools/sweep.py status SWEEP_DIR       # done / running / failed / pending, and why

The runs are the scripts' own: each (method, dataset, K, model, seed) asks
scripts/<method>/few_shot.sh (or base2new.sh with --protocol base2new) for its train.py commands
(PRINT_RUNS=1), so a sweep writes exactly what the scripts write, where they write it, and
make_tables reads both alike. Before fanning out, one job per (backbone, dataset) encodes the frozen
image features every run of the grid needs, so parallel runs never encode the same images at once.

A run whose results.json exists is skipped (train.py checks that its settings match). A failed run
is recorded with its log under SWEEP_DIR and left alone on the next invocation unless
--retry-failed is given. A grid file (--grid) is YAML with the same keys as the options, e.g.
{methods: [CoOp], datasets: [btmri], shots: [1, 2], seeds: [1, 2, 3], models: [BiomedCLIP],
root: DATA, extra_opts: "OPTIM.MAX_EPOCH 10"}; options given on the command line win.

Job packing (SLURM): runs are packed into jobs of about --job-minutes each, from a rough per-run
estimate on one GPU (start-up plus training steps at a per-step cost by kind of method); the jobs
are submitted as one job array, after a first array of feature-encoding jobs they depend on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import _bootstrap  # noqa: F401

REPO = _bootstrap.REPO
# Method -> (script folder, extra environment). tests check this against scripts/*/few_shot.sh.
METHOD_SCRIPTS: dict[str, tuple[str, dict[str, str]]] = {
    "BiomedCoOp": ("biomedcoop", {}), "CoOp": ("coop", {}), "CoCoOp": ("cocoop", {}),
    "KgCoOp": ("kgcoop", {}), "ProGrad": ("prograd", {}), "ZeroShot": ("zeroshot", {}),
    "ZeroShotEnsemble": ("zeroshot", {"ENSEMBLE": "1"}), "ClipAdapter": ("clip_adapter", {}),
    "TipAdapter": ("tip_adapter", {}), "TipAdapterF": ("tip_adapter_f", {}),
    "LinearProbe": ("linear_probe", {}), "LPPlusPlus": ("lp_plus_plus", {}),
    "CLIPLoRA": ("clip_lora", {}), "CLIPSVD": ("clip_svd", {}),
}
# Rough seconds on one GPU, for packing only: process start and model build, then per training step.
STARTUP_S = 45.0
STEP_S = {"prompt": 0.05, "per_image_prompt": 0.15, "tower": 0.4, "feature": 0.0}


class SweepError(Exception):
    """A mistake in the grid or the sweep folder: printed as one line."""


@dataclass
class Unit:
    """One seed of one script call: one train.py command (few-shot) or two (base-to-novel)."""

    id: str
    label: str
    commands: list[list[str]]
    outputs: list[str]
    group: str  # "<backbone>/<dataset>": the runs whose frozen features one encoding job prepares
    estimate_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)


# ----- planning ------------------------------------------------------------------------------------


def script_commands(method: str, protocol: str, dataset: str, shots: int, model: str, seed: int,
                    root: str, output_root: str, extra_opts: str) -> tuple[list[list[str]], dict[str, str]]:
    """The train.py commands the method's script would run for this seed, without running them."""
    if method not in METHOD_SCRIPTS:
        raise SweepError(f"unknown method '{method}'; valid: {', '.join(sorted(METHOD_SCRIPTS))}")
    folder, env = METHOD_SCRIPTS[method]
    script = os.path.join(REPO, "scripts", folder, f"{protocol}.sh")
    if not os.path.isfile(script):
        raise SweepError(f"{method} has no {protocol} script ({script})")
    args = [root, dataset, str(shots), model] if protocol == "few_shot" else [root, dataset, model]
    full_env = {**os.environ, **env, "PRINT_RUNS": "1", "SEEDS": str(seed), "OUTPUT_ROOT": output_root,
                "EXTRA_OPTS": extra_opts, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", script, *args], env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SweepError(f"{script} {' '.join(args)}: {proc.stderr.strip().splitlines()[-1:]}")
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()], env


def option(argv: list[str], name: str, default: str = "") -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def estimate_seconds(argv: list[str]) -> float:
    """A rough single-GPU duration of one train.py run, from its config (used to pack SLURM jobs)."""
    import train
    from datasets.benchmarks import BENCHMARKS
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import split_trainer_name

    args = train.parse_args(argv[2:])
    cfg = train.setup_cfg(args)
    method, _ = split_trainer_name(cfg.TRAINER.NAME)
    trainer = TRAINER_REGISTRY.get(method)
    if args.eval_only or method.startswith("ZeroShot"):
        return STARTUP_S
    spec = BENCHMARKS.get(cfg.DATASET.NAME)
    n_cls = len(spec.classnames) if spec else 10
    shots = cfg.DATASET.NUM_SHOTS if cfg.DATASET.NUM_SHOTS > 0 else 16
    n_train, batch = shots * n_cls, cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    steps = cfg.OPTIM.MAX_EPOCH * (n_train // batch if n_train >= batch else 1)
    if not trainer.uses_frozen_image_features:
        kind = "tower"
    elif hasattr(trainer, "fit"):
        kind = "feature"
    else:
        kind = "per_image_prompt" if method == "CoCoOp" else "prompt"
    return STARTUP_S + steps * STEP_S[kind]


def plan_units(grid: dict) -> list[Unit]:
    from datasets.benchmarks import BENCHMARKS

    units = []
    protocol = grid["protocol"]
    shots_list = grid["shots"] if protocol == "few_shot" else [16]
    for model in grid["models"]:
        for dataset in grid["datasets"]:
            spec = next((s for s in BENCHMARKS.values() if dataset.lower() in (s.name.lower(), s.config)), None)
            if protocol == "base2new" and spec is not None and not spec.has_base2new:
                print(f"note: {spec.name} has no base-to-novel split; skipped", file=sys.stderr)
                continue
            for method in grid["methods"]:
                for shots in shots_list:
                    for seed in grid["seeds"]:
                        commands, env = script_commands(method, protocol, dataset, shots, model, seed, grid["root"],
                                                        grid["output_root"], grid["extra_opts"])
                        label = f"{method} {dataset} {model} " + (f"K={shots} " if protocol == "few_shot" else
                                                                  "base2new ") + f"seed {seed}"
                        uid = f"{protocol}-{method}-{model}-{dataset.lower()}-k{shots}-s{seed}"
                        outputs = [option(c, "--output-dir") for c in commands]
                        units.append(Unit(uid, label, commands, outputs, f"{model}/{dataset.lower()}", env=env))
    return units


def pack(estimates: list[float], target_s: float) -> list[list[int]]:
    """Indices packed into jobs of at most target_s (first fit, longest first); a longer run gets its own job."""
    jobs: list[list[int]] = []
    loads: list[float] = []
    for i in sorted(range(len(estimates)), key=lambda i: -estimates[i]):
        slot = next((j for j, load in enumerate(loads) if load + estimates[i] <= target_s), None)
        if slot is None:
            jobs.append([i])
            loads.append(estimates[i])
        else:
            jobs[slot].append(i)
            loads[slot] += estimates[i]
    return jobs


# ----- state -----------------------------------------------------------------------------------------


def is_done(unit: Unit) -> bool:
    return all(os.path.isfile(os.path.join(out, "results.json")) for out in unit.outputs)


def state_path(sweep_dir: str, uid: str) -> str:
    return os.path.join(sweep_dir, "state", f"{uid}.json")


def read_state(sweep_dir: str, uid: str) -> dict:
    try:
        with open(state_path(sweep_dir, uid), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_state(sweep_dir: str, uid: str, **state) -> None:
    path = state_path(sweep_dir, uid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def load_units(sweep_dir: str) -> list[Unit]:
    path = os.path.join(sweep_dir, "plan.json")
    if not os.path.isfile(path):
        raise SweepError(f"{sweep_dir} holds no sweep (no plan.json); start one with tools/sweep.py --sweep-dir")
    with open(path, encoding="utf-8") as f:
        return [Unit(**u) for u in json.load(f)["units"]]


def unit_status(sweep_dir: str, unit: Unit) -> str:
    return "done" if is_done(unit) else read_state(sweep_dir, unit.id).get("state", "pending")


# ----- running ---------------------------------------------------------------------------------------


def run_unit(sweep_dir: str, unit: Unit, gpu: str | None = None) -> bool:
    """Run a unit's commands in order, logging to SWEEP_DIR/logs/<id>.log; records done or failed."""
    log = os.path.join(sweep_dir, "logs", f"{unit.id}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = {**os.environ, **unit.env}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    write_state(sweep_dir, unit.id, state="running", log=log, started=time.time(), host=os.uname().nodename)
    with open(log, "a", encoding="utf-8") as out:
        for argv in unit.commands:
            out.write(f"$ {shlex.join(argv)}\n")
            out.flush()
            code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
            if code != 0:
                write_state(sweep_dir, unit.id, state="failed", log=log, returncode=code, ended=time.time())
                return False
    write_state(sweep_dir, unit.id, state="done", log=log, returncode=0, ended=time.time())
    return True


def run_pack(sweep_dir: str, unit_ids: list[str]) -> int:
    """A SLURM job's body: its units one after the other; returns how many failed."""
    units = {u.id: u for u in load_units(sweep_dir)}
    return sum(not run_unit(sweep_dir, units[uid]) for uid in unit_ids if not is_done(units[uid]))


def encode_group(sweep_dir: str, group: str) -> None:
    """Encode, in this one process, every frozen image feature the group's pending runs will read."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import backbones  # noqa: F401
    import datasets  # noqa: F401
    import train
    import trainers  # noqa: F401
    from engine import trainer as engine_trainer
    from engine.utils import set_random_seed

    built: dict[tuple, object] = {}
    original = engine_trainer.build_backbone

    def shared_backbone(cfg):  # one backbone for the whole group, not one per run
        key = (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, cfg.MODEL.BACKBONE.PRETRAINED)
        if key not in built:
            built[key] = original(cfg)
        return built[key]

    engine_trainer.build_backbone = shared_backbone
    try:
        for unit in load_units(sweep_dir):
            if unit.group != group or is_done(unit):
                continue
            for argv in unit.commands:
                args = train.parse_args(argv[2:])
                cfg = train.setup_cfg(args)
                if cfg.SEED >= 0:
                    set_random_seed(cfg.SEED)  # the same few-shot draw as the run itself
                t = engine_trainer.build_trainer(cfg)
                if not t.use_feature_cache:
                    continue
                if not args.eval_only and t.max_epoch > 0:  # zero-shot runs train nothing
                    t.train_batches()
                t.test_features()
    finally:
        engine_trainer.build_backbone = original


def encode_command(sweep_dir: str, group: str) -> list[str]:
    return [sys.executable, os.path.join(REPO, "tools", "sweep.py"), "encode", sweep_dir, group]


def launch_local(sweep_dir: str, units: list[Unit], groups: list[str], workers: int, gpus: list[str]) -> int:
    slots = gpus or [None] * workers
    import queue

    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)

    def with_slot(fn, *args):
        slot = free.get()
        try:
            return fn(*args, slot)
        finally:
            free.put(slot)

    def encode(group, slot):
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {})}
        log = os.path.join(sweep_dir, "logs", f"encode-{group.replace('/', '-')}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            code = subprocess.run(encode_command(sweep_dir, group), env=env, stdout=out, stderr=subprocess.STDOUT)
        if code.returncode != 0:
            print(f"warning: feature encoding for {group} failed (see {log}); its runs encode on their own",
                  file=sys.stderr)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(lambda g: with_slot(encode, g), groups))
        ok = list(pool.map(lambda u: with_slot(lambda unit, slot: run_unit(sweep_dir, unit, slot), u), units))
    return ok.count(False)


def launch_submitit(sweep_dir: str, units: list[Unit], groups: list[str], args) -> int:
    try:
        import submitit
    except ImportError as err:
        raise SweepError("the slurm launcher needs submitit: pip install submitit") from err
    # Job processes import this module by name: give them the tools folder and the repository.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(REPO, "tools"), REPO,
                                                             os.environ.get("PYTHONPATH")]))
    executor = submitit.AutoExecutor(folder=os.path.join(sweep_dir, "submitit"), cluster=args.cluster)
    params = {"timeout_min": args.time, "gpus_per_node": args.gpus, "cpus_per_task": args.cpus,
              "name": os.path.basename(os.path.abspath(sweep_dir))}
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    slurm = {"slurm_partition": args.partition, "slurm_account": args.account,
             "slurm_array_parallelism": args.max_concurrent}
    extra = dict(kv.split("=", 1) for kv in args.slurm_extra)
    executor.update_parameters(**params, **{k: v for k, v in slurm.items() if v})
    if extra:
        executor.update_parameters(slurm_additional_parameters=extra)
    encode_jobs = executor.map_array(encode_group, [sweep_dir] * len(groups), groups) if groups else []
    if args.cluster == "local":
        for job in encode_jobs:  # no scheduler to hold the runs back: wait here
            job.result()
    elif encode_jobs:
        array_id = encode_jobs[0].job_id.split("_")[0]
        executor.update_parameters(slurm_additional_parameters={**extra, "dependency": f"afterany:{array_id}"})
    jobs = pack([u.estimate_s for u in units], args.job_minutes * 60)
    packs = [[units[i].id for i in job] for job in jobs]
    run_jobs = executor.map_array(run_pack, [sweep_dir] * len(packs), packs)
    print(f"submitted {len(encode_jobs)} encoding job(s) and {len(run_jobs)} run job(s) "
          f"({', '.join(sorted({j.job_id.split('_')[0] for j in run_jobs}))}); follow with "
          f"`python tools/sweep.py status {sweep_dir}`")
    if args.cluster == "local":
        return sum(job.result() for job in run_jobs)
    return 0


# ----- commands ----------------------------------------------------------------------------------------


def status(sweep_dir: str, tail: int = 5) -> int:
    units = load_units(sweep_dir)
    by_state: dict[str, list[Unit]] = {}
    for unit in units:
        by_state.setdefault(unit_status(sweep_dir, unit), []).append(unit)
    counts = {s: len(by_state.get(s, [])) for s in ("done", "running", "failed", "pending")}
    print(f"{sweep_dir}: {len(units)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for unit in by_state.get("failed", []):
        log = read_state(sweep_dir, unit.id).get("log", "")
        print(f"\nFAILED {unit.label}  (log: {log})")
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()[-tail:]
        except OSError:
            lines = ["(no log)"]
        print("\n".join(f"    {line}" for line in lines))
    if counts["failed"]:
        print("\nRerun the same sweep command with --retry-failed to run the failed ones again.")
    return 0


def dry_run(units: list[Unit], jobs: list[list[int]], launcher: str) -> None:
    from plan_grid import plan

    totals = plan([c[1:] for u in units for c in u.commands])
    hours = sum(u.estimate_s for u in units) / 3600
    print(f"{len(units)} runs ({sum(map(is_done, units))} already finished), {totals['runs']} train.py commands")
    if launcher == "slurm":
        print(f"{len(jobs)} SLURM job(s) of runs, plus {len({u.group for u in units})} feature-encoding job(s)")
    print(f"image-tower passes, frozen-feature methods: at most {totals['cached']:,} with the shared feature cache "
          f"({totals['uncached']:,} without it)")
    print(f"image-tower passes, tower-tuning methods: about {totals['tuned']:,}")
    print(f"estimated cost: about {hours:.1f} GPU-hours (a rough figure, for packing)")
    for unit in units:
        print(f"  {'done   ' if is_done(unit) else 'pending'}  {unit.label}")


def load_grid(args) -> dict:
    grid: dict = {}
    if args.grid:
        import yaml

        try:
            with open(args.grid, encoding="utf-8") as f:
                grid = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SweepError(f"cannot read the grid file {args.grid}: {err}") from err
        unknown = set(grid) - {"methods", "datasets", "shots", "seeds", "models", "protocol", "root", "output_root",
                               "extra_opts"}
        if unknown:
            raise SweepError(f"{args.grid}: unknown key(s) {sorted(unknown)}")
    for key in ("methods", "datasets", "shots", "seeds", "models", "protocol", "root", "output_root", "extra_opts"):
        value = getattr(args, key)
        if value is not None:
            grid[key] = value
    grid.setdefault("protocol", "few_shot")
    grid.setdefault("seeds", [1, 2, 3])
    grid.setdefault("shots", [16])
    grid.setdefault("output_root", "output")
    grid.setdefault("extra_opts", "")
    missing = [k for k in ("methods", "datasets", "models", "root") if not grid.get(k)]
    if missing:
        raise SweepError(f"the grid needs {', '.join('--' + k for k in missing)} (or a --grid file naming them)")
    if grid["protocol"] not in ("few_shot", "base2new"):
        raise SweepError(f"--protocol must be few_shot or base2new, not {grid['protocol']}")
    grid["output_root"] = os.path.abspath(grid["output_root"])
    grid["root"] = os.path.abspath(grid["root"])
    return grid


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", help="YAML file with the grid (methods, datasets, shots, seeds, models, root, ...)")
    p.add_argument("--methods", nargs="+", help=f"methods: {' '.join(METHOD_SCRIPTS)}")
    p.add_argument("--datasets", nargs="+", help="dataset config names (btmri busi ...)")
    p.add_argument("--shots", nargs="+", type=int, help="K values (few_shot; default 16)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default 1 2 3)")
    p.add_argument("--models", nargs="+", help="backbones (BiomedCLIP CLIP PubMedCLIP PMCCLIP, or twins)")
    p.add_argument("--protocol", choices=["few_shot", "base2new"])
    p.add_argument("--root", help="data root")
    p.add_argument("--output-root", help="where runs go (default output, as the scripts)")
    p.add_argument("--extra-opts", help='config overrides for every run, e.g. "OPTIM.MAX_EPOCH 10"')
    p.add_argument("--sweep-dir", help="plan, state and logs of this sweep (default <output-root>/sweeps/sweep)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--workers", type=int, default=0, help="local: parallel CPU workers when no GPU is visible "
                   "(default 1); with GPUs, one worker per visible GPU")
    p.add_argument("--retry-failed", action="store_true", help="run the runs that failed last time again")
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
    g.add_argument("--slurm-extra", nargs="*", default=[], metavar="KEY=VALUE", help="more SLURM parameters")
    g.add_argument("--cluster", choices=["slurm", "local"], default="slurm",
                   help="local = submitit's local executor: try a SLURM set-up on one machine")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["status"]:
            if len(argv) != 2:
                raise SweepError("usage: python tools/sweep.py status SWEEP_DIR")
            return status(argv[1])
        if argv[:1] == ["encode"]:  # the body of a feature-encoding job
            encode_group(argv[1], argv[2])
            return 0
        args = parse_args(argv)
        grid = load_grid(args)
        sweep_dir = os.path.abspath(args.sweep_dir or os.path.join(grid["output_root"], "sweeps", "sweep"))
        units = plan_units(grid)
        for unit in units:
            unit.estimate_s = estimate_seconds(unit.commands[0])
        jobs = pack([u.estimate_s for u in units], args.job_minutes * 60)
        if args.dry_run:
            dry_run(units, jobs, args.launcher)
            return 0
        os.makedirs(sweep_dir, exist_ok=True)
        with open(os.path.join(sweep_dir, "plan.json"), "w", encoding="utf-8") as f:
            json.dump({"grid": grid, "units": [asdict(u) for u in units]}, f, indent=1)
        todo, failed_before = [], 0
        for unit in units:
            state = unit_status(sweep_dir, unit)
            if state == "failed" and not args.retry_failed:
                failed_before += 1
            elif state != "done":
                todo.append(unit)
        print(f"{len(units)} runs: {len(units) - len(todo) - failed_before} finished, {len(todo)} to run"
              + (f", {failed_before} failed before (skipped; --retry-failed runs them)" if failed_before else ""))
        if todo:
            groups = sorted({u.group for u in todo})
            if args.launcher == "local":
                gpus = visible_gpus()
                failures = launch_local(sweep_dir, todo, groups, max(args.workers, 1), gpus)
            else:
                failures = launch_submitit(sweep_dir, todo, groups, args)
            if failures:
                print(f"{failures} run(s) failed; `python tools/sweep.py status {sweep_dir}` shows why")
                return 1
        return 0
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
