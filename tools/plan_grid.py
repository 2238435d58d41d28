"""What a grid of train.py runs will cost: the runs, and how many image-tower passes they need.

    python tools/plan_grid.py COMMANDS_FILE

COMMANDS_FILE holds one train.py command per line, NUL-separated arguments (what
`scripts/reproduce_paper.sh --dry-run` records). Each command is turned into its config exactly as
train.py would (no data is read). Image counts come from the benchmarks' published split sizes.

Counting, per image and per pass through the image tower:
- frozen-feature methods: the feature cache encodes each test image once per backbone and dataset,
  and each training image once per augmented view (FEATURES.TRAIN_VIEWS, by default one per
  epoch); views are shared by every method and seed that draws the same image, so the count given
  is an upper bound. "Without the cache" is what re-encoding every image every epoch would cost.
- methods that tune the image tower: every training image, every epoch, forward and backward
  (MAX_EPOCH x images; methods with an iteration budget differ), plus one test pass each.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import _bootstrap  # noqa: F401


def read_commands(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\0") for line in f if line.strip()]


def plan(commands: list[list[str]]) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from results_io import ZERO_SHOT_METHODS

    import train
    from datasets.benchmarks import BENCHMARKS
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import split_trainer_name

    totals = {"runs": 0, "finished": 0, "cached": 0, "uncached": 0, "tuned": 0, "unknown": 0}
    views: dict[tuple, int] = {}  # (backbone, dataset, K, seed, subsample) -> train views, max over methods
    images: dict[tuple, int] = {}
    tests: dict[tuple, int] = {}  # (backbone, dataset, subsample) -> test images
    lines = []
    for argv in commands:
        if not argv or not argv[0].endswith("train.py"):
            continue  # some other helper the scripts ran
        args = train.parse_args([a for a in argv[1:] if a != "--skip-finished"])
        cfg = train.setup_cfg(args)
        totals["runs"] += 1
        done = os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "results.json"))
        totals["finished"] += done
        spec = BENCHMARKS.get(cfg.DATASET.NAME)
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
        method, _ = split_trainer_name(cfg.TRAINER.NAME)
        trainer_cls = TRAINER_REGISTRY.get(method)
        epochs = 0 if args.eval_only or method in ZERO_SHOT_METHODS else cfg.OPTIM.MAX_EPOCH
        backbone = cfg.MODEL.BACKBONE.NAME
        lines.append(f"{'done  ' if done else 'to run'}  {cfg.TRAINER.NAME:<28} {spec.name:<10} K={shots:<3} "
                     f"seed {cfg.SEED}  {subsample:<4} {'eval' if args.eval_only else f'{epochs} epochs':<10} "
                     f"-> {cfg.OUTPUT_DIR}")
        if getattr(trainer_cls, "uses_frozen_image_features", True):
            key = (backbone, spec.name, shots, cfg.SEED, subsample)
            if epochs:
                views[key] = max(views.get(key, 0), cfg.FEATURES.TRAIN_VIEWS or epochs)
                images[key] = n_train
            tests[(backbone, spec.name, subsample)] = n_test
            totals["uncached"] += epochs * n_train + n_test
        else:
            mcfg = cfg.TRAINER.get(getattr(trainer_cls, "cfg_key", ""), {})
            iters = mcfg.get("ITERS_PER_SHOT", 0) * max(shots, 0)  # an iteration budget instead of epochs
            seen = iters * cfg.DATALOADER.TRAIN_X.BATCH_SIZE if iters and epochs else epochs * n_train
            totals["tuned"] += seen + n_test
    cached_tests = {}
    for (backbone, name, subsample), n in tests.items():
        # base and novel test images are part of the full test set: encoded once if it is encoded
        full = tests.get((backbone, name, "all"))
        cached_tests[(backbone, name, "all" if full is not None else subsample)] = full if full is not None else n
    totals["cached"] = sum(views[k] * images[k] for k in views) + sum(cached_tests.values())
    totals["lines"] = lines
    return totals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commands", help="file of recorded train.py commands (NUL-separated arguments per line)")
    p.add_argument("--quiet", action="store_true", help="only the totals")
    args = p.parse_args(argv)
    from engine.errors import UserError

    try:
        totals = plan(read_commands(args.commands))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print("\n".join(totals["lines"]))
    print(f"{totals['runs']} runs ({totals['finished']} already finished)")
    print(f"image-tower passes, frozen-feature methods: at most {totals['cached']:,} with the feature cache "
          f"({totals['uncached']:,} if every image were encoded every epoch)")
    print(f"image-tower passes, image-tower-tuning methods: about {totals['tuned']:,} forward+backward")
    if totals["unknown"]:
        print(f"{totals['unknown']} run(s) on datasets of unknown size are not counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
