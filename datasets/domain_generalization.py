"""Scoring a trained run on another benchmark's test split: the domain-generalisation protocol.

`train.py --eval-only --model-dir SOURCE_RUN ... TEST.DATASET TARGET` builds the trainer exactly as the
source run was built (the source's dataset, classes and few-shot images, so every method's checkpoint
fits), then `retarget` points its evaluation at TARGET's test split: images read from TARGET's folder,
features cached in TARGET's own cache, and the model's outputs restricted to the source classes that
TARGET's labels name (matched by class name; a target may hold fewer classes than its source, as the
BUSI targets hold no normal scans). So a text-prompt method scores exactly as if its classifier had
been built from the target's class names, and a method with a learned head per class (linear probe,
Tip-Adapter, GDA) can be scored at all. results.json records protocol "dg", the source, the target
and, as "dataset", the target.
"""

from __future__ import annotations

import os

from datasets.benchmarks import spec_for
from engine.data import DataManager, rows_to_data
from engine.errors import UserError
from engine.features import FeatureCache, feature_cache_dir
from engine.utils import read_json


class TestOnly:
    """The part of a dataset an evaluation reads: a test list (no training images, so none of the
    class checks a training dataset gets)."""

    def __init__(self, test: list, dataset_dir: str):
        self.test, self.val, self.train_x, self.dataset_dir = test, [], [], dataset_dir


def _norm(classname: str) -> str:
    return classname.replace("_", " ").lower()


def read_test_split(root: str, name: str) -> tuple[list, list[str], str]:
    """(test items, class names by label, dataset folder) of benchmark `name` under the data root."""
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root or ".")), name)
    split_path = os.path.join(dataset_dir, f"split_{name}.json")
    if not os.path.isfile(split_path):
        raise UserError(
            f"TEST.DATASET {name}: {split_path} not found. Get the dataset with `python tools/download_data.py "
            f"{name} --root {root or 'DATA'}` (or point --root at the folder that contains {name}/)."
        )
    try:
        split = read_json(split_path)
        rows = split["test"]
        names = {int(label): str(classname) for part in ("train", "val", "test") for _, label, classname
                 in split.get(part, [])}
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{split_path} is not a split file with a 'test' list of [path, label, classname] "
                        f"({err}); `python tools/check_data.py {name} --root {root or 'DATA'}` says more.") from err
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{split_path}: labels must be 0..{len(names) - 1} without gaps; found {sorted(names)}. "
                        f"Run `python tools/check_data.py {name} --root {root or 'DATA'}`.")
    items = rows_to_data(rows, os.path.join(dataset_dir, name), split_path)
    if not items:
        raise UserError(f"The test split of {name} ({split_path}) is empty; nothing to evaluate.")
    return items, [names[i] for i in range(len(names))], dataset_dir


def target_columns(source_classes: list[str], target_classes: list[str], source: str, target: str) -> list[int]:
    """For each target label, the index of the source class of the same name (case and _ / space aside)."""
    index = {_norm(c): i for i, c in enumerate(source_classes)}
    missing = [c for c in target_classes if _norm(c) not in index]
    if missing:
        raise UserError(
            f"TEST.DATASET {target}: class(es) {missing} are not among the classes the model was trained on "
            f"({source}: {source_classes}); a domain-generalisation target must hold classes of its source."
        )
    return [index[_norm(c)] for c in target_classes]


def retarget(trainer, target: str) -> None:
    """Make `trainer` (built for its source, weights loaded) score `target`'s test split on `test()`."""
    cfg = trainer.cfg
    if str(cfg.DATASET.SUBSAMPLE_CLASSES).lower() != "all":
        raise UserError("TEST.DATASET scores all of a target's classes; use it with DATASET.SUBSAMPLE_CLASSES all.")
    if cfg.TEST.SPLIT != "test":
        raise UserError("TEST.DATASET scores the target's test split; leave TEST.SPLIT at test.")
    try:
        name = spec_for(target).name  # any spelling of a benchmark or DG target: btmri_p -> BTMRI-P
    except UserError:
        name = target  # the user's own dataset, by its folder name
    items, classes, dataset_dir = read_test_split(cfg.DATASET.ROOT, name)
    trainer.eval_columns = target_columns(trainer.classnames, classes, cfg.DATASET.NAME, name)
    trainer.eval_classnames = classes
    trainer.dm = DataManager(cfg, dataset=TestOnly(items, dataset_dir))
    # The target's features live beside the target's images, never in the source's tables (same
    # relative paths, other pixels); an explicit FEATURES.CACHE_DIR gets a sub-folder per target.
    cache_dir = os.path.join(cfg.FEATURES.CACHE_DIR, name) if cfg.FEATURES.CACHE_DIR else \
        feature_cache_dir(cfg, dataset_dir)
    trainer.feature_cache = FeatureCache(
        cache_dir, trainer.backbone, trainer.device, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
        workers=cfg.DATALOADER.NUM_WORKERS, precision=cfg.FEATURES.PRECISION, store=cfg.FEATURES.STORE_DTYPE,
    )
    trainer._test_cache = None
    trainer.eval_record = {"protocol": "dg", "source": cfg.DATASET.NAME, "target": name, "dataset": name,
                           "classnames": classes}
    trainer.logger.info(f"Domain generalisation: the {cfg.DATASET.NAME} model scored on the {name} test split "
                        f"({len(items)} images, classes {classes})")
