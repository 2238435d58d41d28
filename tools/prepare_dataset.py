"""Turn your own images into a dataset every trainer and script can use (see docs/own_data.md).

    python tools/prepare_dataset.py --folder scans/ --name MyScans --root DATA
    python tools/prepare_dataset.py --csv labels.csv --classnames names.json --name MyScans --root DATA

--folder DIR: one sub-folder per class (images may sit deeper inside it); the class string is the folder
name with underscores as spaces, or what --classnames maps the folder name to.
--csv FILE: rows `path,label` (a header row `path,label` is optional; an optional third column `split`
with train/val/test fixes the split). Relative paths are relative to the CSV's folder. Labels are class
names, or keys of --classnames (e.g. 0, 1, 2 -> "benign tumor", ...).

Writes DATA/NAME/split_NAME.json and DATA/NAME/NAME/<class_folder>/<file> (hard links where possible,
else copies; --mode symlink or copy to choose), built in a temporary folder and renamed into place, and
DATA/NAME/dataset.yaml, the dataset config the scripts find there (nothing is written into the source
tree; --config-dir DIR writes DIR/<name>.yaml instead). Labels follow the --classnames file's order, else
sorted class keys. Each class is split 50/20/30 (--split) after a shuffle seeded by --seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import sys
import tempfile

import _bootstrap  # noqa: F401

from datasets.own import NAME_PATTERN, confusable_benchmark, own_dataset_reader
from datasets.split_json import IMAGE_EXTENSIONS
from engine.errors import UserError
from engine.utils import atomic_write_bytes, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "val", "test")


def parse_split(text: str) -> tuple[float, float, float]:
    """'50/20/30' or '0.6,0.2,0.2' -> fractions summing to 1."""
    parts = [p for p in re.split(r"[/,:]", text) if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0 or values[0] == 0:
        raise UserError(f"--split '{text}': give three non-negative numbers TRAIN/VAL/TEST, e.g. 50/20/30.")
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def read_mapping(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise UserError(f"--classnames file not found: {path}") from err
    except ValueError as err:
        raise UserError(f"--classnames {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not data or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise UserError(f'--classnames {path}: expected {{"folder or label": "class string", ...}}.')
    return {str(k): v.strip() for k, v in data.items()}


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def scan_folder(folder: str) -> tuple[dict[str, list[str]], int]:
    """{class folder name: [absolute image paths]} and the number of non-image files skipped."""
    if not os.path.isdir(folder):
        raise UserError(f"--folder {folder} is not a folder.")
    groups, skipped = {}, 0
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.startswith(".") or not os.path.isdir(path):
            continue
        files = []
        for here, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if is_image(name):
                    files.append(os.path.join(here, name))
                else:
                    skipped += 1
        groups[entry] = files
    if not groups:
        raise UserError(f"--folder {folder} has no sub-folders; put each class's images in its own sub-folder.")
    return groups, skipped


def read_csv(path: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """{label: [absolute image paths]} and {path: split} for rows that fix their split."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except FileNotFoundError as err:
        raise UserError(f"--csv file not found: {path}") from err
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    base = os.path.dirname(os.path.abspath(path))
    groups: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    problems, missing = [], []
    for i, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
            problems.append(f"row {i}: {row!r} is not path,label[,split]")
            continue
        image = os.path.normpath(os.path.join(base, os.path.expanduser(cells[0])))
        if not os.path.isfile(image):
            missing.append(image)
            continue
        groups.setdefault(cells[1], []).append(image)
        if len(cells) == 3:
            if cells[2].lower() not in SPLITS:
                problems.append(f"row {i}: split '{cells[2]}' must be train, val or test")
            else:
                fixed[image] = cells[2].lower()
    if missing:
        problems.append(f"{len(missing)} listed file(s) do not exist, e.g. " + ", ".join(missing[:5]))
    if problems:
        raise UserError(f"{path}:\n  " + "\n  ".join(problems[:20]))
    if not groups:
        raise UserError(f"{path} lists no images; expected rows path,label.")
    return groups, fixed


def sort_keys(keys: list[str]) -> list[str]:
    """Numeric labels in numeric order (2 before 10), others alphabetically."""
    if all(re.fullmatch(r"-?\d+", k) for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def class_folder(classname: str) -> str:
    return re.sub(r"[^\w.-]+", "_", classname.replace(" ", "_")).strip("._") or "class"


def plan_classes(groups: dict[str, list[str]], mapping: dict[str, str] | None) -> list[tuple[str, str, str]]:
    """[(key, class string, class folder)] in label order."""
    if mapping is not None:
        unmapped = [k for k in groups if k not in mapping]
        if unmapped:
            raise UserError(f"--classnames has no entry for {sort_keys(unmapped)}; add them (keys: {list(mapping)}).")
        keys = [k for k in mapping if k in groups]
        names = [mapping[k] for k in keys]
    else:
        keys = sort_keys(list(groups))
        names = [k.replace("_", " ").strip() for k in keys]
    if len(keys) < 2:
        raise UserError(f"Found {len(keys)} class(es) ({keys}); classification needs at least two.")
    empty = [k for k in keys if not groups[k]]
    if empty:
        raise UserError(f"Class(es) {empty} have no images ({', '.join(IMAGE_EXTENSIONS)}).")
    plan = [(k, n, class_folder(n)) for k, n in zip(keys, names)]
    for what, values in (("class string", [p[1].lower() for p in plan]), ("class folder", [p[2] for p in plan])):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise UserError(f"Two classes share the {what} {dupes}; give them distinct names (--classnames).")
    return plan


def split_class(files: list[str], fractions, rng: random.Random, fixed: dict[str, str]) -> dict[str, list[str]]:
    out = {s: [f for f in files if fixed.get(f) == s] for s in SPLITS}
    free = [f for f in files if f not in fixed]
    rng.shuffle(free)
    n_train = round(len(free) * fractions[0])
    n_val = round(len(free) * fractions[1])
    if free and n_train == 0 and not out["train"]:
        n_train = 1  # every class needs a training image: the class list is read from train
    out["train"] += free[:n_train]
    out["val"] += free[n_train : n_train + n_val]
    out["test"] += free[n_train + n_val :]
    return out


def place(src: str, dst: str, mode: str) -> None:
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
        return
    if mode == "link":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    shutil.copy2(src, dst)


DATASET_CONFIG = "dataset.yaml"  # DATA/NAME/dataset.yaml: the config lives with the data it names


def write_config(name: str, config_dir: str | None, force: bool, dataset_dir: str = "") -> str:
    path = os.path.join(config_dir, f"{name.lower()}.yaml") if config_dir else os.path.join(dataset_dir, DATASET_CONFIG)
    text = f'# Your own dataset, made by tools/prepare_dataset.py (docs/own_data.md).\nDATASET:\n  NAME: "{name}"\n'
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            current = f.read()
        if f'NAME: "{name}"' not in current and not force:
            raise UserError(f"{path} exists and names another dataset; choose another --name or pass --force.")
    atomic_write_bytes(path, text.encode())
    return path


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise UserError(f"--name '{name}': use letters, digits, '_' or '-', starting with a letter (e.g. MyScans).")
    clash = confusable_benchmark(name)
    if clash:
        raise UserError(
            f"--name '{name}' is the benchmark name {clash} (compared ignoring case); choose a distinct name."
        )


def prepare(name: str, root: str, folder: str | None = None, csv_path: str | None = None,
            classnames: str | None = None, split: str = "50/20/30", seed: int = 1, mode: str = "link",
            force: bool = False, config_dir: str | None = None) -> dict:
    """Build DATA/NAME (atomically) and its dataset config; returns a summary."""
    check_name(name)
    if (folder is None) == (csv_path is None):
        raise UserError("Give exactly one of --folder DIR or --csv FILE.")
    fractions = parse_split(split)
    mapping = read_mapping(classnames)
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, name)
    if os.path.exists(dataset_dir) and not force:
        raise UserError(f"{dataset_dir} already exists; pass --force to replace it, or choose another --name.")
    config_path = os.path.join(config_dir, f"{name.lower()}.yaml") if config_dir else ""
    if config_path and os.path.isfile(config_path) and not force:
        with open(config_path, encoding="utf-8") as f:
            if f'NAME: "{name}"' not in f.read():
                raise UserError(f"{config_path} exists and names another dataset; choose another --name.")
    if folder is not None:
        groups, skipped = scan_folder(folder)
        fixed: dict[str, str] = {}
    else:
        (groups, fixed), skipped = read_csv(csv_path), 0
    plan = plan_classes(groups, mapping)
    rng = random.Random(seed)

    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.prepare-", dir=root)
    try:
        image_dir = os.path.join(tmp, name, name)
        split_rows = {s: [] for s in SPLITS}
        counts = []
        for label, (key, classname, cls_dir) in enumerate(plan):
            os.makedirs(os.path.join(image_dir, cls_dir))
            used: set[str] = set()
            relpath_of = {}
            for src in groups[key]:
                base = os.path.basename(src)
                candidate, n = base, 1
                while candidate.lower() in used:  # same file name from two source folders
                    candidate, n = f"{n}_{base}", n + 1
                used.add(candidate.lower())
                rel = f"{cls_dir}/{candidate}"
                place(src, os.path.join(image_dir, rel), mode)
                relpath_of[src] = rel
            parts = split_class(groups[key], fractions, rng, fixed)
            for s in SPLITS:
                split_rows[s].extend([relpath_of[f], label, classname] for f in parts[s])
            counts.append((classname, cls_dir, *(len(parts[s]) for s in SPLITS)))
        write_json(split_rows, os.path.join(tmp, name, f"split_{name}.json"))
        old = None
        if os.path.exists(dataset_dir):
            old = os.path.join(tmp, "replaced")
            os.replace(dataset_dir, old)
        os.replace(os.path.join(tmp, name), dataset_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = write_config(name, config_dir, force, dataset_dir)
    own_dataset_reader(name)
    return {"dataset_dir": dataset_dir, "config": config, "classes": counts, "skipped": skipped}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="folder with one sub-folder of images per class")
    src.add_argument("--csv", help="CSV of path,label[,split] rows")
    p.add_argument("--name", required=True, help="dataset name (DATASET.NAME), e.g. MyScans")
    p.add_argument("--root", required=True, help="data root; NAME/ is created inside it")
    p.add_argument("--classnames", help='JSON {"folder or label": "class string"}; its order sets the labels')
    p.add_argument("--split", default="50/20/30", help="train/val/test proportions per class (default 50/20/30)")
    p.add_argument("--seed", type=int, default=1, help="seed of the per-class shuffle (default 1)")
    p.add_argument("--mode", choices=("link", "copy", "symlink"), default="link",
                   help="hard link (copy across file systems), copy, or symlink the images (default link)")
    p.add_argument("--force", action="store_true", help="replace an existing DATA/NAME and its config")
    p.add_argument("--config-dir", default=None,
                   help="write the dataset config as DIR/<name>.yaml (default: DATA/NAME/dataset.yaml)")
    args = p.parse_args(argv)
    try:
        summary = prepare(args.name, args.root, args.folder, args.csv, args.classnames, args.split, args.seed,
                          args.mode, args.force, args.config_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['dataset_dir']} and {summary['config']}")
    print("label  class string (folder): train / val / test")
    for label, (classname, folder, n_train, n_val, n_test) in enumerate(summary["classes"]):
        print(f"{label:5d}  {classname} ({folder}): {n_train} / {n_val} / {n_test}")
    if summary["skipped"]:
        print(f"skipped {summary['skipped']} file(s) that are not images ({', '.join(IMAGE_EXTENSIONS)})")
    small = [c[0] for c in summary["classes"] if c[2] < 16]
    if small:
        print(f"note: fewer than 16 training images in {small}; K-shot runs with larger K use all of them")
    print(f"next: python tools/check_data.py {args.name} --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
