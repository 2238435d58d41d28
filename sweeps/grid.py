"""The grid a sweep runs (methods x datasets x shots x seeds x models), from a YAML file and options.

protocol: few_shot (scripts/<method>/few_shot.sh), base2new (base2new.sh) or dg (dg.sh: the few-shot
run on each dataset as the source, then its model scored on the source's domain-generalisation targets).
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
import re

from engine.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def method_scripts() -> dict[str, tuple[str, dict[str, str]]]:
    """Method -> (script folder, environment that selects it), read from scripts/*/few_shot.sh: a
    method's script calls `few_shot <Method> ...`, or sets METHOD (a variant switched on by VAR=1,
    as ZeroShotEnsemble by ENSEMBLE=1) and calls `few_shot "$METHOD"`. A new method's scripts make
    it sweepable without an edit here."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for script in sorted(glob.glob(os.path.join(REPO, "scripts", "*", "few_shot.sh"))):
        folder = os.path.basename(os.path.dirname(script))
        with open(script, encoding="utf-8") as f:
            text = f.read()
        for method in re.findall(r"^\s*few_shot (\w+) ", text, flags=re.M):
            found.setdefault(method, (folder, {}))
        if re.search(r'^\s*few_shot "\$METHOD" ', text, flags=re.M):
            for method in re.findall(r"(?:^|;)\s*METHOD=(\w+)", text, flags=re.M):
                found.setdefault(method, (folder, {}))
            for var, method in re.findall(r'if \[ "\$\{(\w+):-0\}" = 1 \]; then METHOD=(\w+)', text):
                found[method] = (folder, {var: "1"})
    return found


GRID_KEYS = ("methods", "datasets", "shots", "seeds", "models", "protocol", "root", "output_root", "extra_opts")
LIST_KEYS = ("methods", "datasets", "shots", "seeds", "models")
INT_KEYS = ("shots", "seeds")
PROTOCOLS = ("few_shot", "base2new", "dg")
# What --quick adds to every run: the one key that shortens every method (engine.config.epoch_budget).
QUICK_OPTS = "TRAIN.TRIAL_EPOCHS 1"


def read_grid_file(path: str) -> dict:
    """The grid file's keys, or a UserError naming the file and what is wrong with it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            grid = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read the grid file {path}: {err}") from err
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise UserError(f"{path}: a grid file is a YAML mapping (methods: [...], datasets: [...], ...), "
                        f"not a {type(grid).__name__}")
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)}; a grid file may hold {', '.join(GRID_KEYS)}")
    return grid


def as_list(key: str, value, where: str) -> list:
    """A list key's values; one scalar (`shots: 1`, `methods: CoOp`) is a one-element list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if key in INT_KEYS:
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise UserError(f"{where}: {key} are whole numbers; got {bad[0]!r}")
    else:
        bad = [v for v in values if not isinstance(v, str) or not v.strip()]
        if bad:
            raise UserError(f"{where}: {key} are names; got {bad[0]!r}")
    return values


def unknown_name(kind: str, name: str, valid: list[str]) -> UserError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint}; valid: {' '.join(sorted(valid))}")


def check_names(grid: dict) -> None:
    """Methods and models must exist before a single script runs: one line each, with the valid names."""
    import backbones  # noqa: F401  (registers the model families)
    from engine.registry import BACKBONE_REGISTRY

    methods = method_scripts()
    for method in grid["methods"]:
        if method not in methods:
            raise unknown_name("method", method, list(methods))
    models = BACKBONE_REGISTRY.registered_names()
    for model in grid["models"]:
        if model not in models:
            raise unknown_name("model", model, models)


def check_dg_sources(datasets: list[str], where: str) -> None:
    """A dg grid's datasets are the sources: each must have targets (datasets/benchmarks.py DG_SOURCE)."""
    from datasets.benchmarks import DG_SOURCE, dg_targets, spec_for

    sources = sorted({spec_for(s).config for s in DG_SOURCE.values()})
    for dataset in datasets:
        if not dg_targets(dataset):
            raise UserError(f"{where}: datasets: {dataset!r} has no domain-generalisation targets, so protocol dg "
                            f"cannot run it; valid sources: {' '.join(sources)} (docs/domain_generalization.md)")


def build_grid(file_grid: dict, options: dict, where: str = "the grid") -> dict:
    """The grid: the file's keys, then the options that are set (they win), then the defaults."""
    grid = dict(file_grid)
    grid.update({k: v for k, v in options.items() if k in GRID_KEYS and v is not None})
    for key in LIST_KEYS:
        if key in grid and grid[key] is not None:
            grid[key] = as_list(key, grid[key], where)
    grid.setdefault("protocol", "few_shot")
    grid.setdefault("seeds", [1, 2, 3])
    grid.setdefault("shots", [16])
    grid.setdefault("output_root", "output")
    grid["extra_opts"] = str(grid.get("extra_opts") or "")
    missing = [k for k in ("methods", "datasets", "models", "root") if not grid.get(k)]
    if missing:
        raise UserError(f"the grid needs {', '.join('--' + k for k in missing)} (or a --grid file naming them)")
    if grid["protocol"] not in PROTOCOLS:
        raise UserError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, not {grid['protocol']!r}")
    if grid["protocol"] == "dg":
        check_dg_sources(grid["datasets"], where)
    check_names(grid)
    grid["output_root"] = os.path.abspath(str(grid["output_root"]))
    grid["root"] = os.path.abspath(str(grid["root"]))
    return grid


def with_quick(grid: dict) -> dict:
    """The grid as a trial run: every run shortened by TRAIN.TRIAL_EPOCHS (after the user's options)."""
    return {**grid, "extra_opts": f"{grid['extra_opts']} {QUICK_OPTS}".strip()}
