"""Datum, DatasetBase, few-shot sampling, base/new subsampling, transforms and DataManager.

Few-shot subsets are drawn exactly as Dassl draws them: items grouped by label in order
of first appearance, `random.sample(group, K)` from Python's global RNG, train first, then val with
min(K, 4). They are cached as readable JSON with paths relative to the image folder, so a moved
data root keeps working (the reference pickles absolute paths).

DATASET.FEWSHOT_PROTOCOL imbalanced draws instead K x C training images in the split's own class
proportions (at least one per class) and no val split: `imbalanced_counts`, `generate_imbalanced_fewshot`.
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import UserError
from engine.registry import DATASET_REGISTRY
from engine.utils import get_logger, read_json, write_json

if TYPE_CHECKING:  # torch, torchvision and PIL load where used: dataset tools' --help stays instant
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T


@dataclass(frozen=True)
class Datum:
    """One labelled image. `impath` is absolute; `relpath` is relative to the image folder."""

    impath: str
    label: int
    classname: str = ""
    domain: int = 0
    relpath: str = ""


def read_image(path: str):
    """Open an image as RGB (a PIL image), or fail with a message naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise UserError(f"Image file not found: {path}. Run tools/check_data.py to list every problem.") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(
            f"Cannot read image {path} ({err.__class__.__name__}: {err}). Replace or remove the file; "
            "tools/check_data.py lists every unreadable image at once."
        ) from err


def split_dataset_by_label(items: Sequence[Datum]) -> dict[int, list[Datum]]:
    """Group by label; dict order is the order in which labels first appear (Dassl relies on it)."""
    groups: dict[int, list[Datum]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return groups


def generate_fewshot_dataset(items: Sequence[Datum], num_shots: int, repeat: bool = False) -> list[Datum]:
    """K items per label with Python's global `random`, exactly as Dassl's version does."""
    if num_shots < 1:
        return list(items)
    out: list[Datum] = []
    for group in split_dataset_by_label(items).values():
        if len(group) >= num_shots:
            out.extend(random.sample(group, num_shots))
        elif repeat:
            out.extend(random.choices(group, k=num_shots))
        else:
            out.extend(group)
    return out


def imbalanced_counts(class_sizes: Sequence[int], total: int) -> list[int]:
    """Images per class for an imbalanced support set of `total` images (K x C).

    Class i's ideal share is total * size_i / sum(sizes); each class gets the floor of it, at least
    one image and never more than it holds; the images still owed go one at a time to the class
    furthest below its ideal (ties to the earlier class), and any excess the at-least-one rule made
    is taken back from the class furthest above it. A split with fewer than `total` images is used whole.
    """
    grand = sum(class_sizes)
    total = min(total, grand)
    ideal = [total * size / grand for size in class_sizes]
    counts = [min(size, max(1, math.floor(share))) for size, share in zip(class_sizes, ideal)]
    while sum(counts) < total:
        i = max((i for i, size in enumerate(class_sizes) if counts[i] < size), key=lambda i: ideal[i] - counts[i])
        counts[i] += 1
    while sum(counts) > total:
        i = max((i for i, c in enumerate(counts) if c > 1), key=lambda i: counts[i] - ideal[i])
        counts[i] -= 1
    return counts


def generate_imbalanced_fewshot(items: Sequence[Datum], num_shots: int) -> list[Datum]:
    """K x C items, each class as often as it is in `items` (at least once), with Python's global
    `random` (so the run's seed fixes the draw); classes in order of first appearance."""
    groups = list(split_dataset_by_label(items).values())
    counts = imbalanced_counts([len(g) for g in groups], num_shots * len(groups))
    out: list[Datum] = []
    for group, count in zip(groups, counts):
        out.extend(random.sample(group, count))
    return out


def base_new_labels(train: Sequence[Datum]) -> tuple[list[int], list[int]]:
    labels = sorted({d.label for d in train})
    m = math.ceil(len(labels) / 2)
    return labels[:m], labels[m:]


def subsample_classes(*splits: Sequence[Datum], subsample: str = "all") -> list[list[Datum]]:
    """Keep the base (first ceil(n/2) labels of train) or new classes and renumber labels 0.., as the reference does."""
    subsample = subsample.lower()
    if subsample == "all":
        return [list(s) for s in splits]
    if subsample not in ("base", "new"):
        raise UserError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got '{subsample}'.")
    base, new = base_new_labels(splits[0])
    selected = base if subsample == "base" else new
    relabel = {old: new_label for new_label, old in enumerate(selected)}
    return [
        [Datum(d.impath, relabel[d.label], d.classname, d.domain, d.relpath) for d in split if d.label in relabel]
        for split in splits
    ]


def classes_without_training_images(train: Sequence[tuple[int, str]],
                                    others: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """(label, class string) of every class the other splits use, or that a label gap skips, with no
    training image. The class list is read from the training images, so such a class could never be
    predicted: its test images would all count as errors."""
    trained = {label for label, _ in train}
    names: dict[int, str] = {}
    for label, name in [*others, *train]:
        names.setdefault(label, name)
    every = set(names) | set(range(max(names, default=-1) + 1))
    return [(label, names.get(label, "")) for label in sorted(every - trained)]


class DatasetBase:
    """Holds train_x / val / test lists of Datum and derives the class list from train_x."""

    dataset_dir = ""

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = list(train_x or [])
        self._train_u = train_u
        self._val = list(val or [])
        self._test = list(test or [])
        labels = {d.label: d.classname for d in self._train_x}
        self._num_classes = max(labels) + 1 if labels else 0
        self._lab2cname = dict(sorted(labels.items()))
        self._classnames = [self._lab2cname.get(i, "") for i in range(self._num_classes)]
        self.check_training_classes()

    def check_training_classes(self) -> None:
        """Every class needs a training image (after the few-shot draw and base/new subsampling)."""
        pairs = lambda items: [(d.label, d.classname) for d in items]  # noqa: E731
        missing = classes_without_training_images(pairs(self._train_x), pairs(self._val) + pairs(self._test))
        if not missing:
            return
        where = getattr(self, "split_path", "") or "the dataset"
        shown = ", ".join(f"{label} '{name}'" if name else str(label) for label, name in missing)
        raise UserError(
            f"{where}: class(es) {shown} have no training image in this run, so they could never be predicted "
            "(the class list is read from the training images). Give each class at least one train image in "
            "the split file, or remove the class from every split (labels 0..N-1 without gaps); "
            "tools/check_data.py lists every such problem."
        )

    train_x = property(lambda self: self._train_x)
    train_u = property(lambda self: self._train_u)
    val = property(lambda self: self._val)
    test = property(lambda self: self._test)
    num_classes = property(lambda self: self._num_classes)
    lab2cname = property(lambda self: self._lab2cname)
    classnames = property(lambda self: self._classnames)

    # Dassl method names, kept so ported readers work unchanged.
    def generate_fewshot_dataset(self, *sources, num_shots: int = -1, repeat: bool = False):
        outs = [generate_fewshot_dataset(s, num_shots, repeat) for s in sources]
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    def split_dataset_by_label(items):
        return split_dataset_by_label(items)

    @staticmethod
    def subsample_classes(*splits, subsample: str = "all"):
        out = subsample_classes(*splits, subsample=subsample)
        return out[0] if len(out) == 1 else out


def rows_to_data(rows: Sequence[Sequence], image_dir: str, source: str, check_files: bool = True) -> list[Datum]:
    """[relpath, label, classname] rows -> Datum list; all missing files are reported at once."""
    items, missing = [], []
    for row in rows:
        try:
            relpath, label, classname = row
        except (TypeError, ValueError) as err:
            raise UserError(f"{source}: each entry must be [relative_path, label, classname]; got {row!r}.") from err
        impath = os.path.join(image_dir, relpath)
        if check_files and not os.path.isfile(impath):
            missing.append(impath)
        items.append(Datum(impath=impath, label=int(label), classname=str(classname), relpath=relpath))
    if missing:
        shown = "\n  ".join(missing[:5])
        raise UserError(
            f"{len(missing)} image(s) listed in {source} do not exist, e.g.\n  {shown}\n"
            "Check DATASET.ROOT (--root) and that the archive was fully unpacked; "
            "tools/check_data.py reports every problem at once."
        )
    return items


def data_to_rows(items: Sequence[Datum]) -> list[list]:
    return [[d.relpath, d.label, d.classname] for d in items]


def stale_fewshot_rows(path: str, train: Sequence[Datum], val: Sequence[Datum]) -> list[str]:
    """Entries of a cached few-shot file that the current split no longer has (or whose file is gone).

    A non-empty answer means the cache predates a change to the data (say a corrupt image removed
    from the split) and must be drawn again. An unreadable cache counts as entirely stale.
    """
    try:
        data = read_json(path)
        cached = {part: [(row[0], int(row[1])) for row in data[part]] for part in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return [path]
    stale = []
    for part, items in (("train", train), ("val", val)):
        current = {(d.relpath, d.label): d.impath for d in items}
        stale += [rel for rel, label in cached[part]
                  if (rel, label) not in current or not os.path.isfile(current[(rel, label)])]
    return stale


def fewshot_file(num_shots: int, seed: int, protocol: str = "balanced") -> str:
    """The cache file of one draw; an imbalanced draw has its own name, never a balanced one's."""
    prefix = "" if protocol == "balanced" else f"{protocol}_"
    return f"{prefix}shot_{num_shots}-seed_{seed}.json"


def load_or_make_fewshot(
    train: list[Datum], val: list[Datum], num_shots: int, seed: int, cache_dir: str, image_dir: str,
    protocol: str = "balanced",
) -> tuple[list[Datum], list[Datum]]:
    """Read split_fewshot/shot_K-seed_S.json, or draw the subset (Dassl's way) and save it.

    protocol "imbalanced": K x C images in the training split's class proportions and an empty val
    split, cached as imbalanced_shot_K-seed_S.json.
    """
    path = os.path.join(cache_dir, fewshot_file(num_shots, seed, protocol))
    imbalanced = protocol == "imbalanced"
    small = [f"{g[0].classname or g[0].label} ({len(g)})" for g in split_dataset_by_label(train).values()
             if len(g) < num_shots]
    if small and not imbalanced:
        get_logger().info(
            f"{len(small)} class(es) have fewer than {num_shots} training images and are used whole, as Dassl "
            f"does: {', '.join(small)}"
        )
    if os.path.isfile(path):
        stale = stale_fewshot_rows(path, train, val)
        if not stale:
            get_logger().info(f"Loading preprocessed few-shot data from {path}")
            data = read_json(path)
            return rows_to_data(data["train"], image_dir, path), rows_to_data(data["val"], image_dir, path)
        get_logger().info(
            f"note: {path} names {len(stale)} image(s) no longer in the split or on disk (e.g. {stale[0]}); "
            "drawing this few-shot subset again"
        )
    if imbalanced:
        train, val = generate_imbalanced_fewshot(train, num_shots), []
        counts = ", ".join(f"{g[0].classname or g[0].label} {len(g)}" for g in split_dataset_by_label(train).values())
        get_logger().info(f"Imbalanced few-shot draw ({len(train)} images, no val split): {counts}")
    else:
        train = generate_fewshot_dataset(train, num_shots)
        val = generate_fewshot_dataset(val, min(num_shots, 4))
    get_logger().info(f"Saving preprocessed few-shot data to {path}")
    try:
        write_json({"train": data_to_rows(train), "val": data_to_rows(val)}, path)
    except OSError as err:
        get_logger().warning(f"Could not cache the few-shot split at {path} ({err}); continuing without it.")
    return train, val


def build_transform(cfg, is_train: bool) -> T.Compose:
    """The reference transforms: random resized crop (and optional flip) for training, resize + center
    crop for test, then normalisation."""
    from torchvision import transforms as T

    size = tuple(cfg.INPUT.SIZE)
    interp = T.InterpolationMode(cfg.INPUT.INTERPOLATION)
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train and "random_resized_crop" in cfg.INPUT.TRANSFORMS:
        ops = [T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp)]
        if "random_flip" in cfg.INPUT.TRANSFORMS:
            ops.append(T.RandomHorizontalFlip())
    else:
        ops = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]
    return T.Compose([*ops, T.ToTensor(), normalize])


def transform_spec(cfg, is_train: bool) -> dict:
    """What determines a transform's output, for feature-cache keys."""
    spec = {
        "train": bool(is_train and "random_resized_crop" in cfg.INPUT.TRANSFORMS),
        "flip": bool(is_train and "random_flip" in cfg.INPUT.TRANSFORMS),
        "size": list(cfg.INPUT.SIZE),
        "interp": cfg.INPUT.INTERPOLATION,
        "scale": list(cfg.INPUT.RRCROP_SCALE) if is_train else None,
        "mean": list(cfg.INPUT.PIXEL_MEAN),
        "std": list(cfg.INPUT.PIXEL_STD),
    }
    if spec["train"] and cfg.FEATURES.VIEW_SEED == "run":  # crops of this run only: their own cache files
        spec["view_salt"] = f"seed{cfg.SEED}"
    return spec


class DatasetWrapper:
    """Yields Dassl-style dicts {img, label, domain, impath, index} (a map-style dataset for DataLoader)."""

    def __init__(self, items: Sequence[Datum], transform):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        item = self.items[idx]
        return {
            "img": self.transform(read_image(item.impath)),
            "label": item.label,
            "domain": item.domain,
            "impath": item.impath,
            "index": idx,
        }


def num_workers(cfg) -> int:
    return max(0, min(cfg.DATALOADER.NUM_WORKERS, (os.cpu_count() or 1)))


def build_data_loader(cfg, items, batch_size: int, is_train: bool, transform=None) -> DataLoader:
    from torch.utils.data import DataLoader

    transform = transform or build_transform(cfg, is_train)
    dataset = DatasetWrapper(items, transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=is_train,
        num_workers=num_workers(cfg),
        drop_last=is_train and len(dataset) >= batch_size,
        pin_memory=False,
    )


def build_dataset(cfg) -> DatasetBase:
    if not cfg.DATASET.NAME:
        raise UserError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<name>.yaml.")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


class DataManager:
    """Builds the dataset, its transforms and pixel loaders (trainers on cached features skip these)."""

    def __init__(self, cfg, dataset: DatasetBase | None = None):
        self.cfg = cfg
        self.dataset = dataset or build_dataset(cfg)
        self._loaders: dict[str, DataLoader] = {}

    # Transforms are built on first use: torchvision takes seconds to import, and a run that stops
    # early (missing weights) should say so at once.
    @functools.cached_property
    def tfm_train(self):
        return build_transform(self.cfg, is_train=True)

    @functools.cached_property
    def tfm_test(self):
        return build_transform(self.cfg, is_train=False)

    def _loader(self, split: str) -> DataLoader:
        if split not in self._loaders:
            cfg = self.cfg
            if split == "train_x":
                self._loaders[split] = build_data_loader(
                    cfg, self.dataset.train_x, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, True, self.tfm_train
                )
            else:
                items = self.dataset.val if split == "val" else self.dataset.test
                self._loaders[split] = build_data_loader(
                    cfg, items, cfg.DATALOADER.TEST.BATCH_SIZE, False, self.tfm_test
                )
        return self._loaders[split]

    train_loader_x = property(lambda self: self._loader("train_x"))
    val_loader = property(lambda self: self._loader("val"))
    test_loader = property(lambda self: self._loader("test"))
    num_classes = property(lambda self: self.dataset.num_classes)
    lab2cname = property(lambda self: self.dataset.lab2cname)
    classnames = property(lambda self: self.dataset.classnames)


def stack_labels(items: Sequence[Datum]) -> torch.Tensor:
    import torch

    return torch.tensor([d.label for d in items], dtype=torch.long)
