"""From-scratch runs beside the released checkpoints' evaluations and the paper's averages: one row per
dataset, K and seed (base-to-novel: per class half), then averages over the datasets both sides have.
`report_rows` returns the rows (data); `render` turns them into text."""

from __future__ import annotations

import csv
import io

from results.aggregate import mean
from results.paper import PAPER_BASE2NEW_DATASETS, PAPER_FEWSHOT_DATASETS, paper_base2new, paper_fewshot
from results.records import scan

FIELDS = ["task", "dataset", "shots", "seed", "model", "ours", "released", "ours_minus_released", "paper",
          "ours_minus_paper", "released_minus_paper", "datasets", "flag"]


def _index(root: str, method: str) -> tuple[dict, set]:
    """({(task, dataset, shots, seed, model) -> accuracy} of finished runs of `method`, keys seen twice).

    The model column carries a run's variant ("BiomedCLIP [ce]"), so an ablation row never stands in
    for the plain method; a key seen twice keeps its first run (by path) and is flagged."""
    out, twice = {}, set()
    for run in sorted(scan(root), key=lambda r: r.path):
        if run.method == method and run.ok and run.task in ("few_shot", "base", "new"):
            shots = run.shots if run.task == "few_shot" else "-"  # base-to-novel pairs match whatever K
            model = f"{run.backbone} [{run.label}]" if run.label else run.backbone
            key = (run.task, run.dataset, shots, run.seed, model)
            if key in out:
                twice.add(key)
            else:
                out[key] = run.accuracy
    return out, twice


def _order(task: str, shots) -> tuple:
    """Few-shot rows first, by K; then base, then new."""
    return (task != "few_shot", task, shots if isinstance(shots, int) else -1)


def _diff(a, b):
    return None if a is None or b is None else a - b


def report_rows(ours_root: str, released_root: str, method: str = "BiomedCoOp", tolerance: float = 2.0) -> list[dict]:
    (ours, ours_twice), (released, released_twice) = _index(ours_root, method), _index(released_root, method)
    if not ours and not released:
        raise FileNotFoundError(f"no finished {method} runs under {ours_root} or {released_root}")
    rows = []
    for key in sorted(set(ours) | set(released), key=lambda k: (*_order(k[0], k[2]), k[1], k[3], k[4])):
        task, dataset, shots, seed, backbone = key
        a, b = ours.get(key), released.get(key)
        gap = _diff(a, b)
        flag = "only ours" if b is None else "only released" if a is None else (
            "drift" if abs(gap) > tolerance else "")
        twice = [side for side, seen in (("ours", ours_twice), ("released", released_twice)) if key in seen]
        if twice:
            flag = "; ".join(([flag] if flag else []) + [f"seed found twice in {' and '.join(twice)}: first used"])
        rows.append({"task": task, "dataset": dataset, "shots": shots, "seed": seed, "model": backbone, "ours": a,
                     "released": b, "ours_minus_released": gap, "flag": flag})
    rows += _averages(ours, released, method, tolerance)
    return rows


def _averages(ours: dict, released: dict, method: str, tolerance: float) -> list[dict]:
    """Per (task, K, backbone): mean over the datasets both sides have of each side's seed mean."""
    groups: dict = {}
    for side, index in (("ours", ours), ("released", released)):
        for (task, dataset, shots, _seed, backbone), acc in index.items():
            groups.setdefault((task, shots, backbone), {}).setdefault(dataset, {"ours": [], "released": []})[
                side].append(acc)
    rows = []
    for (task, shots, backbone), by_ds in sorted(groups.items(), key=lambda kv: (*_order(*kv[0][:2]), kv[0][2])):
        both = [d for d, v in sorted(by_ds.items()) if v["ours"] and v["released"]]
        if not both:
            continue
        a = mean([mean(by_ds[d]["ours"]) for d in both])
        b = mean([mean(by_ds[d]["released"]) for d in both])
        if task == "few_shot":
            paper, n_paper = paper_fewshot(method, backbone, shots), PAPER_FEWSHOT_DATASETS
        else:
            published = paper_base2new(method, backbone)
            paper = published[{"base": "base", "new": "novel"}[task]] if published else None
            n_paper = PAPER_BASE2NEW_DATASETS
        gap = a - b
        flag = "drift" if abs(gap) > tolerance else ""
        if paper is not None and len(both) != n_paper:
            flag = (flag + "; " if flag else "") + f"paper averages {n_paper} datasets"
        rows.append({"task": task, "dataset": "average", "shots": shots, "seed": "mean", "model": backbone,
                     "ours": a, "released": b, "ours_minus_released": gap, "paper": paper,
                     "ours_minus_paper": _diff(a, paper), "released_minus_paper": _diff(b, paper),
                     "datasets": len(both), "flag": flag})
    return rows


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        return buf.getvalue()
    from tabulate import tabulate

    def num(v, signed=False):
        return "-" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")

    heads = ["Task", "Dataset", "K", "Seed", "Model", "Ours", "Released", "Ours - released", "Paper",
             "Ours - paper", "Released - paper", "Flag"]
    table = [[r["task"], r["dataset"], r["shots"], r["seed"], r["model"], num(r["ours"]), num(r.get("released")),
              num(r["ours_minus_released"], True), num(r.get("paper")), num(r.get("ours_minus_paper"), True),
              num(r.get("released_minus_paper"), True), r.get("flag", "")] for r in rows]
    title = "From-scratch (ours) vs released checkpoints vs paper, accuracy (%)"
    tablefmt = {"markdown": "github", "latex": "latex", "terminal": "simple"}[fmt]
    body = tabulate(table, heads, tablefmt=tablefmt, disable_numparse=True)
    if fmt == "markdown":
        return f"### {title}\n\n{body}\n"
    if fmt == "latex":
        return f"% {title}\n{body}\n"
    return f"== {title} ==\n{body}\n"
