"""Read a tree of run folders into records, each named by its engine.runs.RunIdentity.

A run folder is any `seed<S>/` folder. It counts as finished when it holds a results.json object; one
with a log but no usable results.json is not (failed, interrupted with its resume state, or still
running: engine.runs.run_status says which), so a table never quietly averages over fewer seeds than
its grid has. Light on purpose (json, os, re): the
tools' --help answers at once.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace

from engine.run_weights import evaluated_model
from engine.runs import FAILED, INTERRUPTED, RESUME_FILE, RUNNING, RunIdentity, read_record, run_status, split_method

SEED_DIR = re.compile(r"^seed(\d+)$")
SHOTS_DIR = re.compile(r"^shots_(-?\d+)$")
CONFIG_TAG = "nctx4_cscFalse_ctpend"


@dataclass
class Run:
    """One seed folder: a finished run (accuracy set) or a failed one (failure set)."""

    path: str
    identity: RunIdentity
    seed: int
    accuracy: float | None = None
    failure: str | None = None
    collapsed: bool = False
    record: dict = field(default_factory=dict, repr=False)
    setting: str = ""  # "KEY=VALUE, ..." when its cell holds runs of other settings (results.aggregate)
    state: str = ""  # without a usable record: failed, interrupted or running (engine.runs.run_status)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.accuracy is not None

    @property
    def config(self) -> dict:
        config = self.record.get("config")
        return config if isinstance(config, dict) else {}

    method = property(lambda self: self.identity.method)
    backbone = property(lambda self: self.identity.model)
    dataset = property(lambda self: self.identity.dataset)
    shots = property(lambda self: self.identity.shots)
    label = property(lambda self: self.identity.variant)  # protocol unless balanced, then the run label

    @property
    def task(self) -> str:
        """few_shot, base, new (the two halves of base-to-novel), transfer or dg."""
        ident = self.identity
        return ident.task if ident.protocol == "base2new" else ident.protocol

    @property
    def row_name(self) -> str:
        """What a table row is keyed on: the method, with its variant and, when its cell also holds runs
        of other settings, the keys that differ: "BiomedCoOp [ce]", "CoOp [OPTIM.MAX_EPOCH=200]"."""
        tags = [t for t in (self.label, trial_tag(self), self.setting) if t]
        return f"{self.method} [{', '.join(tags)}]" if tags else self.method


def trial_tag(run: Run) -> str:
    """"trial" for a run shortened by TRAIN.TRIAL_EPOCHS, so its numbers never sit in a row of full runs
    (unless the row's settings tag already names that key)."""
    trial = run.config.get("TRAIN.TRIAL_EPOCHS")
    is_trial = isinstance(trial, int) and not isinstance(trial, bool) and trial > 0
    return "trial" if is_trial and "TRAIN.TRIAL_EPOCHS=" not in run.setting else ""


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
    return RunIdentity.from_record(record).variant


def folder_hint(path: str) -> dict:
    """What the scripts' folder layout says about a run (for runs that wrote no results.json):
    .../<dataset>/shots_<K>/<Method>_<Model>[-random]/<config tag>[_<variant>]/seed<S>."""
    parts = os.path.normpath(path).split(os.sep)
    info: dict = {"seed": int(SEED_DIR.match(parts[-1]).group(1))}
    if len(parts) >= 5 and SHOTS_DIR.match(parts[-4]):
        info["shots"] = int(SHOTS_DIR.match(parts[-4]).group(1))
        info["dataset"] = parts[-5]
        trainer = parts[-3]
        method = split_method(trainer)  # the model label may hold '_' (a generic family's hub id)
        info["method"] = method
        info["model"] = trainer[len(method) + 1:] or "?"
        tag = parts[-2]
        variant = tag[len(CONFIG_TAG) + 1:] if tag.startswith(CONFIG_TAG + "_") else ""
        if variant == "imbalanced" or variant.startswith("imbalanced_"):  # scripts/common.sh run_tag
            info["fewshot_protocol"], variant = "imbalanced", variant[len("imbalanced_"):]
        info["label"] = variant
    if "train_base" in parts or "test_base" in parts:
        info["task"] = "base"
    elif "test_new" in parts:
        info["task"] = "new"
    return info


def weights_source(run_dir: str, record: dict) -> str | None:
    """The dataset a run's weights were trained on: its own for a trained run; for an eval-only run the
    dataset in the results.json of the folder it loaded (None when that folder has no readable one)."""
    if not record.get("eval_only"):
        return str(record.get("dataset") or "") or None
    folder, _ = evaluated_model(run_dir, record)
    loaded, _ = read_record(folder)
    return str(loaded.get("dataset") or "") or None if loaded else None


def transfer_source(run: Run) -> str | None:
    return weights_source(run.path, run.record)


def run_from_record(path: str, record: dict) -> Run:
    hint = folder_hint(path)
    identity = RunIdentity.from_record(record, source=weights_source(path, record), hint=hint)
    accuracy = record.get("accuracy")
    failure = None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        failure, accuracy = f"results.json has no finite accuracy ({accuracy!r})", None
    seed = record.get("seed", hint["seed"])
    return Run(
        path=path, identity=identity, seed=int(seed) if isinstance(seed, int) else hint["seed"],
        accuracy=None if accuracy is None else float(accuracy), failure=failure,
        collapsed=is_collapsed(record) if failure is None else False, record=record,
    )


def failed_run(path: str, why: str, like: Run | None = None, state: str = FAILED) -> Run:
    """A run without a usable record (`state`: failed, interrupted or running). `like`: a finished run
    of the same folder (another seed), whose identity it takes, so the failure lands in the same row;
    else the folder layout names it."""
    if like is not None:  # its settings too, so that it joins the sibling's row when settings split rows
        return Run(path=path, identity=like.identity, seed=folder_hint(path)["seed"], failure=why,
                   record={"config": like.config}, state=state)
    hint = folder_hint(path)
    return Run(path=path, identity=RunIdentity.from_record({}, hint=hint), seed=hint["seed"], failure=why,
               state=state)


def scan(root: str) -> list[Run]:
    """Every seed folder under `root` (finished or failed), sorted by path."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder (give the OUTPUT_ROOT of your runs)")
    runs: list[Run] = []
    folder_names: dict[str, str] = {}  # dataset folder name -> the dataset's name in results.json
    failed: list[tuple[str, str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not SEED_DIR.match(os.path.basename(dirpath)):
            continue
        dirnames[:] = []  # nothing of interest below a seed folder
        record, why = read_record(dirpath)
        if record is not None:
            run = run_from_record(dirpath, record)
            runs.append(run)
            if "dataset" in folder_hint(dirpath):
                folder_names[folder_hint(dirpath)["dataset"]] = run.dataset
        elif why:
            failed.append((dirpath, f"results.json {why}", FAILED))
        elif RESUME_FILE in filenames or any(name.startswith("log") for name in filenames):
            status = run_status(dirpath)  # interrupted (resumable), running, or failed
            state = status.state if status.state in (INTERRUPTED, RUNNING) else FAILED
            failed.append((dirpath, status.reason or "log.txt but no results.json (crashed or killed)", state))
    siblings = {os.path.dirname(r.path): r for r in runs}
    for path, why, state in failed:
        run = failed_run(path, why, siblings.get(os.path.dirname(path)), state)
        if os.path.dirname(path) not in siblings:
            run.identity = replace(run.identity, dataset=folder_names.get(run.dataset, run.dataset))
        runs.append(run)
    return sorted(runs, key=lambda r: r.path)
