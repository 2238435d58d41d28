"""What a list of train.py commands costs: the runs, and how many image-tower passes they need.

Each command is turned into its config exactly as train.py would (no data is read); image counts
come from the benchmarks' published split sizes.

Counting, per image and per pass through the image tower:
- frozen-feature methods: the feature cache encodes each test image once per backbone and dataset,
  and each training image once per augmented view (FEATURES.TRAIN_VIEWS, by default one per
  epoch); views are shared by every method and seed that draws the same image, so the count given
  is an upper bound. A method whose frozen image path is its own (BiomedDPT's zero prompts)
  shares its passes only with runs of the same setting. "Without the cache" is what re-encoding
  every image every epoch would cost.
- methods that tune the image tower: every training image of every iteration, forward and
  backward (their iteration budget, or epochs x images), plus one test pass each.
"""

from __future__ import annotations

import json
import math
import os

from engine.runs import run_status
from sweeps.plan import SKIP_FINISHED, is_zero_shot, trainer_class, training_steps


def read_commands(path: str) -> list[list[str]]:
    """One train.py command per line, NUL-separated arguments (scripts/reproduce_paper.sh --dry-run)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\0") for line in f if line.strip()]


def count_passes(commands: list[list[str]]) -> dict:
    """Totals ("runs", "finished", "cached", "uncached", "tuned", "unknown") and one line per run ("lines").
    A command is [python, train.py, args...] or [train.py, args...]."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import train
    from datasets.benchmarks import BENCHMARKS
    from engine.config import epoch_budget, flat_config

    totals = {"runs": 0, "finished": 0, "cached": 0, "uncached": 0, "tuned": 0, "unknown": 0}
    views: dict[tuple, int] = {}  # (backbone, dataset, K, seed, subsample) -> train views, max over methods
    images: dict[tuple, int] = {}
    tests: dict[tuple, int] = {}  # (backbone, dataset, subsample) -> test images
    lines = []
    for argv in commands:
        start = next((i for i, a in enumerate(argv[:2]) if a.endswith("train.py")), None)
        if start is None:
            continue  # some other helper the scripts ran
        args = train.parse_args([a for a in argv[start + 1:] if a != SKIP_FINISHED])
        cfg = train.setup_cfg(args)
        totals["runs"] += 1
        done = run_status(cfg.OUTPUT_DIR, {**flat_config(cfg), **train.run_options(args, cfg)}).state == "finished"
        totals["finished"] += done
        # A domain-generalisation evaluation reads a target's test split, whose size is not declared.
        spec = None if cfg.TEST.get("DATASET") else BENCHMARKS.get(cfg.DATASET.NAME)
        if spec is None or not spec.counts:
            totals["unknown"] += 1
            lines.append(f"{'done  ' if done else 'to run'}  {cfg.TRAINER.NAME} {cfg.DATASET.NAME} -> {cfg.OUTPUT_DIR}")
            continue
        n_cls = len(spec.classnames)
        subsample = cfg.DATASET.SUBSAMPLE_CLASSES
        kept = {"all": n_cls, "base": math.ceil(n_cls / 2)}.get(subsample, n_cls - math.ceil(n_cls / 2))
        shots = cfg.DATASET.NUM_SHOTS
        n_train = spec.counts["train"] if shots < 0 else shots * kept
        n_test = round(spec.counts["test"] * kept / n_cls)
        cls = trainer_class(cfg)
        trains = not (args.eval_only or is_zero_shot(cls))
        epochs = epoch_budget(cfg) if trains else 0
        backbone = cfg.MODEL.BACKBONE.NAME
        lines.append(f"{'done  ' if done else 'to run'}  {cfg.TRAINER.NAME:<28} {spec.name:<10} K={shots:<3} "
                     f"seed {cfg.SEED}  {subsample:<4} {'eval' if args.eval_only else f'{epochs} epochs':<10} "
                     f"-> {cfg.OUTPUT_DIR}")
        if cls.frozen_image_path(cfg):
            variant = cls.feature_variant_key(cfg)  # a method's own image path (BiomedDPT): passes of its own
            tower = (backbone, json.dumps(variant, sort_keys=True)) if variant else backbone
            key = (tower, spec.name, shots, cfg.SEED, subsample)
            if epochs:
                views[key] = max(views.get(key, 0), cfg.FEATURES.TRAIN_VIEWS or epochs)
                images[key] = n_train
            tests[(tower, spec.name, subsample)] = n_test
            totals["uncached"] += epochs * n_train + n_test
        else:
            node = cfg.TRAINER.get(getattr(cls, "cfg_key", ""), {})
            if trains and node.get("ITERS_PER_SHOT", 0) > 0 and shots > 0:  # an iteration budget: batches seen
                seen = training_steps(cfg, cls, n_train) * cfg.DATALOADER.TRAIN_X.BATCH_SIZE
            else:
                seen = epochs * n_train
            totals["tuned"] += seen + n_test
    cached_tests = {}
    for (backbone, name, subsample), n in tests.items():
        # base and novel test images are part of the full test set: encoded once if it is encoded
        full = tests.get((backbone, name, "all"))
        cached_tests[(backbone, name, "all" if full is not None else subsample)] = full if full is not None else n
    totals["cached"] = sum(views[k] * images[k] for k in views) + sum(cached_tests.values())
    totals["lines"] = lines
    return totals


def cost_lines(totals: dict) -> list[str]:
    """The totals of `count_passes` in words (tools/plan_grid.py and tools/sweep.py --dry-run)."""
    lines = [f"{totals['runs']} runs ({totals['finished']} already finished)",
             f"image-tower passes, frozen-feature methods: at most {totals['cached']:,} with the feature cache "
             f"({totals['uncached']:,} if every image were encoded every epoch)",
             f"image-tower passes, image-tower-tuning methods: about {totals['tuned']:,} forward+backward"]
    if totals["unknown"]:
        lines.append(f"{totals['unknown']} run(s) on datasets of unknown size are not counted")
    return lines
