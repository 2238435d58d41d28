"""Checking a dataset before training (tools/check_data.py is the command): every problem at once, each
naming the file or class.

The split file's rows, label and class-string consistency (and, for a benchmark, the declared class
strings), missing and undecodable images (PIL verify, then a full load, so truncated files are caught),
few-shot subsets cached in split_fewshot/ that name images the split no longer has, and classes without
prompts in clip_prompts/NAME.json. Problems fail a check; warnings are worth a look.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from datasets.benchmarks import ALL_SPECS
from engine.data import Datum, classes_without_training_images, stale_fewshot_rows
from engine.errors import UserError
from engine.prompts import prompt_file, read_prompt_file
from engine.utils import read_json

SPLITS = ("train", "val", "test")
DEFAULT_N_PROMPTS = 50  # the default of TRAINER.BIOMEDCOOP.N_PROMPTS


@dataclass
class Report:
    name: str
    dataset_dir: str
    n_listed: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def resolve_name(name: str) -> tuple[str, object]:
    """(DATASET.NAME, spec or None): a benchmark by any spelling, otherwise the user's own dataset name."""
    key = name.lower()
    for spec in ALL_SPECS.values():  # the benchmarks and the DG targets
        if key in (spec.name.lower(), spec.config):
            return spec.name, spec
    return name, None


def image_problem(path: str) -> str | None:
    """None if PIL can verify and fully decode the file, else why not."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # PIL raises many types for bad files; every one of them is a bad image
        return f"{err.__class__.__name__}: {err}"
    return None


def read_rows(split_path: str, report: Report) -> dict[str, list] | None:
    try:
        data = read_json(split_path)
    except ValueError as err:
        report.problems.append(f"{split_path}: not valid JSON ({err}); delete it and recreate it")
        return None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in SPLITS):
        report.problems.append(f"{split_path}: expected {{'train': [...], 'val': [...], 'test': [...]}}")
        return None
    rows = {}
    for part in SPLITS:
        good = []
        for i, row in enumerate(data[part]):
            ok = (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                  and isinstance(row[1], int) and isinstance(row[2], str))
            if ok:
                good.append(row)
            else:
                report.problems.append(
                    f"{split_path}: {part}[{i}] = {row!r} is not [relative_path, integer_label, classname]"
                )
        rows[part] = good
    return rows


def check_classes(rows: dict[str, list], spec, report: Report, split_path: str) -> list[str]:
    """Label <-> class-string consistency and, for a benchmark, the declared strings. Returns the class list."""
    names_of: dict[int, Counter] = defaultdict(Counter)
    for part in SPLITS:
        for _, label, classname in rows[part]:
            names_of[label][classname] += 1
    for label, names in sorted(names_of.items()):
        if len(names) > 1:
            report.problems.append(f"{split_path}: label {label} is used with several class strings {dict(names)}")
    labels = sorted(names_of)
    classnames = [names_of[label].most_common(1)[0][0] for label in labels]
    if labels != list(range(len(labels))):
        report.problems.append(f"{split_path}: labels must be 0..{len(labels) - 1} without gaps; found {labels}")
    train_pairs = [(label, name) for _, label, name in rows["train"]]
    other_pairs = [(label, name) for part in SPLITS if part != "train" for _, label, name in rows[part]]
    for label, name in classes_without_training_images(train_pairs, other_pairs):
        if label in names_of:  # a label gap is reported above
            report.problems.append(
                f"{split_path}: class {label} '{name}' has no train image (the class list is read from train)"
            )
    seen_for_name: dict[str, int] = {}
    for label, name in zip(labels, classnames):
        if name in seen_for_name:
            report.problems.append(f"{split_path}: labels {seen_for_name[name]} and {label} share the class '{name}'")
        seen_for_name.setdefault(name, label)
    if spec is not None:
        declared = list(spec.classnames)
        if classnames != declared:
            report.problems.append(
                f"{split_path}: class strings in label order are {classnames}, but datasets/benchmarks.py declares "
                f"{declared} for {spec.name}; use the original split file (tools/download_data.py {spec.name})"
            )
        counts = {part: len(rows[part]) for part in SPLITS}
        if spec.counts and counts != spec.counts:
            report.warnings.append(f"{split_path}: {counts} images per split; the published split has {spec.counts}")
    for part in SPLITS:
        for relpath, label, classname in rows[part]:
            folder = relpath.split("/", 1)[0]
            if "/" in relpath and folder != classname.replace(" ", "_"):
                report.warnings.append(
                    f"{relpath}: class folder '{folder}' differs from its class string '{classname}' (label {label})"
                )
                break  # one example per split is enough
    return classnames


def check_prompts(name: str, classnames: list[str], report: Report, prompts_dir: str | None) -> None:
    path = prompt_file(name, prompts_dir)
    if not os.path.isfile(path):
        report.warnings.append(
            f"no prompt ensemble at {path}: CoOp and the other methods run, BiomedCoOp does not. Make one with "
            f"`python tools/generate_prompts.py --from-dataset ...` (see docs/own_data.md)"
        )
        return
    try:
        classes = read_prompt_file(path)["classes"]
    except UserError as err:
        report.problems.append(str(err))
        return
    lookup = {k.lower(): v for k, v in classes.items()}  # the matching rule of engine.prompts.load_ensemble
    for c in classnames:
        sentences = lookup.get(c.replace("_", " ").lower())
        if sentences is None:
            report.problems.append(f"{path}: no prompts for class '{c}'; its classes are {list(classes)}")
        elif len(sentences) < DEFAULT_N_PROMPTS:
            report.warnings.append(
                f"{path}: class '{c}' has {len(sentences)} prompts, fewer than the default "
                f"TRAINER.BIOMEDCOOP.N_PROMPTS {DEFAULT_N_PROMPTS}"
            )
    wanted = {c.replace("_", " ").lower() for c in classnames}
    extra = [k for k in classes if k.lower() not in wanted]
    if extra and os.path.basename(path) == f"{name}.json":  # a DG target reads its source's, a superset
        report.warnings.append(f"{path}: prompts for classes the dataset does not have: {extra}")


def check_dataset(name: str, root: str, images: bool = True, workers: int = 8,
                  prompts_dir: str | None = None, progress: bool = True) -> Report:
    name, spec = resolve_name(name)
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, name)
    image_dir = os.path.join(dataset_dir, name)
    split_path = os.path.join(dataset_dir, f"split_{name}.json")
    report = Report(name, dataset_dir)
    if not os.path.isdir(dataset_dir):
        hint = f"python tools/download_data.py {name} --root {root}" if spec else \
            f"python tools/prepare_dataset.py --folder DIR --name {name} --root {root}"
        raise UserError(f"Dataset folder not found: {dataset_dir}. Create it with `{hint}` or fix --root.")
    if not os.path.isfile(split_path):
        raise UserError(f"No split file at {split_path}: the dataset is not prepared (see docs/own_data.md).")
    rows = read_rows(split_path, report)
    if rows is None:
        return report
    listed = [(part, row) for part in SPLITS for row in rows[part]]
    report.n_listed = len(listed)
    where: dict[str, list[str]] = defaultdict(list)
    for part, row in listed:
        where[row[0]].append(part)
    for relpath, parts in where.items():
        if len(parts) > 1:
            report.problems.append(f"{relpath} is listed {len(parts)} times (in {', '.join(parts)})")
    classnames = check_classes(rows, spec, report, split_path)
    present = []
    for relpath in where:
        path = os.path.join(image_dir, relpath)
        if os.path.isfile(path):
            present.append(path)
        else:
            report.problems.append(f"missing file: {path}")
    if images and present:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = pool.map(image_problem, present, chunksize=64)
            for path, problem in tqdm(zip(present, results), total=len(present), desc=f"images {name}",
                                      unit="img", disable=not progress):
                if problem:
                    report.problems.append(f"unreadable image: {path} ({problem})")
    check_fewshot_caches(dataset_dir, image_dir, rows, report)
    check_prompts(name, classnames, report, prompts_dir)
    return report


def check_fewshot_caches(dataset_dir: str, image_dir: str, rows: dict[str, list], report: Report) -> None:
    """Few-shot subsets cached in split_fewshot/ that name images the split (or the disk) no longer has."""
    folder = os.path.join(dataset_dir, "split_fewshot")
    if not os.path.isdir(folder):
        return
    items = {part: [Datum(os.path.join(image_dir, r[0]), r[1], r[2], relpath=r[0]) for r in rows[part]]
             for part in ("train", "val")}
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".json"):
            path = os.path.join(folder, fname)
            stale = stale_fewshot_rows(path, items["train"], items["val"])
            if stale:
                report.warnings.append(
                    f"{path} names {len(stale)} image(s) no longer in the split or on disk (e.g. {stale[0]}); "
                    "training draws that subset again (delete the file to do it now)"
                )
