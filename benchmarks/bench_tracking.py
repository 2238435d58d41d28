"""What writing training curves costs: a warm run with TRAIN.REPORT_TO none against the same run with
tensorboard (the default), side by side in one process.

    python benchmarks/bench_tracking.py [--method CoOp] [--model BiomedCLIP] [--shots 16] [--epochs 50] [--repeats 3]

Synthetic images in BTMRI's layout (4 classes) and the model with random weights (no download;
`--model TinyBiomedCLIP` for a quick check). One untimed run fills the feature and text caches; then
runs alternate between none and tensorboard, each timed from building the trainer to results.json
(what train.py does after its imports), and the medians are compared. On a shared machine that
difference is mostly noise, so the tensorboard runs also time every call into the tracker (opening
the event file, each epoch's scalars, the final accuracy and settings, closing; TrainerX's hooks and
engine.tracking): that sum over the run's own time is the cost of curves, measured inside one run.
FEATURES.TRAIN_VIEWS (--views) keeps the untimed extraction short; epochs cycle through the cached
views at the same cost per epoch. Prints seconds and the overhead in percent (target: under 2%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
from make_synthetic_dataset import write_dataset  # noqa: E402

import backbones  # noqa: E402,F401
import datasets  # noqa: E402,F401
import train  # noqa: E402
import trainers  # noqa: E402,F401
from engine import tracking  # noqa: E402
from engine.trainer import TrainerX, build_trainer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"CoOp": "CoOp/vit_b16.yaml", "BiomedCoOp": "BiomedCoOp/few_shot/btmri.yaml", "KgCoOp": "KgCoOp/vit_b16.yaml"}
SPENT = [0.0]  # seconds inside the tracking hooks during the current run
DEPTH = [0]  # hooks call one another: only the outermost call is counted


def timed(method):
    def wrapper(*args, **kwargs):
        DEPTH[0] += 1
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            DEPTH[0] -= 1
            if DEPTH[0] == 0:
                SPENT[0] += time.perf_counter() - start
    return wrapper


# Every way the trainer reaches engine.tracking: its hooks (TrainerX) and the tracker itself.
for _cls, _names in ((TrainerX, ("tracker", "track", "tracked_lr", "track_epoch", "track_final")),
                     (tracking.Tracker, ("scalars", "final", "close"))):
    for _name in _names:
        setattr(_cls, _name, timed(getattr(_cls, _name)))


def one_run(args, root: str, out: str, report_to: str) -> tuple[float, float]:
    """(seconds of the run, seconds of it inside the tracker)."""
    SPENT[0] = 0.0
    start = time.perf_counter()
    config = CONFIGS.get(args.method, f"{args.method}/vit_b16.yaml")
    argv = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"{args.method}_{args.model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers", config),
        "--output-dir", out, "DATASET.NUM_SHOTS", str(args.shots), "OPTIM.MAX_EPOCH", str(args.epochs),
        "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.PRETRAINED", "False", "TRAIN.REPORT_TO", report_to,
        "FEATURES.TRAIN_VIEWS", str(args.views),
    ])
    trainer = build_trainer(train.setup_cfg(argv))
    trainer.train()
    return time.perf_counter() - start, SPENT[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="CoOp")
    p.add_argument("--model", default="BiomedCLIP", help="model family (random weights)")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each kind")
    p.add_argument("--per-class", type=int, default=40, help="synthetic images per class (train, val and test)")
    p.add_argument("--views", type=int, default=2,
                   help="augmented views cached per training image (FEATURES.TRAIN_VIEWS): only the one-off "
                        "extraction depends on it, not the cost of an epoch")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "data")
        write_dataset(root, "BTMRI", per_class=args.per_class, size=64)
        os.environ.setdefault("BIOMEDCOOP_CACHE", os.path.join(tmp, "cache"))
        one_run(args, root, os.path.join(tmp, "warm"), "none")  # fills the feature and text caches
        times: dict[str, list[float]] = {"none": [], "tensorboard": []}
        inside: list[float] = []
        for i in range(args.repeats):
            for kind in ("none", "tensorboard"):
                seconds, spent = one_run(args, root, os.path.join(tmp, f"{kind}{i}"), kind)
                times[kind].append(seconds)
                if kind == "tensorboard":
                    inside.append(spent / seconds)
        events = [f for f in os.listdir(os.path.join(tmp, "tensorboard0")) if f.startswith("events.out.tfevents")]
    plain, curves = statistics.median(times["none"]), statistics.median(times["tensorboard"])
    per_run = curves - plain
    print(f"{args.method}_{args.model} (random weights), K={args.shots}, 4 classes, {args.epochs} epochs, warm caches, "
          f"median of {args.repeats}; threads {torch.get_num_threads()}")
    for kind, median in (("none", plain), ("tensorboard", curves)):
        runs = ", ".join(f"{t:.2f}" for t in times[kind])
        print(f"  TRAIN.REPORT_TO {kind:<13} {median:8.2f} s   (runs: {runs})")
    print(f"  difference of the medians     {per_run:+8.3f} s   ({100 * per_run / plain:+.2f}%; noise included)")
    share = 100 * statistics.median(inside)
    print(f"  time inside the tracker       {share:8.4f} % of the run (median; runs: "
          f"{', '.join(f'{100 * x:.4f}' for x in inside)}); event files per run: {len(events)}")
    print(f"  target under 2%: {'MET' if share < 2 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
