"""Read a tree of run folders into records, and aggregate them the way the paper's tables do.

Shared by make_tables, plot_results and reproduction_report. Light on purpose (json, math, os
only) so that the tools' --help answers at once.

A run folder is any `seed<S>/` folder. It counts as finished when it holds `results.json`; one with
a `log.txt` but no `results.json` (crashed, killed or still running) is reported as failed, so a
table never quietly averages over fewer seeds than the grid has.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

SEED_DIR = re.compile(r"^seed(\d+)$")
SHOTS_DIR = re.compile(r"^shots_(-?\d+)$")
CONFIG_TAG = "nctx4_cscFalse_ctpend"

# Display order of the methods: the paper's table order, then anything else alphabetically.
METHOD_ORDER = [
    "ZeroShot", "ZeroShotEnsemble", "ClipAdapter", "TipAdapter", "TipAdapterF", "LinearProbe",
    "LPPlusPlus", "CoOp", "CoCoOp", "KgCoOp", "ProGrad", "CLIPLoRA", "CLIPSVD", "BiomedCoOp",
]
# This toolkit's method names -> the names the BiomedCoOp paper prints.
PAPER_NAMES = {
    "ZeroShot": "BiomedCLIP (zero-shot)",
    "ZeroShotEnsemble": "Zero-shot BiomedCLIP++ (LLM prompt ensemble)",
    "ClipAdapter": "CLIP-Adapter",
    "TipAdapter": "Tip-Adapter",
    "TipAdapterF": "Tip-Adapter-F",
    "LinearProbe": "Standard LP",
    "LPPlusPlus": "LP++",
    "CoOp": "CoOp",
    "CoCoOp": "CoCoOp",
    "KgCoOp": "KgCoOp",
    "ProGrad": "ProGrad",
    "BiomedCoOp": "BiomedCoOp",
}
ZERO_SHOT_METHODS = {"ZeroShot", "ZeroShotEnsemble"}

# The paper's published averages (BiomedCoOp, CVPR 2025: README table and overview figure).
# Few-shot: mean over the 11 benchmarks, 3 seeds; key (method, backbone) -> {K: accuracy}.
# Zero-shot numbers do not depend on K and are stored under K = 0.
PAPER_FEWSHOT: dict[tuple[str, str], dict[int, float]] = {
    ("ClipAdapter", "BiomedCLIP"): {1: 44.66, 2: 43.91, 4: 44.36, 8: 45.42, 16: 46.69},
    ("TipAdapter", "BiomedCLIP"): {1: 49.19, 2: 52.36, 4: 57.33, 8: 61.98, 16: 67.15},
    ("TipAdapterF", "BiomedCLIP"): {1: 51.17, 2: 52.74, 4: 61.23, 8: 65.91, 16: 70.91},
    ("LinearProbe", "BiomedCLIP"): {1: 47.25, 2: 54.21, 4: 61.00, 8: 65.85, 16: 69.40},
    ("LPPlusPlus", "BiomedCLIP"): {1: 47.24, 2: 53.18, 4: 59.02, 8: 63.69, 16: 68.35},
    ("CoOp", "BiomedCLIP"): {1: 50.16, 2: 54.18, 4: 59.75, 8: 65.84, 16: 69.62},
    ("CoCoOp", "BiomedCLIP"): {1: 48.49, 2: 51.28, 4: 54.69, 8: 61.08, 16: 65.09},
    ("KgCoOp", "BiomedCLIP"): {1: 50.85, 2: 53.18, 4: 57.82, 8: 62.08, 16: 62.84},
    ("ProGrad", "BiomedCLIP"): {1: 51.88, 2: 54.71, 4: 60.42, 8: 65.61, 16: 67.13},
    ("BiomedCoOp", "BiomedCLIP"): {1: 57.03, 2: 59.13, 4: 63.95, 8: 68.32, 16: 72.42},
    ("BiomedCoOp", "CLIP"): {1: 42.11, 2: 44.52, 4: 53.48, 8: 56.36, 16: 62.37},
    ("BiomedCoOp", "PubMedCLIP"): {1: 44.54, 2: 47.76, 4: 55.68, 8: 61.78, 16: 67.30},
    ("BiomedCoOp", "PMCCLIP"): {1: 35.30, 2: 39.77, 4: 44.46, 8: 47.21, 16: 52.42},
    ("ZeroShot", "BiomedCLIP"): {0: 42.05},
    ("ZeroShotEnsemble", "BiomedCLIP"): {0: 52.3},
}
PAPER_FEWSHOT_DATASETS = 11
# Base-to-novel: mean over the 10 benchmarks with a class split, 16 shots, 3 seeds.
# "hm_convention" says how the paper's HM appears to have been aggregated: its BiomedCoOp HM is the
# HM of the averaged base and novel accuracies; every baseline's HM is lower than that, which only
# an average of per-dataset HMs explains.
PAPER_BASE2NEW: dict[tuple[str, str], dict] = {
    ("ZeroShot", "BiomedCLIP"): {"base": 47.84, "novel": 65.42, "hm": 53.81, "hm_convention": "mean_of_hms"},
    ("CoOp", "BiomedCLIP"): {"base": 73.85, "novel": 64.75, "hm": 67.23, "hm_convention": "mean_of_hms"},
    ("CoCoOp", "BiomedCLIP"): {"base": 72.26, "novel": 67.03, "hm": 67.22, "hm_convention": "mean_of_hms"},
    ("KgCoOp", "BiomedCLIP"): {"base": 68.36, "novel": 64.08, "hm": 64.61, "hm_convention": "mean_of_hms"},
    ("ProGrad", "BiomedCLIP"): {"base": 71.67, "novel": 66.93, "hm": 67.43, "hm_convention": "mean_of_hms"},
    ("BiomedCoOp", "BiomedCLIP"): {"base": 76.26, "novel": 73.92, "hm": 75.07, "hm_convention": "hm_of_means"},
}
PAPER_BASE2NEW_DATASETS = 10


def paper_backbone(backbone: str) -> tuple[str, bool]:
    """The backbone whose published numbers apply: a Tiny twin maps to its full model (flagged);
    random weights ("-random") match nothing."""
    if backbone.endswith("-random"):
        return "", False
    if backbone.startswith("Tiny"):
        return backbone[len("Tiny"):], True
    return backbone, False


def paper_fewshot(method: str, backbone: str, shots: int) -> float | None:
    numbers = PAPER_FEWSHOT.get((method, paper_backbone(backbone)[0]))
    if not numbers:
        return None
    return numbers.get(0 if method in ZERO_SHOT_METHODS else shots)


def paper_base2new(method: str, backbone: str) -> dict | None:
    return PAPER_BASE2NEW.get((method, paper_backbone(backbone)[0]))


@dataclass
class Run:
    """One seed folder: a finished run (accuracy set) or a failed one (failure set)."""

    path: str
    method: str
    backbone: str
    dataset: str
    shots: int
    seed: int
    task: str  # "few_shot", "base" (base-class test of a base-to-novel run) or "new"
    accuracy: float | None = None
    failure: str | None = None
    collapsed: bool = False
    record: dict = field(default_factory=dict, repr=False)
    label: str = ""  # the run's variant: "imbalanced" protocol and/or TRAINER.RUN_LABEL, "_"-joined

    @property
    def ok(self) -> bool:
        return self.failure is None and self.accuracy is not None

    @property
    def row_name(self) -> str:
        """What a table row is keyed on: the method, with its variant when it has one ("BiomedCoOp [ce]")."""
        return f"{self.method} [{self.label}]" if self.label else self.method


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pstd(values: list[float]) -> float:
    """Population std (numpy's default), as the reference's result parser prints it."""
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def is_collapsed(record: dict) -> bool:
    """Every test image given the same label (with more than one class present).

    Uses the per-class prediction counts when the record has them; older records fall back to the
    per-class accuracies (one class at 100%, every other at 0%), the same pattern.
    """
    counts = record.get("prediction_counts")
    total = record.get("total") or 0
    if isinstance(counts, dict) and counts and total:
        return max(counts.values()) == total and len(record.get("per_class_accuracy") or counts) > 1
    per_class = record.get("per_class_accuracy")
    if isinstance(per_class, dict) and len(per_class) > 1:
        values = sorted(per_class.values())
        return values[-1] == 100.0 and all(v == 0.0 for v in values[:-1])
    return False


def run_label(record: dict) -> str:
    """A finished run's variant: its few-shot protocol unless balanced, then its TRAINER.RUN_LABEL."""
    protocol = str(record.get("fewshot_protocol") or "balanced")
    return "_".join(p for p in (protocol if protocol != "balanced" else "", str(record.get("label") or "")) if p)


def task_of(subsample: str) -> str:
    return {"base": "base", "new": "new"}.get(str(subsample).lower(), "few_shot")


def _from_path(path: str) -> dict:
    """What the folder layout says about a run: used for failed runs that wrote no results.json."""
    parts = os.path.normpath(path).split(os.sep)
    info: dict = {"seed": int(SEED_DIR.match(parts[-1]).group(1))}
    # .../<dataset>/shots_<K>/<Method>_<Model>[-random]/<config tag>/seed<S>
    if len(parts) >= 5 and SHOTS_DIR.match(parts[-4]):
        info["shots"] = int(SHOTS_DIR.match(parts[-4]).group(1))
        info["dataset"] = parts[-5]
        trainer = parts[-3]
        random_weights = trainer.endswith("-random")
        method, _, backbone = trainer.removesuffix("-random").rpartition("_")
        info["method"], info["backbone"] = (method or trainer), (backbone or "?")
        if random_weights:
            info["backbone"] += "-random"
        # <config tag>_<protocol>_<label> (scripts/common.sh run_tag): the same variant a finished run records
        info["label"] = parts[-2][len(CONFIG_TAG) + 1:] if parts[-2].startswith(CONFIG_TAG + "_") else ""
    if "train_base" in parts:
        info["task"] = "base"
    elif "test_new" in parts:
        info["task"] = "new"
    return info


def _run_from_record(path: str, record: dict) -> Run:
    hint = _from_path(path)
    backbone = str(record.get("backbone") or hint.get("backbone", "?"))
    if record.get("pretrained") is False and not backbone.endswith("-random"):
        backbone += "-random"  # random-weight runs never share a row with real-weight ones
    accuracy = record.get("accuracy")
    failure = None
    if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        failure, accuracy = f"results.json has no finite accuracy ({accuracy!r})", None
    shots = record.get("num_shots", hint.get("shots", -1))
    return Run(
        path=path,
        method=str(record.get("method") or hint.get("method", "?")),
        backbone=backbone,
        dataset=str(record.get("dataset") or hint.get("dataset", "?")),
        shots=int(shots) if isinstance(shots, int) else -1,
        seed=int(record.get("seed", hint["seed"])),
        task=task_of(record.get("subsample_classes", hint.get("task", "all"))),
        accuracy=None if accuracy is None else float(accuracy),
        failure=failure,
        collapsed=is_collapsed(record) if failure is None else False,
        record=record,
        label=run_label(record) if ("label" in record or "fewshot_protocol" in record) else hint.get("label", ""),
    )


def scan(root: str) -> list[Run]:
    """Every seed folder under `root` (finished or failed), sorted by path."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder (give the OUTPUT_ROOT of your runs)")
    runs: list[Run] = []
    folder_names: dict[str, str] = {}  # dataset folder name -> the dataset's name in results.json
    failed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not SEED_DIR.match(os.path.basename(dirpath)):
            continue
        dirnames[:] = []  # nothing of interest below a seed folder
        if "results.json" in filenames:
            try:
                with open(os.path.join(dirpath, "results.json"), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError) as err:
                runs.append(_failed_run(dirpath, f"unreadable results.json ({err})"))
                continue
            run = _run_from_record(dirpath, record)
            runs.append(run)
            if "dataset" in _from_path(dirpath):
                folder_names[_from_path(dirpath)["dataset"]] = run.dataset
        elif any(name.startswith("log") for name in filenames):
            failed.append(dirpath)
    for path in failed:
        run = _failed_run(path, "log.txt but no results.json (crashed, killed or still running)")
        run.dataset = folder_names.get(run.dataset, run.dataset)
        runs.append(run)
    return sorted(runs, key=lambda r: r.path)


def _failed_run(path: str, why: str) -> Run:
    hint = _from_path(path)
    return Run(
        path=path, method=hint.get("method", "?"), backbone=hint.get("backbone", "?"),
        dataset=hint.get("dataset", "?"), shots=hint.get("shots", -1), seed=hint["seed"],
        task=hint.get("task", "few_shot"), failure=why, label=hint.get("label", ""),
    )


# Variants in the order the ablation builds them up; other labels sort naturally (tau_0.5 < tau_1.25 < tau_none).
LABEL_ORDER = ["ce", "sccm", "kdsp_all", "kdsp_selected", "full"]


def natural_key(text: str) -> tuple:
    """'tau_1.25' -> ('tau_', 1.25): numbers compare as numbers, and come before words ('tau_none')."""
    parts = re.findall(r"\d+(?:\.\d+)?|\D+", text)
    return tuple((0, float(p), "") if p[0].isdigit() else (1, 0.0, p) for p in parts)


def method_sort_key(name: str) -> tuple:
    """Sort key of a row name, "Method" or "Method [label]": the paper's method order, then the variant."""
    method, _, label = name.partition(" [")
    label = label.rstrip("]")
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    variant = (LABEL_ORDER.index(label), ()) if label in LABEL_ORDER else (len(LABEL_ORDER), natural_key(label))
    return (rank, method, bool(label), variant)


# ----- aggregation --------------------------------------------------------------------------------


@dataclass
class Cell:
    """Mean +- population std over seeds of one table cell, with what it is missing."""

    mean: float | None
    std: float | None
    n: int  # seeds that entered the mean
    expected: int  # seeds the grid asks for
    missing: list[str] = field(default_factory=list)  # human-readable descriptions of absent runs
    failed: list[Run] = field(default_factory=list)
    collapsed: list[Run] = field(default_factory=list)
    datasets: int = 1

    @property
    def complete(self) -> bool:
        return not self.missing and not self.failed


def seed_cell(runs: list[Run], seeds: list[int], label: str) -> Cell:
    """One (method, dataset, K) cell: its finished seeds, and which of `seeds` are missing or failed."""
    ok = {r.seed: r for r in runs if r.ok}
    failed = [r for r in runs if not r.ok]
    failed_seeds = {r.seed for r in failed}
    absent = [str(s) for s in seeds if s not in ok and s not in failed_seeds]
    missing = [f"{label}: seed {', '.join(absent)}"] if absent else []
    values = [ok[s].accuracy for s in sorted(ok)]
    return Cell(
        mean=mean(values) if values else None,
        std=pstd(values) if values else None,
        n=len(values),
        expected=len(seeds),
        missing=missing,
        failed=failed,
        collapsed=[r for r in ok.values() if r.collapsed],
    )


def average_cell(per_dataset: dict[str, list[Run]], datasets: list[str], seeds: list[int], label: str) -> Cell:
    """Average over datasets: mean of the per-dataset seed means; std over seeds of the dataset-averaged
    accuracy (seeds every dataset has). A dataset with no finished run is listed as missing."""
    cells = {d: seed_cell(per_dataset.get(d, []), seeds, f"{label} {d}") for d in datasets}
    present = [d for d in datasets if cells[d].n]
    missing = [m for d in datasets for m in cells[d].missing]
    if not present:
        return Cell(None, None, 0, len(seeds), missing, [f for c in cells.values() for f in c.failed], [],
                    datasets=0)
    common = set.intersection(*({r.seed for r in per_dataset[d] if r.ok} for d in present))
    per_seed = []
    for s in sorted(common):
        per_seed.append(mean([next(r.accuracy for r in per_dataset[d] if r.ok and r.seed == s) for d in present]))
    return Cell(
        mean=mean([cells[d].mean for d in present]),
        std=pstd(per_seed) if per_seed else None,
        n=len(common),
        expected=len(seeds),
        missing=missing,
        failed=[f for c in cells.values() for f in c.failed],
        collapsed=[r for c in cells.values() for r in c.collapsed],
        datasets=len(present),
    )


@dataclass
class FewShotGrid:
    """Few-shot runs grouped as (method, backbone) -> K -> dataset -> runs."""

    groups: dict[tuple[str, str], dict[int, dict[str, list[Run]]]]
    datasets: list[str]
    shots: list[int]
    seeds: list[int]


def few_shot_grid(runs: list[Run], seeds: list[int] | None = None) -> FewShotGrid:
    chosen = [r for r in runs if r.task == "few_shot"]
    groups: dict = {}
    for r in chosen:
        k = 0 if r.method in ZERO_SHOT_METHODS else max(r.shots, 0)  # zero-shot does not depend on K
        groups.setdefault((r.row_name, r.backbone), {}).setdefault(k, {}).setdefault(r.dataset, []).append(r)
    return FewShotGrid(
        groups=dict(sorted(groups.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1]))),
        datasets=sorted({r.dataset for r in chosen}),
        shots=sorted({k for g in groups.values() for k in g}),
        seeds=seeds or sorted({r.seed for r in chosen}),
    )


@dataclass
class Base2NewRow:
    method: str
    backbone: str
    dataset: str | None  # None for the average over datasets
    base: Cell
    novel: Cell
    hm: float | None  # per dataset: HM of the seed-mean base and novel; average: HM of the averages
    mean_of_hms: float | None = None  # average row only: mean over datasets of per-dataset HMs
    datasets: int = 1


def base2new_rows(runs: list[Run], seeds: list[int] | None = None) -> tuple[list[Base2NewRow], list[Base2NewRow]]:
    """(per-dataset rows, average rows), one average row per (method, backbone)."""
    chosen = [r for r in runs if r.task in ("base", "new")]
    seeds = seeds or sorted({r.seed for r in chosen})
    groups: dict = {}
    for r in chosen:
        groups.setdefault((r.row_name, r.backbone), {}).setdefault(r.dataset, {"base": [], "new": []})[r.task].append(r)
    per_dataset, averages = [], []
    datasets_all = sorted({r.dataset for r in chosen})
    for (method, backbone), by_ds in sorted(groups.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1])):
        rows = []
        for ds in datasets_all:
            pair = by_ds.get(ds, {"base": [], "new": []})
            label = f"{method}_{backbone} {ds}"
            base = seed_cell(pair["base"], seeds, f"{label} base")
            novel = seed_cell(pair["new"], seeds, f"{label} novel")
            hm = harmonic_mean(base.mean, novel.mean) if base.n and novel.n else None
            rows.append(Base2NewRow(method, backbone, ds, base, novel, hm))
        per_dataset += rows
        label = f"{method}_{backbone}"
        base_avg = average_cell({d: by_ds.get(d, {}).get("base", []) for d in datasets_all}, datasets_all, seeds,
                                f"{label} base")
        novel_avg = average_cell({d: by_ds.get(d, {}).get("new", []) for d in datasets_all}, datasets_all, seeds,
                                 f"{label} novel")
        both = [r for r in rows if r.hm is not None]
        averages.append(Base2NewRow(
            method, backbone, None, base_avg, novel_avg,
            hm=None if None in (base_avg.mean, novel_avg.mean) else harmonic_mean(base_avg.mean, novel_avg.mean),
            mean_of_hms=mean([r.hm for r in both]) if both else None,
            datasets=len(both),
        ))
    return per_dataset, averages


# ----- one setting swept (tau, number of descriptions) ----------------------------------------------

# TAU values from this one up keep every description (scripts/biomedcoop/tau_sweep.sh runs "none" as 1000):
# tables and plots call them "none".
NO_PRUNING_TAU = 1000.0


@dataclass
class SweepPoint:
    """Seeds of one (method, model, dataset, K) at one value of the swept config key."""

    method: str
    backbone: str
    dataset: str
    shots: int
    value: object
    cell: Cell
    also: dict[str, float | None] = field(default_factory=dict)  # mean over seeds of other results.json fields


def value_text(key: str, value) -> str:
    if key.endswith(".TAU") and isinstance(value, (int, float)) and value >= NO_PRUNING_TAU:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_points(runs: list[Run], key: str, also: tuple[str, ...] = (), seeds: list[int] | None = None
                 ) -> list[SweepPoint]:
    """Finished few-shot runs that record config `key`, grouped by its value (sorted numerically;
    "none" TAU last) within each (method and protocol, model, dataset, K); seeds as the tables count them."""
    chosen = [r for r in runs if r.ok and r.task == "few_shot" and key in (r.record.get("config") or {})]
    seeds = seeds or sorted({r.seed for r in chosen})
    groups: dict = {}
    for r in chosen:
        protocol = str(r.record.get("fewshot_protocol") or "balanced")
        method = r.method if protocol == "balanced" else f"{r.method} [{protocol}]"
        value = r.record["config"][key]
        groups.setdefault((method, r.backbone, r.dataset, r.shots), {}).setdefault(_hashable(value), []).append(r)
    points = []
    for (method, backbone, dataset, shots), by_value in sorted(
        groups.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1], kv[0][2], kv[0][3])
    ):
        for value in sorted(by_value, key=value_order):
            group = by_value[value]
            extras = {}
            for name in also:
                numbers = [r.record[name] for r in group if isinstance(r.record.get(name), (int, float))]
                extras[name] = mean(numbers) if numbers else None
            label = f"{method}_{backbone} {dataset} K={shots} {key}={value_text(key, value)}"
            points.append(SweepPoint(method, backbone, dataset, shots, value, seed_cell(group, seeds, label), extras))
    return points


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def value_order(value) -> tuple:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, float(value), "") if numeric else (1, 0.0, str(value))


# ----- cross-dataset transfer -----------------------------------------------------------------------


def transfer_source(run: Run) -> str | None:
    """The dataset a run's weights were trained on: its own for a trained run; for an eval-only run the
    dataset in the results.json of the folder it loaded (None when that folder has no readable one)."""
    if not run.record.get("eval_only"):
        return run.dataset
    folder, _ = evaluated_model(run.path, run.record)
    try:
        with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
            return str(json.load(f).get("dataset") or "") or None
    except (OSError, ValueError):
        return None


def emit_table(build, out: str | None) -> int:
    """A table tool's ending: print or write (atomically) what `build()` returns; exit status 2 when
    the results folder has nothing to tabulate, with the one-line reason."""
    try:
        text = build()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out:
        write_text_atomic(out, text)
        print(f"wrote {os.path.abspath(out)}")
    else:
        sys.stdout.write(text)
    return 0


def write_text_atomic(path: str, text: str) -> None:
    """Write beside `path`, then rename: a reader never sees half a table."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


LOADED_LINE = re.compile(r"^Loading weights to (\S+) from (.+?) \(epoch = .*\)$")


def evaluated_model(run_dir: str, record: dict) -> tuple[str, int | None]:
    """(folder holding <model>/model.pth.tar-<E>, epoch or None) of a run's weights.

    A trained run holds its own checkpoints. An eval-only run holds none: the folder it loaded is in its
    recorded settings ("run.model_dir") or, for older runs, in the "Loading weights" line of its log.
    """
    if not record.get("eval_only"):
        return run_dir, None
    config = record.get("config") or {}
    if config.get("run.model_dir"):
        return config["run.model_dir"], config.get("run.load_epoch")
    log = os.path.join(run_dir, "log.txt")
    if os.path.isfile(log):
        with open(log, encoding="utf-8") as f:
            for line in f:
                match = LOADED_LINE.match(line.strip())
                if match:
                    path = match.group(2)
                    epoch = path.rsplit("-", 1)[-1]
                    return os.path.dirname(os.path.dirname(path)), int(epoch) if epoch.isdigit() else None
    return run_dir, None
