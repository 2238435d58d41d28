"""Time of each feature-based baseline for one 16-shot, 4-class run once the image features are cached.

    python benchmarks/bench_feature_methods.py [--model BiomedCLIP] [--shots 16] [--views 2]

Synthetic images in BTMRI's layout (4 classes) and the full-size model with random weights (no
download; `--model TinyBiomedCLIP` for a quick check). The first step fills the feature cache and is
timed: one image-tower pass over `--views` augmented views of the train images, the val images
and the test images. Then each method's whole `train()` (fit, checkpoint, test-split evaluation)
runs on the warm cache and is timed, as in `scripts/<method>/few_shot.sh` after the first seed.
Every method does the same work whatever `--views` is (epoch e reads view e mod views); only the
one-off extraction grows with it; GDA, which pools all the views it reads (10 in its config),
pools the `--views` cached ones here. Prints seconds and each method's time relative to that
extraction, measured in one run (absolute times vary between machines).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
from make_synthetic_dataset import write_dataset  # noqa: E402

import backbones  # noqa: E402,F401
import datasets  # noqa: E402,F401
import engine.trainer  # noqa: E402
import train  # noqa: E402
import trainers  # noqa: E402,F401
from engine.trainer import build_trainer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["TipAdapter", "TipAdapterF", "ClipAdapter", "LinearProbe", "LPPlusPlus", "GDA"]
CONFIGS = {"GDA": "GDA/few_shot/default.yaml"}  # the others: <Method>/few_shot.yaml


def make_trainer(method: str, model: str, root: str, out: str, shots: int, views: int):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"{method}_{model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers", CONFIGS.get(method, f"{method}/few_shot.yaml")),
        "--output-dir", out, "DATASET.NUM_SHOTS", str(shots), "DATALOADER.NUM_WORKERS", "0",
        "FEATURES.TRAIN_VIEWS", str(views), "MODEL.BACKBONE.PRETRAINED", "False",
        *(["TRAINER.GDA.AUGMENT_EPOCH", str(views)] if method == "GDA" else []),
    ])
    return build_trainer(train.setup_cfg(args))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="BiomedCLIP", help="model family (random weights)")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--views", type=int, default=2, help="augmented views cached per train image")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "data")
        write_dataset(root, "BTMRI", per_class=2 * args.shots + 8, size=64)  # train split: shots + 4 per class
        first = make_trainer(METHODS[0], args.model, root, os.path.join(tmp, "warm"), args.shots, args.views)
        backbone = first.backbone
        engine.trainer.build_backbone = lambda cfg: backbone  # one backbone (and one cache key) for all runs
        start = time.perf_counter()
        first.train_views(args.views)
        first.val_features()
        first.test_features()
        extract = time.perf_counter() - start
        n_train, n_val, n_test = (len(getattr(first.dm.dataset, s)) for s in ("train_x", "val", "test"))
        print(f"{args.model} (random weights), {first.num_classes} classes, {args.shots} shots: "
              f"{n_train} train images x {args.views} views, {n_val} val, {n_test} test; "
              f"{torch.get_num_threads()} CPU threads")
        print(f"feature extraction (once, cold cache): {extract:8.2f} s")
        for method in METHODS:
            t = make_trainer(method, args.model, root, os.path.join(tmp, method), args.shots, args.views)
            start = time.perf_counter()
            report = t.train()
            took = time.perf_counter() - start
            print(f"{method:<12} train() on the warm cache: {took:6.2f} s = {took / extract:.3f} x extraction"
                  f"  (test accuracy {report['accuracy']:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
