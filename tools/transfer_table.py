"""Cross-dataset transfer table: accuracy of weights trained on one dataset (rows) tested on each (columns).

    python tools/transfer_table.py output/transfer                 # terminal table
    python tools/transfer_table.py output/transfer --format markdown --out transfer.md

Reads every seed folder under OUTPUT_DIR (scripts/biomedcoop/transfer.sh writes them). A trained run
is its source's own test (the diagonal); an eval-only run's source is the dataset of the run whose
weights it loaded (its results.json in the recorded --model-dir). Each cell is the mean ± population
std over seeds, with the number of seeds; "*" marks a cell missing a seed of the grid (--seeds).
Rows are kept apart per method and model.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401
from results_io import Cell, emit_table, scan, seed_cell, transfer_source


def cell_text(cell: Cell) -> str:
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    return text + (f" ({cell.n})" if cell.complete else f" ({cell.n}/{cell.expected}) *")


def transfer_cells(root: str, seeds: list[int] | None = None) -> dict[tuple[str, str], dict[tuple[str, str], Cell]]:
    """{(method, model): {(source, target): Cell}} of the few-shot runs under `root`."""
    runs = [r for r in scan(root) if r.ok and r.task == "few_shot"]
    seeds = seeds or sorted({r.seed for r in runs})
    grouped: dict = {}
    for run in runs:
        source = transfer_source(run)
        if source is None:
            print(f"note: {run.path}: the weights it loaded have no results.json; left out", file=sys.stderr)
            continue
        grouped.setdefault((run.method, run.backbone), {}).setdefault((source, run.dataset), []).append(run)
    return {key: {pair: seed_cell(rs, seeds, f"{key[0]}_{key[1]} {pair[0]} -> {pair[1]}") for pair, rs in pairs.items()}
            for key, pairs in sorted(grouped.items())}


def transfer_table(root: str, fmt: str = "terminal", seeds: list[int] | None = None) -> str:
    """The tables as text; raises FileNotFoundError when nothing under `root` can be placed."""
    from tabulate import tabulate

    tables = transfer_cells(root, seeds)
    if not tables:
        raise FileNotFoundError(f"no results.json under {root}: run scripts/biomedcoop/transfer.sh first")
    out = []
    for (method, backbone), cells in tables.items():
        sources = sorted({s for s, _ in cells})
        targets = sorted({t for _, t in cells})
        rows = [[f"{s} ->"] + [cell_text(cells[(s, t)]) if (s, t) in cells else "-" for t in targets] for s in sources]
        title = (f"{method} ({backbone}): accuracy (%) on each target (columns) of the context learned "
                 "on each source (rows)")
        if fmt == "markdown":
            out += [f"### {title}", "", tabulate(rows, ["trained on"] + targets, tablefmt="github",
                                                   disable_numparse=True), ""]
        else:
            out += [f"== {title} ==", tabulate(rows, ["trained on"] + targets, tablefmt="simple",
                                               disable_numparse=True), ""]
    incomplete = [f"{k[0]}_{k[1]} {s} -> {t}: {', '.join(c.missing)}" for k, cells in tables.items()
                  for (s, t), c in cells.items() if c.missing]
    out += [f"missing: {line}" for line in incomplete]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the transfer runs (searched recursively)")
    p.add_argument("--format", choices=["terminal", "markdown"], default="terminal")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds the grid should have (default: every seed found)")
    p.add_argument("--out", help="write to this file instead of the terminal")
    args = p.parse_args(argv)
    return emit_table(lambda: transfer_table(args.output_dir, args.format, args.seeds), args.out)


if __name__ == "__main__":
    sys.exit(main())
