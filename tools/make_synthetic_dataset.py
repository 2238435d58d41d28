"""Write a small synthetic dataset in a benchmark's real on-disk layout (for the offline demo and tests).

    python tools/make_synthetic_dataset.py --root DATA --dataset BTMRI --per-class 20

writes DATA/BTMRI/split_BTMRI.json and DATA/BTMRI/BTMRI/<class_dir>/<file><ext> with the real class
strings and label order. Each class gets its own colour under a faint texture and noise, so even a
randomly initialised twin can tell the classes apart; nothing about the images is medical.

A domain-generalisation target (BRISC, BTMRI-P, BTMRI-S; BUID, BUSBRA, UDIAT) gets the colour of the
same class in its source benchmark, washed toward grey by a contrast shift of its own (its "site"), so a
model trained on the synthetic source still works on it, a little worse.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401
import numpy as np
from PIL import Image

from datasets.benchmarks import DG_SOURCE, dg_targets, spec_for
from engine.errors import UserError
from engine.utils import write_json


def synthetic_image(label: int, index: int, size: int, rng: np.random.Generator, shift: float = 0.0) -> Image.Image:
    """A class-specific colour (survives any crop or zoom) under a faint texture and noise; `shift`
    in [0, 1) washes the colour toward grey (a target site's contrast)."""
    hue = 2 * np.pi * label / 8
    colour = 0.5 + (1 - shift) * 0.35 * np.array([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)])
    yy, xx = np.mgrid[0:size, 0:size] / size
    texture = 0.06 * np.sin(2 * np.pi * (3 + label) * (xx + yy) + index)
    img = colour + texture[..., None] + 0.05 * rng.standard_normal((size, size, 3))
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def write_dataset(root: str, dataset: str, per_class: int, size: int = 64, seed: int = 0) -> str:
    spec = spec_for(dataset)
    if per_class < 4:
        raise UserError("--per-class must be at least 4 (train, val and test each need images).")
    source = spec_for(DG_SOURCE[spec.name]) if spec.name in DG_SOURCE else spec
    site = dg_targets(source.name).index(spec.name) + 1 if source is not spec else 0
    rng = np.random.default_rng([seed, site] if site else seed)  # the benchmarks' images as before
    dataset_dir = os.path.join(root, spec.name)
    image_dir = os.path.join(dataset_dir, spec.name)
    split = {"train": [], "val": [], "test": []}
    n_train, n_val = round(per_class * 0.5), max(1, round(per_class * 0.2))
    for label, (classname, folder) in enumerate(zip(spec.classnames, spec.class_dirs)):
        os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
        for i in range(per_class):
            rel = f"{folder}/{folder}_{i:04d}{spec.image_ext}"
            colour = source.classnames.index(classname)  # a target's class looks like the source's
            synthetic_image(colour, i, size, rng, shift=0.1 * site).save(os.path.join(image_dir, rel))
            part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            split[part].append([rel, label, classname])
    write_json(split, os.path.join(dataset_dir, f"split_{spec.name}.json"))
    return dataset_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="data root to write into")
    p.add_argument("--dataset", required=True, help="benchmark or DG target name, e.g. BTMRI, btmri, BTMRI-P")
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
