"""The domain-generalisation section of make_tables: in-distribution, out-of-distribution and their HM.

A DG run (engine.runs.RunIdentity protocol "dg", written by scripts/<method>/dg.sh) is an eval-only
run of a model trained on a source benchmark, scored on one of its targets. Its in-distribution (ID)
accuracy is the test accuracy of the very run it loaded (the source's few-shot run of the same seed);
its out-of-distribution (OOD) accuracy is the mean over the targets. Per seed: ID_s, OOD_s (the mean
over targets of that seed) and HM_s = 2 ID_s OOD_s / (ID_s + OOD_s); each column is the mean ± the
population std over seeds, as every other table here. OOD's mean is the mean of the per-target seed
means (results.aggregate.average_cell), and HM's is the mean of the per-seed HMs of seeds with both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.run_weights import evaluated_model
from engine.runs import read_record
from results.aggregate import Cell, average_cell, harmonic_mean, mean, method_sort_key, pstd, seed_cell, seeds_of
from results.records import Run, run_from_record, trial_tag
from results.tables import Table, cell_text


@dataclass
class DGRow:
    """One (row name, model, K, source): its ID, OOD and HM cells and one cell per target."""

    method: str
    backbone: str
    shots: int
    source: str
    id: Cell
    ood: Cell
    hm: Cell
    targets: dict[str, Cell]


def row_name(run: Run) -> str:
    """The method with its variant, less the "from_<source>" label dg.sh gives every target run."""
    label = run.identity.label
    if label.startswith("from_"):
        label = ""
    elif "_from_" in label:
        label = label[: label.rindex("_from_")]
    variant = "_".join(p for p in (run.identity.fewshot_protocol if run.identity.fewshot_protocol != "balanced"
                                   else "", label) if p)
    tags = [t for t in (variant, trial_tag(run), run.setting) if t]
    return f"{run.method} [{', '.join(tags)}]" if tags else run.method


def source_run(run: Run, by_path: dict[str, Run]) -> Run | None:
    """The source run a DG run loaded: from the scanned runs, else read from its folder."""
    folder, _ = evaluated_model(run.path, run.record)
    folder = os.path.normpath(os.path.abspath(folder))
    if folder in by_path:
        return by_path[folder]
    record, _ = read_record(folder)
    return run_from_record(folder, record) if record is not None else None


def hm_cell(id_runs: dict[int, Run], ood_runs: dict[str, dict[int, Run]], seeds: list[int], label: str = "") -> Cell:
    """Mean ± std over seeds of the per-seed HM of ID and the mean over targets (seeds with all of them)."""
    both = [s for s in seeds if s in id_runs and all(s in by_seed for by_seed in ood_runs.values())]
    values = [harmonic_mean(id_runs[s].accuracy, mean([by_seed[s].accuracy for by_seed in ood_runs.values()]))
              for s in both]
    absent = [str(s) for s in seeds if s not in both]
    return Cell(mean(values) if values else None, pstd(values) if values else None, len(values), len(seeds),
                missing=[f"{label} HM: seed {', '.join(absent)} lacks the source run or a target".lstrip()]
                if absent else [])


def dg_rows(runs: list[Run], seeds: list[int] | None = None) -> list[DGRow]:
    """One row per (row name, model, K, source) of the DG runs among `runs`, sorted as the other tables."""
    by_path = {os.path.normpath(os.path.abspath(r.path)): r for r in runs}
    groups: dict[tuple, list[Run]] = {}
    source_targets: dict[str, set[str]] = {}  # every target any row of a source was tested on
    for run in runs:
        if run.task == "dg":
            groups.setdefault((row_name(run), run.backbone, run.shots, run.identity.task), []).append(run)
            source_targets.setdefault(run.identity.task, set()).add(run.dataset)
    rows = []
    for (name, backbone, shots, source), group in sorted(
        groups.items(), key=lambda kv: (kv[0][3], method_sort_key(kv[0][0]), kv[0][1], kv[0][2])
    ):
        grid = list(seeds) if seeds else seeds_of(group)
        per_target: dict[str, list[Run]] = {}
        for run in group:
            per_target.setdefault(run.dataset, []).append(run)
        targets = sorted(per_target)
        # OOD and HM over the table's targets: a row run on fewer (TARGETS=...) is incomplete, not averaged
        # over a subset of its own
        all_targets = sorted(source_targets[source])
        label = f"{name}_{backbone} K={shots} {source}"
        sources = {r.path: source_run(r, by_path) for r in group if r.ok}
        id_runs: dict[int, Run] = {}
        for run in sorted(group, key=lambda r: r.path):
            found = sources.get(run.path)
            if found is not None and found.ok:
                id_runs.setdefault(run.seed, found)
        id_cell = seed_cell(list(id_runs.values()), grid, f"{label} in-distribution")
        ood = average_cell(per_target, all_targets, grid, f"{label} target")
        firsts = {t: {r.seed: r for r in sorted(per_target.get(t, []), key=lambda r: r.path) if r.ok}
                  for t in all_targets}
        rows.append(DGRow(name, backbone, shots, source, id_cell, ood, hm_cell(id_runs, firsts, grid, label),
                          {t: seed_cell(per_target[t], grid, f"{label} {t}") for t in targets}))
    return rows


def dg_tables(builder) -> list[Table]:
    """One table per source for results.tables.Builder: ID, OOD, HM, then one column per target."""
    rows = dg_rows(builder.runs, builder.seeds)
    tables = []
    for source in sorted({r.source for r in rows}):
        chosen = [r for r in rows if r.source == source]
        targets = sorted({t for r in chosen for t in r.targets})
        body = []
        for r in chosen:
            cells = [r.id, r.ood, r.hm] + [r.targets.get(t) for t in targets]
            for cell in cells:
                if cell is not None:
                    builder.note(cell)
            body.append([r.method, r.backbone, r.shots] + [cell_text(c) if c else "-" for c in cells])
            for metric, cell in (("in_distribution", r.id), ("out_of_distribution", r.ood), ("hm", r.hm)):
                builder.csv_row(f"dg from {source}", r.method, r.backbone, source if metric == "in_distribution"
                                else "targets", r.shots, metric, cell)
            for target, cell in r.targets.items():
                builder.csv_row(f"dg from {source}", r.method, r.backbone, target, r.shots, "accuracy", cell)
        tables.append(Table(
            f"Domain generalisation from {source} (%): trained on {source}, tested on {len(targets)} target(s) "
            "without retraining; mean ± std over seeds (n seeds)",
            ["Method", "Model", "K", f"ID ({source})", f"OOD (mean of {len(targets)})", "HM"] + targets, body,
        ))
    return tables
