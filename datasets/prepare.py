"""Turning the user's own images into a dataset the readers use (tools/prepare_dataset.py is the command).

From a folder of class sub-folders or a CSV of path,label[,split] rows: class strings and labels, a
seeded per-class train/val/test split, the images linked or copied into DATA/NAME/NAME/<class folder>/,
split_NAME.json, and the dataset config. Everything is built in a temporary folder and renamed into
place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import tempfile

from datasets.own import NAME_PATTERN, confusable_benchmark, own_dataset_reader
from datasets.split_json import IMAGE_EXTENSIONS
from engine.errors import UserError
from engine.utils import atomic_write_bytes, write_json

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
        counts, keys = [], []
        for key, classname, cls_dir in plan:
            label = len(counts)
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
            keys.append(key)
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
    return {"dataset_dir": dataset_dir, "config": config, "classes": counts, "skipped": skipped,
            "source": "folder" if folder is not None else "csv", "keys": keys, "named": mapping is not None}


def summary_lines(summary: dict) -> list[str]:
    """The table the command prints: label, class string, where it came from, images per split.

    A class folder is named after its class string; a CSV label is named beside its class string, so a
    label read as the class string itself (numbers, without --classnames) is visible as such.
    """
    lines = []
    if summary.get("source") == "csv":
        lines.append("label  class string (CSV label; image folder): train / val / test")
        rows = [f"{classname} ({key}; {folder})"
                for key, (classname, folder, *_) in zip(summary["keys"], summary["classes"])]
    else:
        lines.append("label  class string (folder): train / val / test")
        rows = [f"{classname} ({folder})" for classname, folder, *_ in summary["classes"]]
    for label, (text, (_, _, n_train, n_val, n_test)) in enumerate(zip(rows, summary["classes"])):
        lines.append(f"{label:5d}  {text}: {n_train} / {n_val} / {n_test}")
    numeric = [c[0] for c in summary["classes"] if re.fullmatch(r"-?\d+", c[0])]
    if numeric and not summary.get("named"):
        lines.append(f"note: the class strings {numeric} are bare labels, and the model reads them as text "
                     "(\"a photo of a 0.\"); name the classes with --classnames names.json, e.g. "
                     "{\"0\": \"benign lesion\", ...}, and prepare again with --force")
    if summary["skipped"]:
        lines.append(f"skipped {summary['skipped']} file(s) that are not images ({', '.join(IMAGE_EXTENSIONS)})")
    small = [c[0] for c in summary["classes"] if c[2] < 16]
    if small:
        lines.append(f"note: fewer than 16 training images in {small}; K-shot runs with larger K use all of them")
    return lines
