"""The reader every benchmark uses: `<root>/<DIR>/split_<DIR>.json` over images in `<root>/<DIR>/<DIR>/`.

All eleven reference readers are the same class apart from names (docs/DESIGN.md), so here they are one
class plus a table (datasets/benchmarks.py).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from engine.data import (
    DatasetBase,
    data_to_rows,
    fewshot_file,
    load_or_make_fewshot,
    rows_to_data,
    subsample_classes,
)
from engine.errors import UserError
from engine.utils import get_logger, read_json, writable_cache_dir, write_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark as data: its folder name, class strings in label order and where to get it."""

    name: str  # DATASET.NAME = folder name = split file suffix
    config: str  # configs/datasets/<config>.yaml
    classnames: tuple[str, ...]
    modality: str
    image_ext: str
    gdrive_id: str = ""
    has_base2new: bool = True
    counts: dict = field(default_factory=dict)  # split -> number of images in the published split

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/TahaKoleilat/BiomedCoOp/resolve/main/{self.name}.zip"

    @property
    def class_dirs(self) -> list[str]:
        return [c.replace(" ", "_") for c in self.classnames]


SPLIT_SEED = 0  # a generated split is drawn once, the same for every run and seed


def make_split(image_dir: str, p_train: float = 0.5, p_val: float = 0.2, seed: int = SPLIT_SEED) -> dict[str, list]:
    """Split sorted class folders 50/20/30 per class with a fixed seed (independent of the run's seed)."""
    rng = random.Random(seed)
    if not os.path.isdir(image_dir):
        raise UserError(f"Image folder not found: {image_dir}. Check DATASET.ROOT (--root).")
    classes = sorted(d for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d)))
    split = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(classes):
        files = sorted(
            f for f in os.listdir(os.path.join(image_dir, folder)) if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        rng.shuffle(files)
        n_train = round(len(files) * p_train)
        n_val = round(len(files) * p_val)
        classname = folder.replace("_", " ")
        for name, chunk in (
            ("train", files[:n_train]),
            ("val", files[n_train : n_train + n_val]),
            ("test", files[n_train + n_val :]),
        ):
            split[name].extend([f"{folder}/{f}", label, classname] for f in chunk)
    return split


class SplitJsonDataset(DatasetBase):
    """Reads a split JSON, draws the few-shot subset for (K, seed), then applies base/new subsampling."""

    spec: BenchmarkSpec | None = None

    def __init__(self, cfg):
        name = self.spec.name if self.spec else cfg.DATASET.NAME
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or "."))
        self.dataset_dir = os.path.join(root, name)
        self.image_dir = os.path.join(self.dataset_dir, name)
        self.split_path = os.path.join(self.dataset_dir, f"split_{name}.json")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        if not os.path.isdir(self.dataset_dir):
            raise UserError(f"Dataset folder not found: {self.dataset_dir}. {self.how_to_get(name, cfg.DATASET.ROOT)}")
        train, val, test = self.read_split()
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            protocol = cfg.DATASET.FEWSHOT_PROTOCOL
            fewshot_dir = cfg.DATASET.FEWSHOT_CACHE_DIR or self.split_fewshot_dir
            if not cfg.DATASET.FEWSHOT_CACHE_DIR and not os.path.isfile(
                os.path.join(fewshot_dir, fewshot_file(num_shots, cfg.SEED, protocol))
            ):
                fewshot_dir = writable_cache_dir(fewshot_dir, self.dataset_dir, "split_fewshot",
                                                 "DATASET.FEWSHOT_CACHE_DIR")
            train, val = load_or_make_fewshot(train, val, num_shots, cfg.SEED, fewshot_dir, self.image_dir,
                                              protocol)
        else:
            get_logger().info(f"DATASET.NUM_SHOTS {num_shots}: training on all {len(train)} training images")
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    def how_to_get(self, name: str, root: str) -> str:
        hint = f"python tools/download_data.py {name} --root {root or 'DATA'}"
        return f"Download it with `{hint}` or point --root at the folder that contains {name}/."

    def read_split(self):
        if not os.path.isfile(self.split_path):
            if self.spec is not None:
                # A benchmark's test set is its official split; a fresh draw would change it silently.
                raise UserError(
                    f"{self.split_path} is missing: {self.spec.name}'s official split file comes with the "
                    f"dataset. Run `python tools/download_data.py {self.spec.name} --root "
                    f"{os.path.dirname(self.dataset_dir)}` to restore it."
                )
            split = make_split(self.image_dir)
            write_json(split, self.split_path)
            counts = ", ".join(f"{k} {len(v)}" for k, v in split.items())
            get_logger().info(
                f"No split file at {self.split_path}: wrote a 50/20/30 split of {self.image_dir} per class "
                f"(fixed seed {SPLIT_SEED}, the same for every run): {counts} images"
            )
        try:
            data = read_json(self.split_path)
        except ValueError as err:
            raise UserError(f"{self.split_path} is not valid JSON ({err}). Delete it to have it rebuilt.") from err
        missing = [k for k in ("train", "val", "test") if k not in data]
        if missing:
            raise UserError(f"{self.split_path} lacks the key(s) {missing}; expected train, val and test lists.")
        return [rows_to_data(data[k], self.image_dir, self.split_path) for k in ("train", "val", "test")]


def save_split(train, val, test, path: str) -> None:
    write_json({"train": data_to_rows(train), "val": data_to_rows(val), "test": data_to_rows(test)}, path)
