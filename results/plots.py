"""Figures from a tree of runs: accuracy against K per row (average and one panel per dataset), a
base-to-novel bar chart, and accuracy against one config key. Rows and seed grids as in
results.tables; matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import os

from results.aggregate import (
    average_cell,
    base2new_rows,
    few_shot_grid,
    seed_cell,
    split_settings,
    sweep_points,
    value_order,
    value_text,
)
from results.paper import PAPER_FEWSHOT, ZERO_SHOT_METHODS, paper_backbone
from results.records import scan

FORMATS = (".png", ".pdf", ".svg")


def _series(by_k: dict, datasets: list[str], seeds: list[int], dataset: str | None):
    """[(K, cell)] for one method: the average over `datasets`, or one dataset."""
    out = []
    for k in sorted(by_k):
        if dataset is None:
            cell = average_cell(by_k[k], datasets, seeds, "")
        else:
            if dataset not in by_k[k]:
                continue
            cell = seed_cell(by_k[k][dataset], seeds, "")
        if cell.mean is not None:
            out.append((k, cell))
    return out


def _draw_few_shot(ax, grid, dataset: str | None, colors: dict, paper: bool) -> None:
    shots = [k for k in grid.shots if k > 0] or [1]
    for (method, backbone), by_k in grid.groups.items():
        label = f"{method} ({backbone})" if len({b for _, b in grid.groups}) > 1 else method
        color = colors[(method, backbone)]
        series = _series(by_k, grid.datasets, grid.seeds((method, backbone)), dataset)
        if not series:
            continue
        if method.partition(" [")[0] in ZERO_SHOT_METHODS:
            value = series[0][1].mean
            ax.axhline(value, color=color, linestyle="--", linewidth=1.4, label=label)
            continue
        series = [(k, c) for k, c in series if k > 0]
        if not series:
            continue
        ks = [k for k, _ in series]
        means = [c.mean for _, c in series]
        stds = [c.std or 0.0 for _, c in series]
        ax.plot(ks, means, marker="o", markersize=4, color=color, linewidth=1.8, label=label)
        ax.fill_between(ks, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=color, alpha=0.18, linewidth=0)
        gaps = [(k, c.mean) for k, c in series if not c.complete]
        if gaps:
            ax.plot(*zip(*gaps), linestyle="none", marker="x", markersize=9, color="black")
        if paper and dataset is None:
            published = PAPER_FEWSHOT.get((method, paper_backbone(backbone)[0]), {})
            pts = [(k, published[k]) for k in shots if k in published]
            if pts:
                ax.plot(*zip(*pts), linestyle=":", linewidth=1.2, color=color)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.minorticks_off()
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    title = f"Average over {len(grid.datasets)} datasets" if dataset is None else dataset
    ax.set_title(title, fontsize=11)


def _draw_base2new(ax, averages) -> None:
    import numpy as np

    rows = [r for r in averages if r.base.mean is not None or r.novel.mean is not None]
    x = np.arange(len(rows))
    width = 0.26
    parts = [("base", lambda r: r.base.mean, lambda r: r.base.std, "#4C72B0"),
             ("novel", lambda r: r.novel.mean, lambda r: r.novel.std, "#DD8452"),
             ("HM of averages", lambda r: r.hm, lambda r: None, "#55A868")]
    for i, (name, value, err, color) in enumerate(parts):
        values = [value(r) or 0.0 for r in rows]
        errors = [err(r) or 0.0 for r in rows]
        bars = ax.bar(x + (i - 1) * width, values, width, yerr=errors, capsize=3, label=name, color=color,
                      edgecolor="black", linewidth=0.5)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    multi = len({r.backbone for r in rows}) > 1
    several_k = len({r.shots for r in rows}) > 1
    ax.set_xticks(x)
    ax.set_xticklabels([(f"{r.method}\n({r.backbone})" if multi else r.method) + (f"\nK={r.shots}" if several_k else "")
                        for r in rows])
    ax.set_ylabel("accuracy (%)")
    n = max((r.datasets for r in rows), default=0)
    ax.set_title(f"Base-to-novel, average over {n} datasets (error bars: std over seeds)", fontsize=11)
    top = max([v for r in rows for v in (r.base.mean, r.novel.mean, r.hm) if v is not None], default=100.0)
    ax.set_ylim(0, top * 1.2)
    ax.legend(fontsize=8, loc="upper center", ncols=3)
    ax.grid(True, axis="y", alpha=0.3)


def plot_results(root: str, out: str, paper: bool = False, title: str | None = None,
                 max_datasets: int | None = None) -> str:
    """Write the figure to `out`; raises FileNotFoundError when there is nothing to plot."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"--out must end in one of {', '.join(FORMATS)} (got '{out}')")
    runs = scan(root)
    split_settings(runs)
    grid = few_shot_grid(runs)
    _, averages = base2new_rows(runs)
    if not grid.groups and not averages:
        raise FileNotFoundError(f"no results.json under {root}: run the scripts first")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(grid.groups) + [(r.method, r.backbone) for r in averages if (r.method, r.backbone) not in grid.groups]
    palette = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20").colors
    colors = {key: palette[i % len(palette)] for i, key in enumerate(keys)}

    datasets = grid.datasets[:max_datasets] if max_datasets else grid.datasets
    panels = (1 + len(datasets)) if grid.groups else 0
    ncols = min(4, max(panels, 1))
    few_rows = -(-panels // ncols) if panels else 0
    nrows = few_rows + (1 if averages else 0)
    fig = plt.figure(figsize=(4.2 * ncols, 3.6 * nrows + 0.9), layout="constrained")
    gs = fig.add_gridspec(nrows, ncols)
    handles = labels = None
    for i, dataset in enumerate([None] + datasets if grid.groups else []):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        _draw_few_shot(ax, grid, dataset, colors, paper)
        if dataset is None:
            handles, labels = ax.get_legend_handles_labels()
    if handles:
        if paper:
            from matplotlib.lines import Line2D

            handles = handles + [Line2D([], [], linestyle=":", color="gray")]
            labels = labels + ["paper (published average)"]
        if any(not c.complete for key, by_k in grid.groups.items() for k in by_k
               for c in [average_cell(by_k[k], grid.datasets, grid.seeds(key), "")]):
            from matplotlib.lines import Line2D

            handles = handles + [Line2D([], [], linestyle="none", marker="x", color="black")]
            labels = labels + ["not every seed finished"]
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=9)
    if averages:
        _draw_base2new(fig.add_subplot(gs[few_rows, :]), averages)
    twins = sorted({b for _, b in keys if paper_backbone(b)[1]})
    heading = title or "Accuracy (mean ± std over seeds)"
    if twins:
        heading += f"\n{', '.join(twins)}: tiny random twins on synthetic data; shows the pipeline, not the method"
    fig.suptitle(heading, fontsize=12)
    _save(fig, out, ext)
    return out


def plot_against(root: str, key: str, out: str, title: str | None = None) -> str:
    """Accuracy against config `key` to `out`; raises FileNotFoundError when no run records it."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"--out must end in one of {', '.join(FORMATS)} (got '{out}')")
    points = sweep_points(scan(root), key)  # series are told apart by their settings
    if not points:
        raise FileNotFoundError(f"no results.json recording {key} under {root}: run the scripts first")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = []
    for p in points:
        if p.value not in values:
            values.append(p.value)
    values.sort(key=value_order)
    series: dict = {}
    for p in points:
        series.setdefault((p.method, p.backbone, p.dataset, p.shots), []).append(p)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for (method, backbone, dataset, shots), pts in series.items():
        pts = [p for p in pts if p.cell.mean is not None]
        xs = [values.index(p.value) for p in pts]
        means = [p.cell.mean for p in pts]
        stds = [p.cell.std or 0.0 for p in pts]
        line, = ax.plot(xs, means, marker="o", markersize=4, linewidth=1.8,
                        label=f"{method} ({backbone}), {dataset}, K={shots}")
        ax.fill_between(xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)],
                        color=line.get_color(), alpha=0.18, linewidth=0)
        gaps = [(x, p.cell.mean) for x, p in zip(xs, pts) if not p.cell.complete]
        if gaps:
            ax.plot(*zip(*gaps), linestyle="none", marker="x", markersize=9, color="black")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([value_text(key, v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    heading = title or f"Accuracy against {key.rsplit('.', 1)[-1]} (mean ± std over seeds)"
    twins = sorted({p.backbone for p in points if paper_backbone(p.backbone)[1]})
    if twins:
        heading += f"\n{', '.join(twins)}: tiny random twin, synthetic data (pipeline only)"
    ax.set_title(heading, fontsize=10)
    _save(fig, out, ext)
    return out


def _save(fig, out: str, ext: str) -> None:
    import matplotlib.pyplot as plt

    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp{ext}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
