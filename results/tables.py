"""The paper's tables from a tree of runs: few-shot (row x K), base-to-novel (base, novel, HM) and
accuracy against one config key; `build_tables` returns data (tables, notes, CSV rows), `render` and
`render_csv` turn it into text."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from results.aggregate import (
    Base2NewRow,
    Cell,
    average_cell,
    base2new_rows,
    few_shot_grid,
    seed_cell,
    select_seeds,
    split_settings,
    sweep_points,
    value_text,
)
from results.paper import (
    PAPER_BASE2NEW_DATASETS,
    PAPER_FEWSHOT_DATASETS,
    PAPER_NAMES,
    paper_backbone,
    paper_base2new,
    paper_fewshot,
)
from results.records import Run, scan, trial_tag

HM_CONVENTIONS = {"hm_of_means": "HM of averages", "mean_of_hms": "mean of per-dataset HMs"}
CSV_FIELDS = ["table", "method", "model", "dataset", "shots", "metric", "mean", "std", "seeds", "expected_seeds",
              "datasets", "complete", "collapsed_runs", "paper", "diff"]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list]


@dataclass
class Report:
    """What make_tables prints: the tables, the notes under them and the long CSV rows."""

    tables: list[Table]
    notes: list[str]
    csv_rows: list[dict] = field(default_factory=list)


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
    """Builds the tables and collects the notes (missing, failed, collapsed, duplicate runs) as it goes."""

    def __init__(self, runs: list[Run], seeds: list[int] | None, paper: bool):
        self.runs, self.left_out = select_seeds(runs, seeds)
        self.split_notes = split_settings(self.runs)
        self.seeds, self.paper = seeds, paper
        self.missing: list[str] = []
        self.failed: dict[str, tuple[str, str]] = {}  # path -> (failed, interrupted or running; why)
        self.collapsed: dict[str, float] = {}
        self.duplicates: dict[str, tuple[Run, Run]] = {}
        self.twins: set[str] = set()
        self.csv_rows: list[dict] = []

    def note(self, cell: Cell) -> None:
        self.missing += [m for m in cell.missing if m not in self.missing]
        self.failed.update({r.path: (r.state or "failed", r.failure) for r in cell.failed})
        self.collapsed.update({r.path: r.accuracy for r in cell.collapsed})
        self.duplicates.update({extra.path: (used, extra) for used, extra in cell.duplicates})

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
            seeds = grid.seeds((method, backbone))
            cells = {}
            for k in grid.shots:
                if k not in by_k:
                    continue
                cell = average_cell(by_k[k], grid.datasets, seeds, f"{method}_{backbone} K={k}")
                self.note(cell)
                cells[k] = cell
                paper = self.paper_number(method, backbone, k)
                self.csv_row("few_shot", method, backbone, "average", k, "accuracy", cell, paper=paper)
                if paper is not None:
                    paper_rows.append(self.paper_row(method, backbone, k, cell, paper))
            n_ds = max((c.datasets for c in cells.values()), default=0)
            avg_rows.append([method, backbone, n_ds] + [cell_text(cells[k]) if k in cells else "-" for k in grid.shots])
            for ds in grid.datasets:
                row = [method, backbone, ds]
                for k in grid.shots:
                    if k not in by_k:
                        row.append("-")
                        continue
                    cell = seed_cell(by_k[k].get(ds) or [], seeds, f"{method}_{backbone} K={k} {ds}")
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

    def paper_number(self, row_name: str, backbone: str, k: int) -> float | None:
        """The paper's average for a plain method row (variant rows and split settings meet no paper number)."""
        return paper_fewshot(row_name, backbone, k) if self.paper and " [" not in row_name else None

    def paper_row(self, method: str, backbone: str, k: int, cell: Cell, paper: float) -> list:
        if paper_backbone(backbone)[1]:
            self.twins.add(backbone)
        diff = None if cell.mean is None else cell.mean - paper
        return [method, PAPER_NAMES.get(method, method), backbone, k_label(k), cell.datasets, cell_text(cell),
                num(paper), num(diff, signed=True)]

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

    # ----- base-to-novel ----------------------------------------------------------------------------
    def base2new(self) -> list[Table]:
        per_dataset, averages = base2new_rows(self.runs, self.seeds)
        if not averages:
            return []
        avg_head = ["Method", "Model", "K", "Datasets", "Base", "Novel", "HM of averages", "Mean of per-dataset HMs"]
        if self.paper:
            avg_head += ["Paper base", "Paper novel", "Paper HM", "Paper HM is", "HM - paper"]
        avg_rows = [self.base2new_average(row) for row in averages]
        ds_rows = []
        for row in per_dataset:
            self.note(row.base)
            self.note(row.novel)
            ds_rows.append([row.method, row.backbone, row.shots, row.dataset, cell_text(row.base),
                            cell_text(row.novel), num(row.hm)])
            for metric, cell in (("base", row.base), ("novel", row.novel)):
                self.csv_row("base2new", row.method, row.backbone, row.dataset, row.shots, metric, cell)
            self.csv_row("base2new", row.method, row.backbone, row.dataset, row.shots, "hm", None, value=row.hm)
        return [
            Table("Base-to-novel accuracy (%), average over datasets (both HM conventions)", avg_head, avg_rows),
            Table("Base-to-novel accuracy (%) per dataset; HM of the seed-mean base and novel",
                  ["Method", "Model", "K", "Dataset", "Base", "Novel", "HM"], ds_rows),
        ]

    def base2new_average(self, row: Base2NewRow) -> list:
        self.note(row.base)
        self.note(row.novel)
        # the paper's base-to-novel numbers are 16-shot, plain method rows
        plain = self.paper and " [" not in row.method and row.shots == 16
        paper = paper_base2new(row.method, row.backbone) if plain else None
        out = [row.method, row.backbone, row.shots, row.datasets, cell_text(row.base), cell_text(row.novel),
               num(row.hm), num(row.mean_of_hms)]
        for metric, cell in (("base", row.base), ("novel", row.novel)):
            self.csv_row("base2new", row.method, row.backbone, "average", row.shots, metric, cell,
                         paper=paper[metric] if paper else None)
        conv = paper["hm_convention"] if paper else None
        self.csv_row("base2new", row.method, row.backbone, "average", row.shots, "hm_of_averages", None,
                     value=row.hm, paper=paper["hm"] if conv == "hm_of_means" else None)
        self.csv_row("base2new", row.method, row.backbone, "average", row.shots, "mean_of_per_dataset_hms", None,
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
    def notes(self, tabled: tuple[str, ...]) -> list[str]:
        lines = []
        if self.missing or self.failed:
            lines.append("* = not every seed of the grid finished; the mean covers only the finished ones.")
        if self.collapsed:
            lines.append("C = a seed's predictions collapsed: every test image was given the same class.")
        if any(trial_tag(r) for r in self.runs):
            lines.append("[trial] = runs shortened by TRAIN.TRIAL_EPOCHS (a trial of the pipeline, not the method's "
                         "numbers).")
        if self.seeds:
            lines.append(f"Seed grid: {' '.join(map(str, self.seeds))} for every row (--seeds).")
        else:
            lines.append("Seed grid: each row's own seeds (every seed found for its method, variant and model); "
                         "--seeds sets one grid for all rows.")
        lines += self.split_notes
        lines += [f"missing: {m}" for m in self.missing]
        lines += [f"{state}: {path}: {why}" for path, (state, why) in sorted(self.failed.items())]
        lines += [f"collapsed onto one class: {path} (accuracy {acc:.2f}%)"
                  for path, acc in sorted(self.collapsed.items())]
        lines += [f"duplicate: {extra.path} holds seed {extra.seed} of the same run as {used.path} "
                  f"({extra.accuracy:.2f}% vs {used.accuracy:.2f}%); only the latter is averaged"
                  for _, (used, extra) in sorted(self.duplicates.items())]
        lines += [f"left out (seed {r.seed} not in --seeds): {r.path}" for r in self.left_out]
        other = sorted({r.identity.protocol for r in self.runs if r.task not in tabled})
        for protocol in other:
            count = sum(r.identity.protocol == protocol for r in self.runs)
            where = "tools/transfer_table.py tabulates them" if protocol == "transfer" else "not tabulated here"
            lines.append(f"{count} {protocol} run(s) are not in these tables ({where}).")
        if self.paper:
            lines.append(f"Paper numbers average {PAPER_FEWSHOT_DATASETS} datasets (few-shot) and "
                         f"{PAPER_BASE2NEW_DATASETS} (base-to-novel); compare averages over the same datasets.")
        for twin in sorted(self.twins):
            lines.append(f"{twin} is a tiny random twin: its row is set beside the published "
                         f"{paper_backbone(twin)[0]} numbers only to show the layout.")
        return lines


def build_tables(root: str, paper: bool = False, seeds: list[int] | None = None, against: str | None = None,
                 also: tuple[str, ...] = ()) -> Report:
    """The report's data; raises FileNotFoundError when there is nothing to tabulate."""
    builder = Builder(scan(root), seeds, paper)
    if against:
        tables, tabled = builder.against(against, tuple(also)), ("few_shot",)
    else:
        from results.domain_generalization import dg_tables  # imports this module's Table

        tables, tabled = builder.few_shot() + builder.base2new() + dg_tables(builder), ("few_shot", "base", "new", "dg")
    if not tables:
        what = f" recording {against}" if against else ""
        raise FileNotFoundError(f"no results.json{what} under {root}: run the scripts first "
                                "(scripts/<method>/few_shot.sh)")
    return Report(tables, builder.notes(tabled), builder.csv_rows)


def latex_escape(text) -> str:
    text = str(text)
    for a, b in (("\\", "\\textbackslash{}"), ("%", "\\%"), ("_", "\\_"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(a, b)
    return text.replace("±", "$\\pm$")


def render(tables: list[Table], notes: list[str], fmt: str) -> str:
    """terminal, markdown or latex text of the tables with the notes under them."""
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
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()
