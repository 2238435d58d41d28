"""Cross-dataset transfer: accuracy of weights trained on one dataset (rows) tested on each (columns).

A trained run is its source's own test (the diagonal); an eval-only run whose weights came from
another dataset is a transfer run (engine.runs.RunIdentity: protocol "transfer", task = the source).
One table per method, model, K and few-shot protocol. `transfer_cells` returns data, `render_transfer`
text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from results.aggregate import Cell, seed_cell, seeds_of, select_seeds
from results.records import scan, transfer_source


@dataclass
class TransferTables:
    """{(method, model, K, few-shot protocol): {(source, target): Cell}} and the notes under them."""

    tables: dict[tuple[str, str, int, str], dict[tuple[str, str], Cell]]
    notes: list[str] = field(default_factory=list)


def transfer_cells(root: str, seeds: list[int] | None = None) -> TransferTables:
    runs, left_out = select_seeds(scan(root), seeds)
    notes = [f"left out (seed {r.seed} not in --seeds): {r.path}" for r in left_out]
    grouped: dict = {}
    for run in runs:
        if not run.ok or run.identity.protocol not in ("few_shot", "transfer"):
            continue
        if run.record.get("eval_only") and transfer_source(run) is None:
            notes.append(f"{run.path}: the weights it loaded have no results.json, so their source is unknown; "
                         "left out")
            continue
        ident = run.identity
        source = ident.task if ident.protocol == "transfer" else ident.dataset
        key = (ident.method, ident.model, ident.shots, ident.fewshot_protocol)
        grouped.setdefault(key, {}).setdefault((source, ident.dataset), []).append(run)
    tables = {}
    for key, pairs in sorted(grouped.items()):
        grid = list(seeds) if seeds else seeds_of([r for rs in pairs.values() for r in rs])
        name = f"{key[0]}_{key[1]} K={key[2]}"
        tables[key] = {pair: seed_cell(rs, grid, f"{name} {pair[0]} -> {pair[1]}") for pair, rs in pairs.items()}
    for cells in tables.values():
        for cell in cells.values():
            notes += [f"missing: {m}" for m in cell.missing]
            notes += [f"duplicate: {extra.path} holds seed {extra.seed} of the same run as {used.path}; "
                      "only the latter is averaged" for used, extra in cell.duplicates]
    if tables and not seeds:
        notes.append("Seed grid: each table's own seeds; --seeds sets one grid.")
    return TransferTables(tables, notes)


def cell_text(cell: Cell) -> str:
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    return text + (f" ({cell.n})" if cell.complete else f" ({cell.n}/{cell.expected}) *")


def render_transfer(result: TransferTables, fmt: str = "terminal") -> str:
    """terminal or markdown text: one source x target table per (method, model, K, protocol)."""
    from tabulate import tabulate

    out = []
    for (method, model, shots, protocol), cells in result.tables.items():
        sources = sorted({s for s, _ in cells})
        targets = sorted({t for _, t in cells})
        rows = [[f"{s} ->"] + [cell_text(cells[(s, t)]) if (s, t) in cells else "-" for t in targets]
                for s in sources]
        what = f"{method} ({model}, K={shots}" + (f", {protocol} few-shot" if protocol != "balanced" else "") + ")"
        title = f"{what}: accuracy (%) on each target (columns) of the context learned on each source (rows)"
        tablefmt = "github" if fmt == "markdown" else "simple"
        out += [f"### {title}" if fmt == "markdown" else f"== {title} ==", *([""] if fmt == "markdown" else []),
                tabulate(rows, ["trained on"] + targets, tablefmt=tablefmt, disable_numparse=True), ""]
    out += result.notes
    return "\n".join(out).rstrip() + "\n"


def transfer_table(root: str, fmt: str = "terminal", seeds: list[int] | None = None) -> str:
    """The tables as text; raises FileNotFoundError when nothing under `root` can be placed."""
    result = transfer_cells(root, seeds)
    if not result.tables:
        raise FileNotFoundError(f"no results.json under {root}: run scripts/biomedcoop/transfer.sh first")
    return render_transfer(result, fmt)

