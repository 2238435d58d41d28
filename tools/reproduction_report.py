"""Where does a reproduction drift? From-scratch runs beside the released checkpoints and the paper.

    python tools/reproduction_report.py --ours output --released output_eval
    python tools/reproduction_report.py --ours output --released output_eval --format markdown --tolerance 1.5

--ours is the OUTPUT_ROOT of this toolkit's runs (scripts/biomedcoop/few_shot.sh, base2new.sh);
--released is the EVAL_ROOT of the released checkpoints' evaluations (scripts/biomedcoop/eval_fewshot.sh,
eval_base2new.sh). One row per dataset, K and seed (base-to-novel: per dataset, seed and class half):
the two accuracies and their difference; then one row per K (and per class half) averaged over the
datasets both sides have, beside the paper's published average. A row whose from-scratch accuracy
is more than --tolerance points from the released checkpoint's is marked "drift". The paper
publishes averages only, so per-dataset rows have no paper column; the paper's averages cover 11
datasets (10 for base-to-novel), so compare them with averages over the same datasets.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

import _bootstrap  # noqa: F401
from results_io import PAPER_BASE2NEW_DATASETS, PAPER_FEWSHOT_DATASETS, mean, paper_base2new, paper_fewshot, scan

FIELDS = ["task", "dataset", "shots", "seed", "model", "ours", "released", "ours_minus_released", "paper",
          "ours_minus_paper", "released_minus_paper", "datasets", "flag"]


def _index(root: str, method: str) -> dict:
    """(task, dataset, shots, seed, backbone) -> accuracy of finished runs of `method`."""
    out = {}
    for run in scan(root):
        if run.method == method and run.ok:
            shots = run.shots if run.task == "few_shot" else "-"  # base-to-novel pairs match whatever K
            out[(run.task, run.dataset, shots, run.seed, run.backbone)] = run.accuracy
    return out


def _order(task: str, shots) -> tuple:
    """Few-shot rows first, by K; then base, then new."""
    return (task != "few_shot", task, shots if isinstance(shots, int) else -1)


def _diff(a, b):
    return None if a is None or b is None else a - b


def report_rows(ours_root: str, released_root: str, method: str = "BiomedCoOp", tolerance: float = 2.0) -> list[dict]:
    ours, released = _index(ours_root, method), _index(released_root, method)
    if not ours and not released:
        raise FileNotFoundError(f"no finished {method} runs under {ours_root} or {released_root}")
    rows = []
    for key in sorted(set(ours) | set(released), key=lambda k: (*_order(k[0], k[2]), k[1], k[3], k[4])):
        task, dataset, shots, seed, backbone = key
        a, b = ours.get(key), released.get(key)
        gap = _diff(a, b)
        flag = "only ours" if b is None else "only released" if a is None else (
            "drift" if abs(gap) > tolerance else "")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True, help="OUTPUT_ROOT of the from-scratch runs")
    p.add_argument("--released", required=True, help="EVAL_ROOT of the released checkpoints' evaluations")
    p.add_argument("--method", default="BiomedCoOp", help="method to compare (default BiomedCoOp)")
    p.add_argument("--tolerance", type=float, default=2.0, help="accuracy points before a row is marked drift")
    p.add_argument("--format", choices=["terminal", "markdown", "csv", "latex"], default="terminal")
    args = p.parse_args(argv)
    try:
        rows = report_rows(args.ours, args.released, args.method, args.tolerance)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
