"""Turn a tree of runs into the paper's tables: few-shot (method x K) and base-to-novel (base, novel, HM).

    python tools/make_tables.py output                      # terminal tables
    python tools/make_tables.py output --format markdown --paper --out results.md

Reads every results.json under OUTPUT_DIR (seed folders in the scripts' layout). Each cell is the
mean +- population std over seeds, with the number of seeds: "61.20 +- 0.80 (3)". A cell that lacks
a seed of the grid, or holds a failed run (log.txt without results.json), shows "(2/3)" and `*`,
and the notes list exactly which runs; a run whose predictions collapsed onto one class is marked `C`.

Averages over datasets: mean of the per-dataset seed means; the std is over seeds of the
dataset-averaged accuracy. Base-to-novel tables give both HM conventions found in published tables:
the HM of the averaged base and novel accuracies, and the mean of the per-dataset HMs.
--paper adds the paper's published averages and the difference (a Tiny twin is compared with its
full model's numbers only to show the layout). --format csv writes one long table of raw numbers.

A run with a variant label (TRAINER.RUN_LABEL, e.g. the rows of scripts/biomedcoop/ablation.sh) or
the imbalanced few-shot protocol gets its own row, "BiomedCoOp [ce]".

    python tools/make_tables.py output/tau_sweep --against TRAINER.BIOMEDCOOP.TAU --also prompts_kept_share

--against KEY instead tabulates accuracy against the value of one config key (one row per value, per
method, model, dataset and K), with the mean over seeds of each --also results.json field beside it.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

import _bootstrap  # noqa: F401
from results_io import (
    PAPER_BASE2NEW_DATASETS,
    PAPER_FEWSHOT_DATASETS,
    PAPER_NAMES,
    Base2NewRow,
    Cell,
    average_cell,
    base2new_rows,
    emit_table,
    few_shot_grid,
    paper_backbone,
    paper_base2new,
    paper_fewshot,
    scan,
    seed_cell,
    sweep_points,
    value_text,
)

FORMATS = {"terminal": "simple", "markdown": "github", "latex": "latex_raw", "csv": None}
HM_CONVENTIONS = {"hm_of_means": "HM of averages", "mean_of_hms": "mean of per-dataset HMs"}


class Table:
    def __init__(self, title: str, headers: list[str], rows: list[list]):
        self.title, self.headers, self.rows = title, headers, rows


def num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def cell_text(cell: Cell) -> str:
    if cell.mean is None:
        return "missing" if cell.missing or cell.failed else "-"
    text = num(cell.mean)
    if cell.std is not None:
        text += f" ± {cell.std:.2f}"
    text += f" ({cell.n})" if cell.complete else f" ({cell.n}/{cell.expected}) *"
    if cell.collapsed:
        text += " C"
    return text


def k_label(k: int) -> str:
    return "zero-shot" if k == 0 else f"K={k}"


class Builder:
    """Builds the tables and collects the notes (missing, failed, collapsed runs) as it goes."""

    def __init__(self, root: str, seeds: list[int] | None, paper: bool):
        self.runs = scan(root)
        self.seeds, self.paper = seeds, paper
        self.missing: list[str] = []
        self.failed: dict[str, str] = {}
        self.collapsed: dict[str, float] = {}
        self.twins: set[str] = set()
        self.csv_rows: list[dict] = []

    def note(self, cell: Cell) -> None:
        self.missing += [m for m in cell.missing if m not in self.missing]
        self.failed.update({r.path: r.failure for r in cell.failed})
        self.collapsed.update({r.path: r.accuracy for r in cell.collapsed})

    def csv_row(self, table: str, method: str, backbone: str, dataset: str, shots, metric: str, cell: Cell | None,
                value: float | None = None, paper: float | None = None) -> None:
        value = cell.mean if cell is not None else value
        self.csv_rows.append({
            "table": table, "method": method, "model": backbone, "dataset": dataset, "shots": shots,
            "metric": metric, "mean": value, "std": cell.std if cell else None, "seeds": cell.n if cell else None,
            "expected_seeds": cell.expected if cell else None,
            "datasets": cell.datasets if cell else None,
            "complete": cell.complete if cell else None,
            "collapsed_runs": len(cell.collapsed) if cell else None,
            "paper": paper, "diff": None if paper is None or value is None else value - paper,
        })

    # ----- few-shot ---------------------------------------------------------------------------------
    def few_shot(self) -> list[Table]:
        grid = few_shot_grid(self.runs, self.seeds)
        if not grid.groups:
            return []
        heads = [k_label(k) for k in grid.shots]
        avg_rows, ds_rows, paper_rows = [], [], []
        for (method, backbone), by_k in grid.groups.items():
            cells = {}
            for k in grid.shots:
                if k not in by_k:
                    continue
                cell = average_cell(by_k[k], grid.datasets, grid.seeds, f"{method}_{backbone} K={k}")
                self.note(cell)
                cells[k] = cell
                paper = paper_fewshot(method, backbone, k) if self.paper else None
                self.csv_row("few_shot", method, backbone, "average", k, "accuracy", cell, paper=paper)
                if paper is not None:
                    paper_rows.append(self.paper_row(method, backbone, k, cell, paper))
            n_ds = max((c.datasets for c in cells.values()), default=0)
            avg_rows.append([method, backbone, n_ds] + [cell_text(cells[k]) if k in cells else "-" for k in grid.shots])
            for ds in grid.datasets:
                row = [method, backbone, ds]
                for k in grid.shots:
                    runs = by_k.get(k, {}).get(ds)
                    if k not in by_k:
                        row.append("-")
                        continue
                    cell = seed_cell(runs or [], grid.seeds, f"{method}_{backbone} K={k} {ds}")
                    row.append(cell_text(cell))
                    self.csv_row("few_shot", method, backbone, ds, k, "accuracy", cell)
                ds_rows.append(row)
        tables = [
            Table(f"Few-shot accuracy (%), average over {len(grid.datasets)} dataset(s), "
                  "mean ± std over seeds (n seeds)", ["Method", "Model", "Datasets"] + heads, avg_rows),
            Table("Few-shot accuracy (%) per dataset, mean ± std over seeds (n seeds)",
                  ["Method", "Model", "Dataset"] + heads, ds_rows),
        ]
        if self.paper:
            tables.append(Table(
                f"Few-shot: this run's average beside the paper's (BiomedCLIP unless named; paper averages "
                f"{PAPER_FEWSHOT_DATASETS} datasets)",
                ["Method", "Paper name", "Model", "K", "Datasets", "Ours", "Paper", "Ours - paper"], paper_rows,
            ))
        return tables

    # ----- one setting swept ----------------------------------------------------------------------
    def against(self, key: str, also: tuple[str, ...]) -> list[Table]:
        points = sweep_points(self.runs, key, also, self.seeds)
        if not points:
            return []
        rows = []
        for p in points:
            self.note(p.cell)
            rows.append([p.method, p.backbone, p.dataset, p.shots, value_text(key, p.value), cell_text(p.cell)]
                        + [num(p.also[name]) for name in also])
            self.csv_row(f"against {key}={value_text(key, p.value)}", p.method, p.backbone, p.dataset, p.shots,
                         "accuracy", p.cell)
        failed = [r for r in self.runs if not r.ok]
        if failed:
            self.missing.append(f"{len(failed)} run(s) without a usable results.json are not placed (their "
                                f"{key} is unknown); e.g. {failed[0].path}")
        return [Table(f"Accuracy (%) against {key}, mean ± std over seeds (n seeds)"
                      + (f"; {', '.join(also)}: mean over seeds" if also else ""),
                      ["Method", "Model", "Dataset", "K", key.rsplit(".", 1)[-1], "Accuracy"] + list(also), rows)]

    def paper_row(self, method: str, backbone: str, k: int, cell: Cell, paper: float) -> list:
        if paper_backbone(backbone)[1]:
            self.twins.add(backbone)
        diff = None if cell.mean is None else cell.mean - paper
        return [method, PAPER_NAMES.get(method, method), backbone, k_label(k), cell.datasets, cell_text(cell),
                num(paper), num(diff, signed=True)]

    # ----- base-to-novel ----------------------------------------------------------------------------
    def base2new(self) -> list[Table]:
        per_dataset, averages = base2new_rows(self.runs, self.seeds)
        if not averages:
            return []
        avg_head = ["Method", "Model", "Datasets", "Base", "Novel", "HM of averages", "Mean of per-dataset HMs"]
        if self.paper:
            avg_head += ["Paper base", "Paper novel", "Paper HM", "Paper HM is", "HM - paper"]
        avg_rows = [self.base2new_average(row) for row in averages]
        ds_rows = []
        for row in per_dataset:
            self.note(row.base)
            self.note(row.novel)
            ds_rows.append([row.method, row.backbone, row.dataset, cell_text(row.base), cell_text(row.novel),
                            num(row.hm)])
            for metric, cell in (("base", row.base), ("novel", row.novel)):
                self.csv_row("base2new", row.method, row.backbone, row.dataset, 16, metric, cell)
            self.csv_row("base2new", row.method, row.backbone, row.dataset, 16, "hm", None, value=row.hm)
        return [
            Table("Base-to-novel accuracy (%), average over datasets (both HM conventions)", avg_head, avg_rows),
            Table("Base-to-novel accuracy (%) per dataset; HM of the seed-mean base and novel",
                  ["Method", "Model", "Dataset", "Base", "Novel", "HM"], ds_rows),
        ]

    def base2new_average(self, row: Base2NewRow) -> list:
        self.note(row.base)
        self.note(row.novel)
        paper = paper_base2new(row.method, row.backbone) if self.paper else None
        out = [row.method, row.backbone, row.datasets, cell_text(row.base), cell_text(row.novel), num(row.hm),
               num(row.mean_of_hms)]
        for metric, cell in (("base", row.base), ("novel", row.novel)):
            self.csv_row("base2new", row.method, row.backbone, "average", 16, metric, cell,
                         paper=paper[metric] if paper else None)
        conv = paper["hm_convention"] if paper else None
        self.csv_row("base2new", row.method, row.backbone, "average", 16, "hm_of_averages", None, value=row.hm,
                     paper=paper["hm"] if conv == "hm_of_means" else None)
        self.csv_row("base2new", row.method, row.backbone, "average", 16, "mean_of_per_dataset_hms", None,
                     value=row.mean_of_hms, paper=paper["hm"] if conv == "mean_of_hms" else None)
        if self.paper:
            if paper is None:
                out += ["-"] * 5
            else:
                if paper_backbone(row.backbone)[1]:
                    self.twins.add(row.backbone)
                ours = row.hm if conv == "hm_of_means" else row.mean_of_hms
                out += [num(paper["base"]), num(paper["novel"]), num(paper["hm"]), HM_CONVENTIONS[conv],
                        num(None if ours is None else ours - paper["hm"], signed=True)]
        return out

    # ----- notes ------------------------------------------------------------------------------------
    def notes(self) -> list[str]:
        lines = []
        if self.missing or self.failed:
            lines.append("* = not every seed of the grid finished; the mean covers only the finished ones.")
        if self.collapsed:
            lines.append("C = a seed's predictions collapsed: every test image was given the same class.")
        lines += [f"missing: {m}" for m in self.missing]
        lines += [f"failed: {path}: {why}" for path, why in sorted(self.failed.items())]
        lines += [f"collapsed onto one class: {path} (accuracy {acc:.2f}%)"
                  for path, acc in sorted(self.collapsed.items())]
        if self.paper:
            lines.append(f"Paper numbers average {PAPER_FEWSHOT_DATASETS} datasets (few-shot) and "
                         f"{PAPER_BASE2NEW_DATASETS} (base-to-novel); compare averages over the same datasets.")
        for twin in sorted(self.twins):
            lines.append(f"{twin} is a tiny random twin: its row is set beside the published "
                         f"{paper_backbone(twin)[0]} numbers only to show the layout.")
        return lines


def latex_escape(text) -> str:
    text = str(text)
    for a, b in (("\\", "\\textbackslash{}"), ("%", "\\%"), ("_", "\\_"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(a, b)
    return text.replace("±", "$\\pm$")


def render(tables: list[Table], notes: list[str], fmt: str) -> str:
    from tabulate import tabulate

    out = []
    for t in tables:
        if fmt == "markdown":
            out += [f"### {t.title}", "", tabulate(t.rows, t.headers, tablefmt="github", disable_numparse=True), ""]
        elif fmt == "latex":
            rows = [[latex_escape(c) for c in r] for r in t.rows]
            out += [f"% {t.title}", tabulate(rows, [latex_escape(h) for h in t.headers], tablefmt="latex_raw",
                                             disable_numparse=True), ""]
        else:
            out += [f"== {t.title} ==", tabulate(t.rows, t.headers, tablefmt="simple", disable_numparse=True), ""]
    if notes:
        prefix = {"markdown": "- ", "latex": "% "}.get(fmt, "")
        out += [prefix + line for line in notes]
    return "\n".join(out).rstrip() + "\n"


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["table", "method", "model", "dataset", "shots", "metric", "mean", "std", "seeds", "expected_seeds",
              "datasets", "complete", "collapsed_runs", "paper", "diff"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def make_tables(root: str, fmt: str = "terminal", paper: bool = False, seeds: list[int] | None = None,
                against: str | None = None, also: tuple[str, ...] = ()) -> str:
    """The whole report as text; raises FileNotFoundError when there is nothing to tabulate."""
    builder = Builder(root, seeds, paper)
    tables = builder.against(against, tuple(also)) if against else builder.few_shot() + builder.base2new()
    if not tables:
        what = f" recording {against}" if against else ""
        raise FileNotFoundError(f"no results.json{what} under {root}: run the scripts first "
                                "(scripts/<method>/few_shot.sh)")
    if fmt == "csv":
        notes = builder.notes()
        if notes:
            print("\n".join(notes), file=sys.stderr)
        return render_csv(builder.csv_rows)
    return render(tables, builder.notes(), fmt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the runs (searched recursively for seed*/results.json)")
    p.add_argument("--format", choices=sorted(FORMATS), default="terminal", help="table layout (default terminal)")
    p.add_argument("--paper", action="store_true", help="add the paper's published numbers and the difference")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds the grid should have (default: every seed found)")
    p.add_argument("--against", metavar="KEY",
                   help="tabulate accuracy against this config key's value, e.g. TRAINER.BIOMEDCOOP.TAU")
    p.add_argument("--also", nargs="+", default=[], metavar="FIELD",
                   help="with --against: results.json fields to average beside it, e.g. prompts_kept_share")
    p.add_argument("--out", help="write to this file instead of the terminal")
    args = p.parse_args(argv)
    if args.also and not args.against:
        p.error("--also needs --against KEY")
    return emit_table(lambda: make_tables(args.output_dir, args.format, args.paper, args.seeds, args.against,
                                          tuple(args.also)), args.out)


if __name__ == "__main__":
    sys.exit(main())
