"""Write a small synthetic dataset in a benchmark's real on-disk layout (for the offline demo and tests).

    python tools/make_synthetic_dataset.py --root DATA --dataset BTMRI --per-class 20

writes DATA/BTMRI/split_BTMRI.json and DATA/BTMRI/BTMRI/<class_dir>/<file><ext> with the real class
strings and label order. Each class gets its own stripe frequency, orientation and tint plus noise,
so a model can tell the classes apart; nothing about the images is medical.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401
import numpy as np
from PIL import Image

from datasets.benchmarks import spec_for
from engine.errors import UserError
from engine.utils import write_json


def synthetic_image(label: int, index: int, size: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = label * np.pi / 5
    freq = 2 + 2 * label
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + index)
    tint = np.array([np.cos(label), np.sin(label * 1.7), np.cos(label * 0.6 + 1)]) * 0.25
    img = 0.5 + 0.3 * stripes[..., None] + tint + 0.08 * rng.standard_normal((size, size, 3))
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def write_dataset(root: str, dataset: str, per_class: int, size: int = 64, seed: int = 0) -> str:
    spec = spec_for(dataset)
    if per_class < 4:
        raise UserError("--per-class must be at least 4 (train, val and test each need images).")
    rng = np.random.default_rng(seed)
    dataset_dir = os.path.join(root, spec.name)
    image_dir = os.path.join(dataset_dir, spec.name)
    split = {"train": [], "val": [], "test": []}
    n_train, n_val = round(per_class * 0.5), max(1, round(per_class * 0.2))
    for label, (classname, folder) in enumerate(zip(spec.classnames, spec.class_dirs)):
        os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
        for i in range(per_class):
            rel = f"{folder}/{folder}_{i:04d}{spec.image_ext}"
            synthetic_image(label, i, size, rng).save(os.path.join(image_dir, rel))
            part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            split[part].append([rel, label, classname])
    write_json(split, os.path.join(dataset_dir, f"split_{spec.name}.json"))
    return dataset_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="data root to write into")
    p.add_argument("--dataset", required=True, help="benchmark name, e.g. BTMRI or btmri")
    p.add_argument("--per-class", type=int, default=20, help="images per class (split 50/20/30)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        path = write_dataset(args.root, args.dataset, args.per_class, args.size, args.seed)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
