"""Applying a finished run to new images: the run rebuilt from its record, its checkpoint loaded through
the trainer's own load path, each image through the test transform (tools/predict.py is the command).

The caller imports the packages that register methods, model families and datasets (backbones,
datasets, trainers) first, as train.py does; this module stays below them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

# Formats PIL reads; wider than the split reader's list, since these images are only classified.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")


class PredictError(Exception):
    """A problem with the run folder or the arguments: printed as one `error:` line."""


def find_images(paths: list[str]) -> list[str]:
    """Files as given; folders expanded recursively to their image files, sorted."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            found.append(path)  # a missing or unreadable file gets its own error row
    return found


def read_run_record(run_dir: str) -> dict:
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise PredictError(f"{path} not found: give a finished seed folder (…/seed<S>/) as --run-dir")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise PredictError(f"{path} cannot be read ({err})") from err
    if not isinstance(record.get("config"), dict):
        record["config"] = config_from_log(run_dir)
    if not record["config"]:
        raise PredictError(f"neither {path} nor log.txt records the run's settings; rerun it with train.py to "
                           "predict with it")
    return record


def config_from_log(run_dir: str) -> dict:
    """Dotted keys from the config dump that train.py writes at the top of log.txt (older runs)."""
    import yaml

    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return {}
    lines, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() == "** Config **":
                inside, lines = True, []
            elif inside:
                if not (line.startswith(" ") or re.match(r"^[A-Z0-9_]+:", line)):
                    inside = False
                else:
                    lines.append(line)
    try:
        tree = yaml.safe_load("".join(lines)) or {}
    except yaml.YAMLError:
        return {}

    def flatten(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flatten(tree) if isinstance(tree, dict) else {}


def build_run_config(record: dict, root: str | None = None):
    """The run's config: defaults, then every recorded key that this version still knows."""
    from engine.config import get_cfg_default, merge_from_list

    cfg = get_cfg_default()
    opts = []
    for key, value in record["config"].items():
        node, parts = cfg, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys") or parts[-1] not in node or hasattr(node[parts[-1]], "keys"):
            continue  # run options ("run.*") and keys of other versions
        opts += [key, tuple(value) if isinstance(value, list) else value]
    merge_from_list(cfg, opts)
    if root:
        cfg.DATASET.ROOT = root
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = ""
    cfg.freeze()
    return cfg


class Predictor:
    """A trained run, rebuilt, that turns image files into class probabilities. Its checkpoint goes through
    TrainerX.load_model, the path train.py --eval-only takes, with the same checks."""

    def __init__(self, run_dir: str, root: str | None = None, epoch: int | None = None):
        from engine.hub import is_hub_ref, local_run
        from engine.trainer import build_trainer

        run_dir = local_run(run_dir) if is_hub_ref(run_dir) else run_dir  # a pushed run: hf-hub:ORG/NAME[/SUB]
        record = read_run_record(run_dir)
        cfg = build_run_config(record, root)
        self.trainer = build_trainer(cfg)
        if self.trainer.get_model_names():  # zero-shot methods have nothing to load
            from engine.run_weights import evaluated_model

            model_dir, tested_epoch = evaluated_model(run_dir, record)
            model_dir = local_run(model_dir) if is_hub_ref(model_dir) else model_dir  # evaluated a pushed run
            self.trainer.load_model(model_dir, epoch=epoch if epoch is not None else tested_epoch)
        self.trainer.set_model_mode("eval")
        self.classnames = list(self.trainer.classnames)
        self.transform = self.trainer.dm.tfm_test

    def probabilities(self, images):
        """Softmax of the run's test-time logits for a list of PIL images, shape (N, classes)."""
        import torch

        batch = torch.stack([self.transform(img) for img in images]).to(self.trainer.device)
        with torch.no_grad():
            logits = self.trainer.model_inference(self.trainer.image_features({"img": batch}))
        return torch.softmax(logits.float(), dim=1).cpu()

    def predict(self, paths: list[str], batch_size: int = 32) -> list[dict]:
        from engine.data import read_image
        from engine.errors import UserError

        rows: list[dict] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images, ok = [], []
            for path in chunk:
                try:
                    images.append(read_image(path))
                    ok.append(path)
                except UserError as err:
                    rows.append({"image": path, "error": f"cannot read {path}: {err.__cause__ or err}"})
            if images:
                for path, probs in zip(ok, self.probabilities(images)):
                    top = int(probs.argmax())
                    row = {"image": path, "top1": self.classnames[top], "top1_probability": float(probs[top])}
                    row.update({f"p({name})": float(p) for name, p in zip(self.classnames, probs)})
                    rows.append(row)
        order = {p: i for i, p in enumerate(paths)}
        return sorted(rows, key=lambda r: order[r["image"]])


def to_csv(rows: list[dict], classnames: list[str]) -> str:
    fields = ["image", "top1", "top1_probability"] + [f"p({c})" for c in classnames] + ["error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()
