"""Units of a sweep: the method scripts' own train.py commands, grouped by seed, with cost estimates.

Each (method, dataset, K, model) asks scripts/<method>/<protocol>.sh for its train.py commands
(PRINT_RUNS=1), so a sweep runs exactly what the scripts run, where they write it. A unit is one
seed of one such call: one command (few-shot), two (base-to-novel: train on base, test on new), or
for domain generalisation the source's few-shot run and then one evaluation per target.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

from engine.errors import UserError
from sweeps.grid import method_scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Rough seconds on one GPU, for packing only: process start and model build, then per training step.
STARTUP_S = 45.0
STEP_S = {"prompt": 0.05, "per_image_prompt": 0.15, "tower": 0.4, "feature": 0.0}
SKIP_FINISHED = "--skip-finished"


@dataclass
class Unit:
    """One seed of one script call: one train.py command (few-shot), two (base-to-novel), or the source run
    and its evaluation on each target (dg)."""

    id: str
    label: str
    commands: list[list[str]]
    outputs: list[str]
    group: str  # "<backbone>/<dataset>": the runs whose frozen features one encoding job prepares
    estimate_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)


def option(argv: list[str], name: str, default: str = "") -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def replacing(argv: list[str]) -> list[str]:
    """The command without --skip-finished: it runs again over a finished run made with other
    settings (what FORCE=1 does for the scripts)."""
    return [a for a in argv if a != SKIP_FINISHED]


def script_commands(method: str, protocol: str, dataset: str, shots: int, model: str, seeds: list[int],
                    root: str, output_root: str, extra_opts: str) -> tuple[dict[int, list[list[str]]], dict]:
    """{seed: the train.py commands the method's script would run for it}, without running them."""
    folder, env = method_scripts()[method]
    script = os.path.join(REPO, "scripts", folder, f"{protocol}.sh")
    if not os.path.isfile(script):
        raise UserError(f"{method} has no {protocol} script ({script})")
    args = [root, dataset, model] if protocol == "base2new" else [root, dataset, str(shots), model]
    full_env = {**os.environ, **env, "PRINT_RUNS": "1", "SEEDS": " ".join(map(str, seeds)),
                "OUTPUT_ROOT": output_root, "EXTRA_OPTS": extra_opts, "PYTHON": sys.executable}
    full_env.pop("FORCE", None)  # the sweep decides what to replace (--redo-stale), not the caller's shell
    proc = subprocess.run(["bash", script, *args], env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"scripts/{folder}/{protocol}.sh {' '.join(args)}: {last}")
    by_seed: dict[int, list[list[str]]] = {}
    for line in proc.stdout.splitlines():
        if line.strip():
            argv = shlex.split(line)
            by_seed.setdefault(int(option(argv, "--seed", "-1")), []).append(argv)
    return by_seed, env


def plan_units(grid: dict, notes: list[str] | None = None, estimate: bool = False) -> list[Unit]:
    """Every unit of the grid, in model, dataset, method, K, seed order, with its rough duration when
    `estimate`. Datasets without a base-to-novel split are left out of a base2new grid, with a line in
    `notes`."""
    from datasets.benchmarks import BENCHMARKS

    units = []
    protocol = grid["protocol"]
    shots_list = [16] if protocol == "base2new" else grid["shots"]
    for model in grid["models"]:
        for dataset in grid["datasets"]:
            spec = next((s for s in BENCHMARKS.values() if dataset.lower() in (s.name.lower(), s.config)), None)
            if protocol == "base2new" and spec is not None and not spec.has_base2new:
                if notes is not None:
                    notes.append(f"{spec.name} has no base-to-novel split; skipped")
                continue
            for method in grid["methods"]:
                for shots in shots_list:
                    by_seed, env = script_commands(method, protocol, dataset, shots, model, grid["seeds"],
                                                   grid["root"], grid["output_root"], grid["extra_opts"])
                    for seed in grid["seeds"]:
                        commands = by_seed.get(seed, [])
                        task = {"few_shot": f"K={shots}", "dg": f"DG K={shots}"}.get(protocol, "base2new")
                        uid = f"{protocol}-{method}-{model}-{dataset.lower()}-k{shots}-s{seed}"
                        outputs = [option(c, "--output-dir") for c in commands]
                        units.append(Unit(uid, f"{method} {dataset} {model} {task} seed {seed}", commands, outputs,
                                          f"{model}/{dataset.lower()}", env=env))
    if estimate:
        for unit in units:
            unit.estimate_s = estimate_seconds(unit.commands[0]) if unit.commands else 0.0
    return units


# ----- a command's config -------------------------------------------------------------------------------


def train_config(argv: list[str]):
    """(args, cfg) of a recorded `python train.py ...` command, built by train.py's own functions
    (the config is frozen, so one build per command serves planning, estimates and states)."""
    return _train_config(tuple(a for a in argv[2:] if a != SKIP_FINISHED))


@functools.lru_cache(maxsize=4096)
def _train_config(args: tuple[str, ...]):
    import train

    parsed = train.parse_args(list(args))
    return parsed, train.setup_cfg(parsed)


def requested_settings(argv: list[str]) -> dict:
    """What the command asks for, as results.json records it: what train.py compares before skipping."""
    import train
    from engine.config import flat_config

    args, cfg = train_config(argv)
    return {**flat_config(cfg), **train.run_options(args, cfg)}


def trainer_class(cfg):
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import split_trainer_name

    return TRAINER_REGISTRY.get(split_trainer_name(cfg.TRAINER.NAME)[0])


def is_zero_shot(cls) -> bool:
    from trainers.zeroshot import ZeroShotTrainer

    return issubclass(cls, ZeroShotTrainer)


def training_steps(cfg, cls, n_train: int) -> int:
    """Optimisation steps of one run: epochs x batches, or a tower-tuning method's iteration budget."""
    from engine.config import epoch_budget

    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    if cls.frozen_image_path(cfg):
        return epoch_budget(cfg) * (n_train // batch if n_train >= batch else 1)
    per_epoch = max(1, -(-n_train // batch))
    node = cfg.TRAINER.get(getattr(cls, "cfg_key", ""), {})
    iters = node.get("ITERS_PER_SHOT", 0) * cfg.DATASET.NUM_SHOTS if cfg.DATASET.NUM_SHOTS > 0 else 0
    steps = iters or cfg.OPTIM.MAX_EPOCH * per_epoch
    trial = cfg.TRAIN.TRIAL_EPOCHS
    return min(steps, trial * per_epoch) if trial > 0 else steps


def estimate_seconds(argv: list[str]) -> float:
    """A rough single-GPU duration of one train.py run, from its config (used to pack SLURM jobs)."""
    from datasets.benchmarks import BENCHMARKS

    args, cfg = train_config(argv)
    cls = trainer_class(cfg)
    if args.eval_only or is_zero_shot(cls):
        return STARTUP_S
    spec = BENCHMARKS.get(cfg.DATASET.NAME)
    n_cls = len(spec.classnames) if spec else 10
    shots = cfg.DATASET.NUM_SHOTS if cfg.DATASET.NUM_SHOTS > 0 else 16
    if not cls.frozen_image_path(cfg):
        kind = "tower"
    elif hasattr(cls, "fit"):
        kind = "feature"
    else:
        kind = "per_image_prompt" if cls.__name__ == "CoCoOp" else "prompt"
    return STARTUP_S + training_steps(cfg, cls, shots * n_cls) * STEP_S[kind]


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
