"""Seeds into cells, cells into rows: the aggregation every table, figure and report shares.

Runs are grouped through their engine.runs.RunIdentity. Two configurations never share a cell: when
one cell (same protocol, method, label, model, dataset, task, K) holds runs made with different
settings, `split_settings` names each run's row by the keys that differ ("CoOp [OPTIM.MAX_EPOCH=200]").
Within a row, a seed seen twice is reported (`Cell.duplicates`), never overwritten. Pure functions
returning data; rendering lives in results.tables, results.plots and the tools.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from engine.runs import number_settings, setting_differences
from results.paper import METHOD_ORDER, ZERO_SHOT_METHODS
from results.records import Run


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pstd(values: list[float]) -> float:
    """Population std (numpy's default), as the reference's result parser prints it."""
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


# ----- order of rows ------------------------------------------------------------------------------

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


# ----- settings and seeds -------------------------------------------------------------------------


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    return str(value)


def settings_tag(run: Run, keys) -> str:
    """'KEY=VALUE, ...' of `run`'s own values of `keys` ('?' where it records none)."""
    return ", ".join(f"{k}={_value_text(run.config.get(k, '?'))}" for k in sorted(keys))


def settings_clusters(runs: list[Run], ignore: frozenset = frozenset()) -> list[list[Run]]:
    """Runs grouped by settings, first come first served: a run joins the first group whose first run
    has no number-changing key (besides `ignore`) with another value. Keys only one side records
    (added by a later version) do not count, as in engine.runs.run_status."""
    groups: list[tuple[dict, list[Run]]] = []
    for run in runs:
        settings = {k: v for k, v in number_settings(run.config).items() if k not in ignore}
        for first, members in groups:
            if not setting_differences(first, settings):
                members.append(run)
                break
        else:
            groups.append((settings, [run]))
    return [members for _, members in groups]


def differing_keys(clusters: list[list[Run]], ignore: frozenset = frozenset()) -> set[str]:
    """Number-changing keys whose values differ between the first runs of `clusters`."""
    firsts = [{k: v for k, v in number_settings(c[0].config).items() if k not in ignore} for c in clusters]
    return {k for i, a in enumerate(firsts) for b in firsts[i + 1:] for k in setting_differences(a, b)}


def split_settings(runs: list[Run]) -> list[str]:
    """Name the rows of runs whose cells mix settings; returns one note per row that was split.

    For every row (protocol, method, label, model, few-shot protocol), the keys that differ inside any
    of its cells are collected; each of the row's runs is then tagged with its own values of those
    keys (`Run.setting`), so the same configuration on other datasets and K lands in the same row.
    """
    rows: dict[tuple, dict[tuple, list[Run]]] = {}
    for run in runs:
        ident = run.identity
        row = (ident.protocol, ident.method, ident.label, ident.model, ident.fewshot_protocol)
        rows.setdefault(row, {}).setdefault(ident.cell, []).append(run)
    notes = []
    for row, cells in rows.items():
        keys: set[str] = set()
        for cell_runs in cells.values():
            clusters = settings_clusters(cell_runs)
            if len(clusters) > 1:
                keys |= differing_keys(clusters)
        if not keys:
            continue
        for cell_runs in cells.values():
            for run in cell_runs:
                run.setting = settings_tag(run, keys)
        notes.append(f"{row[1]} ({row[3]}) was run with different settings in one cell; its rows are split "
                     f"by {', '.join(sorted(keys))}")
    return notes


def select_seeds(runs: list[Run], seeds: list[int] | None) -> tuple[list[Run], list[Run]]:
    """(runs of the given seeds, the others); with no seeds every run is kept."""
    if not seeds:
        return list(runs), []
    wanted = set(seeds)
    return [r for r in runs if r.seed in wanted], [r for r in runs if r.seed not in wanted]


def seeds_of(runs: list[Run]) -> list[int]:
    """The seed grid of a row: every seed found for it, finished or failed."""
    return sorted({r.seed for r in runs})


# ----- cells --------------------------------------------------------------------------------------


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
    duplicates: list[tuple[Run, Run]] = field(default_factory=list)  # (run used, run of the same seed left out)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.failed


def first_per_seed(runs: list[Run]) -> tuple[dict[int, Run], list[tuple[Run, Run]]]:
    """{seed: the finished run of that seed first by path}, and every other finished run of a seed
    already taken (a duplicate: two folders holding the same run)."""
    ok: dict[int, Run] = {}
    duplicates = []
    for run in sorted((r for r in runs if r.ok), key=lambda r: r.path):
        if run.seed in ok:
            duplicates.append((ok[run.seed], run))
        else:
            ok[run.seed] = run
    return ok, duplicates


def seed_cell(runs: list[Run], seeds: list[int], label: str) -> Cell:
    """One (row, dataset, K) cell: its finished seeds, and which of `seeds` are missing or failed."""
    ok, duplicates = first_per_seed(runs)
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
        duplicates=duplicates,
    )


def average_cell(per_dataset: dict[str, list[Run]], datasets: list[str], seeds: list[int], label: str,
                 suffix: str = "") -> Cell:
    """Average over datasets: mean of the per-dataset seed means; std over seeds of the dataset-averaged
    accuracy (seeds every dataset has). A dataset with no finished run is listed as missing, named
    "<label> <dataset><suffix>" as its per-dataset cell names it (so the notes list it once)."""
    cells = {d: seed_cell(per_dataset.get(d, []), seeds, f"{label} {d}{suffix}") for d in datasets}
    present = [d for d in datasets if cells[d].n]
    missing = [m for d in datasets for m in cells[d].missing]
    failed = [f for c in cells.values() for f in c.failed]
    duplicates = [x for c in cells.values() for x in c.duplicates]
    if not present:
        return Cell(None, None, 0, len(seeds), missing, failed, [], datasets=0, duplicates=duplicates)
    firsts = {d: first_per_seed(per_dataset[d])[0] for d in present}
    common = set.intersection(*(set(firsts[d]) for d in present))
    per_seed = [mean([firsts[d][s].accuracy for d in present]) for s in sorted(common)]
    return Cell(
        mean=mean([cells[d].mean for d in present]),
        std=pstd(per_seed) if per_seed else None,
        n=len(common),
        expected=len(seeds),
        missing=missing,
        failed=failed,
        collapsed=[r for c in cells.values() for r in c.collapsed],
        datasets=len(present),
        duplicates=duplicates,
    )


# ----- few-shot -----------------------------------------------------------------------------------


@dataclass
class FewShotGrid:
    """Few-shot runs grouped as (row name, model) -> K -> dataset -> runs, with each row's seed grid."""

    groups: dict[tuple[str, str], dict[int, dict[str, list[Run]]]]
    datasets: list[str]
    shots: list[int]
    row_seeds: dict[tuple[str, str], list[int]]

    def seeds(self, key: tuple[str, str]) -> list[int]:
        return self.row_seeds[key]


def table_k(run: Run) -> int:
    """The K column of a run: zero-shot methods do not depend on K and share one column, 0."""
    return 0 if run.method in ZERO_SHOT_METHODS else max(run.shots, 0)


def few_shot_grid(runs: list[Run], seeds: list[int] | None = None) -> FewShotGrid:
    """`runs` already through `split_settings` (and `select_seeds`); `seeds` fixes every row's grid,
    else each row's grid is the seeds found for it."""
    chosen = [r for r in runs if r.task == "few_shot"]
    groups: dict = {}
    for r in chosen:
        groups.setdefault((r.row_name, r.backbone), {}).setdefault(table_k(r), {}).setdefault(r.dataset, []).append(r)
    row_seeds = {key: list(seeds) if seeds else seeds_of([r for by_ds in by_k.values() for rs in by_ds.values()
                                                          for r in rs])
                 for key, by_k in groups.items()}
    return FewShotGrid(
        groups=dict(sorted(groups.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1]))),
        datasets=sorted({r.dataset for r in chosen}),
        shots=sorted({k for g in groups.values() for k in g}),
        row_seeds=row_seeds,
    )


# ----- base-to-novel ------------------------------------------------------------------------------


@dataclass
class Base2NewRow:
    method: str  # row name: the method with its variant
    backbone: str
    shots: int
    dataset: str | None  # None for the average over datasets
    base: Cell
    novel: Cell
    hm: float | None  # per dataset: HM of the seed-mean base and novel; average: HM of the averages
    mean_of_hms: float | None = None  # average row only: mean over datasets of per-dataset HMs
    datasets: int = 1


def base2new_rows(runs: list[Run], seeds: list[int] | None = None) -> tuple[list[Base2NewRow], list[Base2NewRow]]:
    """(per-dataset rows, average rows), one average row per (row name, model, K)."""
    chosen = [r for r in runs if r.task in ("base", "new")]
    groups: dict = {}
    for r in chosen:
        key = (r.row_name, r.backbone, r.shots)
        groups.setdefault(key, {}).setdefault(r.dataset, {"base": [], "new": []})[r.task].append(r)
    per_dataset, averages = [], []
    datasets_all = sorted({r.dataset for r in chosen})
    for (method, backbone, shots), by_ds in sorted(groups.items(),
                                                   key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1], kv[0][2])):
        grid = list(seeds) if seeds else seeds_of([r for pair in by_ds.values() for rs in pair.values() for r in rs])
        rows = []
        for ds in datasets_all:
            pair = by_ds.get(ds, {"base": [], "new": []})
            label = f"{method}_{backbone} K={shots} {ds}"
            base = seed_cell(pair["base"], grid, f"{label} base")
            novel = seed_cell(pair["new"], grid, f"{label} novel")
            hm = harmonic_mean(base.mean, novel.mean) if base.n and novel.n else None
            rows.append(Base2NewRow(method, backbone, shots, ds, base, novel, hm))
        per_dataset += rows
        label = f"{method}_{backbone} K={shots}"
        base_avg = average_cell({d: by_ds.get(d, {}).get("base", []) for d in datasets_all}, datasets_all, grid,
                                label, " base")
        novel_avg = average_cell({d: by_ds.get(d, {}).get("new", []) for d in datasets_all}, datasets_all, grid,
                                 label, " novel")
        both = [r for r in rows if r.hm is not None]
        averages.append(Base2NewRow(
            method, backbone, shots, None, base_avg, novel_avg,
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
    """Seeds of one series (method and settings but `key`, model, dataset, K) at one value of `key`."""

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


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def value_order(value) -> tuple:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, float(value), "") if numeric else (1, 0.0, str(value))


def _series_names(method: str, clusters: list[list[Run]], key: str) -> list[str]:
    """One name per series of one (method, model, dataset, K): the method alone when there is one
    series; else each series' run label when every series has one label of its own; else the keys
    (other than `key`) whose values tell the series apart."""
    if len(clusters) == 1:
        return [method]
    labels = [{r.identity.label for r in c} for c in clusters]
    if all(len(s) == 1 and "" not in s for s in labels) and len({next(iter(s)) for s in labels}) == len(labels):
        return [f"{method} [{next(iter(s))}]" for s in labels]
    keys = differing_keys(clusters, frozenset({key}))
    return [f"{method} [{settings_tag(c[0], keys)}]" for c in clusters]


def sweep_points(runs: list[Run], key: str, also: tuple[str, ...] = (), seeds: list[int] | None = None
                 ) -> list[SweepPoint]:
    """Finished few-shot runs that record config `key`, grouped by its value (sorted numerically; "none"
    TAU last) within each series: runs of one method, few-shot protocol, model, dataset and K whose
    other settings agree, so that an ablation row that shares one value of `key` with a sweep is a
    series of its own. Each series' seed grid is its own seeds unless `seeds` is given."""
    chosen = [r for r in runs if r.ok and r.task == "few_shot" and key in r.config]
    groups: dict = {}
    for r in chosen:
        protocol = r.identity.fewshot_protocol
        method = r.method if protocol == "balanced" else f"{r.method} [{protocol}]"
        groups.setdefault((method, r.backbone, r.dataset, r.shots), []).append(r)
    points = []
    for (method, backbone, dataset, shots), group in sorted(
        groups.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1], kv[0][2], kv[0][3])
    ):
        clusters = settings_clusters(group, frozenset({key}))
        for name, cluster in sorted(zip(_series_names(method, clusters, key), clusters),
                                    key=lambda nc: method_sort_key(nc[0])):
            grid = list(seeds) if seeds else seeds_of(cluster)
            by_value: dict = {}
            for r in cluster:
                by_value.setdefault(_hashable(r.config[key]), []).append(r)
            for value in sorted(by_value, key=value_order):
                members = by_value[value]
                extras = {}
                for field_name in also:
                    numbers = [r.record[field_name] for r in members
                               if isinstance(r.record.get(field_name), (int, float))]
                    extras[field_name] = mean(numbers) if numbers else None
                label = f"{name}_{backbone} {dataset} K={shots} {key}={value_text(key, value)}"
                points.append(SweepPoint(name, backbone, dataset, shots, value, seed_cell(members, grid, label),
                                         extras))
    return points
