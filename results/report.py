"""One self-contained HTML page from a tree of runs (tools/report.py).

Every number in the page is a row of make_tables' CSV (`results.tables.build_tables`, the same run
identity and aggregation, formatted by `render_csv`), laid out as the paper's tables. Each number
carries its key as data attributes (data-table, data-method, data-model, data-dataset, data-shots,
data-metric, data-field and data-value, the CSV text), so a test can hold the page against the CSV.
Behind every mean sit the per-seed values of the runs it averages (a <details> table, each value
titled with its run folder). Figures are matplotlib SVG inlined into the page: no script, font,
image or style is fetched, so the file opens anywhere, offline. Standard library HTML (html.escape).
"""

from __future__ import annotations

import csv
import glob
import html
import io
import os
import re
import tempfile

from engine.runs import log_tail, number_settings, run_status, setting_differences
from results.aggregate import first_per_seed, select_seeds, split_settings, table_k
from results.domain_generalization import row_name as dg_row_name
from results.domain_generalization import source_run
from results.paper import PAPER_NAMES, paper_backbone
from results.records import Run, scan
from results.tables import HM_CONVENTIONS, build_tables, k_label, render_csv

KEY_FIELDS = ("table", "method", "model", "dataset", "shots", "metric")
B2N_AVERAGE = [("base", "Base"), ("novel", "Novel"), ("hm_of_averages", HM_CONVENTIONS["hm_of_means"]),
               ("mean_of_per_dataset_hms", HM_CONVENTIONS["mean_of_hms"])]
B2N_DATASET = [("base", "Base"), ("novel", "Novel"), ("hm", "HM")]
DG_FIXED = [("in_distribution", "ID (source test)"), ("out_of_distribution", "OOD (mean of targets)"), ("hm", "HM")]
TAIL_LINES = 12

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#1d232a;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:36px}
h3{font-size:1.05em;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;white-space:nowrap}
details>summary{cursor:pointer;list-style:none}details>summary::-webkit-details-marker{display:none}
details[open]>summary{font-weight:600}
table.seeds{font-size:11px;margin:4px 0 0 auto}table.seeds td,table.seeds th{padding:1px 5px}
.flag{display:inline-block;border-radius:3px;padding:0 4px;margin-left:3px;font-size:11px;font-weight:700}
.flag-collapsed{background:#ffd8b5;color:#7a3400}.flag-incomplete{background:#ffe9a8;color:#6b5000}
.flag-failed{background:#ffc9c9;color:#8a1010}
tr.collapsed td{background:#fff3e8}tr.failed td{background:#fff0f0}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:6px;font-size:11px;max-height:220px;overflow:auto;
margin:4px 0;white-space:pre-wrap}
.banner{background:#eef4ff;border-left:4px solid #4c72b0;padding:8px 12px;margin:12px 0}
.muted{color:#57606a;font-size:13px}figure{margin:8px 0}figure svg{max-width:100%;height:auto}
nav a{margin-right:14px}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def rel(path: str, root: str) -> str:
    return os.path.relpath(path, root)


# ----- the numbers: make_tables' CSV rows --------------------------------------------------------


def csv_pairs(csv_rows: list[dict]) -> list[tuple[dict, dict]]:
    """(raw row, the row as make_tables' CSV writes it) for every CSV row, in make_tables' order."""
    text_rows = list(csv.DictReader(io.StringIO(render_csv(csv_rows))))
    return list(zip(csv_rows, text_rows))


def key_attrs(text: dict, field: str) -> str:
    """The data attributes that name one number of the page by its CSV row and column."""
    attrs = " ".join(f'data-{k}="{esc(text[k])}"' for k in KEY_FIELDS)
    return f'{attrs} data-field="{field}" data-value="{esc(text[field])}"'


# ----- which runs are behind a CSV row --------------------------------------------------------------


class Evidence:
    """Finds the runs behind a CSV row among the scanned runs (the rows' names as make_tables gives them)."""

    def __init__(self, runs: list[Run]):
        self.by_path = {os.path.normpath(os.path.abspath(r.path)): r for r in runs}
        self.by_row: dict[tuple, list[Run]] = {}  # (task, row name, model) -> runs: one lookup per number
        for r in runs:
            name = dg_row_name(r) if r.task == "dg" else r.row_name
            self.by_row.setdefault((r.task, name, r.backbone), []).append(r)

    def row(self, tasks: tuple[str, ...], method: str, model: str) -> list[Run]:
        return [r for task in tasks for r in self.by_row.get((task, method, model), [])]

    def groups(self, raw: dict) -> list[tuple[str, list[Run]]]:
        """[(label, runs)]: one group per dataset (and per half for base-to-novel HMs)."""
        table, method, model, dataset, shots, metric = (raw[k] for k in KEY_FIELDS)
        if table == "few_shot":
            chosen = [r for r in self.row(("few_shot",), method, model) if table_k(r) == shots]
            return by_dataset(chosen, None if dataset == "average" else dataset)
        if table == "base2new":
            tasks = {"base": ("base",), "novel": ("new",)}.get(metric, ("base", "new"))
            chosen = [r for r in self.row(tasks, method, model)
                      if r.shots == shots and (dataset == "average" or r.dataset == dataset)]
            if len(tasks) == 1:
                return by_dataset(chosen, None)
            halves = {"base": "base", "new": "novel"}
            return by_dataset(chosen, None, lambda r: f"{r.dataset} {halves[r.task]}")
        if table.startswith("dg from "):
            source = table[len("dg from "):]
            targets = [r for r in self.row(("dg",), method, model) if r.shots == shots and r.identity.task == source]
            sources = {}
            for r in targets:
                found = source_run(r, self.by_path) if r.ok else None
                if found is not None:
                    sources.setdefault(found.path, found)
            id_group = [(f"{source} (source)", sorted(sources.values(), key=lambda r: r.path))] if sources else []
            if metric == "in_distribution":
                return id_group
            if metric == "accuracy":
                return by_dataset(targets, dataset)
            return (id_group if metric == "hm" else []) + by_dataset(targets, None)
        return []


def by_dataset(runs: list[Run], dataset: str | None, label=lambda r: r.dataset) -> list[tuple[str, list[Run]]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if dataset is None or r.dataset == dataset:
            groups.setdefault(label(r), []).append(r)
    return sorted(groups.items())


def seeds_table(groups: list[tuple[str, list[Run]]], root: str) -> str:
    """The per-seed values behind one number: one line per dataset, one column per seed."""
    seeds = sorted({r.seed for _, runs in groups for r in runs})
    if not seeds:
        return '<p class="muted">no run behind this number</p>'
    head = "".join(f"<th>seed {s}</th>" for s in seeds)
    lines = []
    for label, runs in groups:
        ok, duplicates = first_per_seed(runs)
        failed = {r.seed: r for r in runs if not r.ok}
        cells = []
        for s in seeds:
            if s in ok:
                r = ok[s]
                flag = '<span class="flag flag-collapsed">C</span>' if r.collapsed else ""
                cells.append(f'<td class="num" title="{esc(rel(r.path, root))}">{r.accuracy:.2f}{flag}</td>')
            elif s in failed:
                cells.append(f'<td title="{esc(rel(failed[s].path, root))}"><span class="flag flag-failed">'
                             f'{esc(failed[s].state or "failed")}</span></td>')
            else:
                cells.append("<td>-</td>")
        lines.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
    return f'<table class="seeds"><tr><th></th>{head}</tr>{"".join(lines)}</table>'


# ----- one number ---------------------------------------------------------------------------------------


def number_td(pair: tuple[dict, dict] | None, evidence: Evidence | None, root: str, field: str = "mean") -> str:
    """A table cell for one CSV number: the value, std, seeds and flags; the per-seed values behind it."""
    if pair is None:
        return "<td>-</td>"
    raw, text = pair
    value = raw[field]
    attrs = key_attrs(text, field)
    if field == "diff":
        shown = "-" if value is None else f"{value:+.2f}"
        return f'<td class="num" {attrs}><span class="v">{shown}</span></td>'
    if field == "paper" or raw["seeds"] is None and field == "mean":
        shown = "-" if value is None else f"{value:.2f}"
        inner = f'<span class="v">{shown}</span>'
    else:
        shown = "missing" if value is None else f"{value:.2f}"
        inner = f'<span class="v">{shown}</span>'
        if raw["std"] is not None:
            inner += f" ± {raw['std']:.2f}"
        if raw["complete"] is False:
            inner += (f' ({raw["seeds"]}/{raw["expected_seeds"]})<span class="flag flag-incomplete" '
                      'title="not every seed of the grid finished">*</span>')
        elif raw["seeds"] is not None:
            inner += f" ({raw['seeds']})"
        if raw["collapsed_runs"]:
            inner += (f'<span class="flag flag-collapsed" title="{raw["collapsed_runs"]} seed(s) collapsed onto one '
                      'class">C</span>')
    if evidence is None or field != "mean":
        return f'<td class="num" {attrs}>{inner}</td>'
    behind = seeds_table(evidence.groups(raw), root)
    return f'<td class="num" {attrs}><details><summary>{inner}</summary>{behind}</details></td>'


def pivot(pairs: list[tuple[dict, dict]], row_key, col_key) -> tuple[list, dict]:
    """(row keys in make_tables' order, {(row key, column key): pair})."""
    order, cells = [], {}
    for pair in pairs:
        rk = row_key(pair[0])
        if rk not in order:
            order.append(rk)
        cells[(rk, col_key(pair[0]))] = pair
    return order, cells


def grid_table(headers: list[str], order: list, cells: dict, columns: list, evidence, root: str,
               lead=lambda rk: rk) -> str:
    """One HTML table: the row key's values (or `lead(row key)`), then one number per column."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for rk in order:
        lead_cells = "".join(f"<td>{esc(v)}</td>" for v in lead(rk))
        numbers = "".join(number_td(cells.get((rk, c)), evidence, root) for c in columns)
        body.append(f"<tr>{lead_cells}{numbers}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


# ----- sections -----------------------------------------------------------------------------------------


def few_shot_section(pairs, evidence, root) -> str:
    rows = [p for p in pairs if p[0]["table"] == "few_shot"]
    if not rows:
        return ""
    shots = sorted({p[0]["shots"] for p in rows})
    heads = [k_label(k) for k in shots]
    avg = [p for p in rows if p[0]["dataset"] == "average"]
    per = [p for p in rows if p[0]["dataset"] != "average"]
    n = max((p[0]["datasets"] or 0 for p in avg), default=0)
    order, cells = pivot(avg, lambda r: (r["method"], r["model"]), lambda r: r["shots"])

    def with_datasets(rk):  # as make_tables: the most datasets any K of the row averages
        return rk + (max(cells[(rk, k)][0]["datasets"] or 0 for k in shots if (rk, k) in cells),)

    out = ['<h2 id="few-shot">Few-shot accuracy</h2>',
           f"<h3>Average over {n} dataset(s), mean ± std over seeds (n seeds)</h3>",
           grid_table(["Method", "Model", "Datasets"] + heads, order, cells, shots, evidence, root, with_datasets)]
    order, cells = pivot(per, lambda r: (r["method"], r["model"], r["dataset"]), lambda r: r["shots"])
    out += ["<h3>Per dataset, mean ± std over seeds (n seeds)</h3>",
            grid_table(["Method", "Model", "Dataset"] + heads, order, cells, shots, evidence, root)]
    return "\n".join(out)


def base2new_section(pairs, evidence, root) -> str:
    rows = [p for p in pairs if p[0]["table"] == "base2new"]
    if not rows:
        return ""
    avg = [p for p in rows if p[0]["dataset"] == "average"]
    per = [p for p in rows if p[0]["dataset"] != "average"]
    order, cells = pivot(avg, lambda r: (r["method"], r["model"], r["shots"]), lambda r: r["metric"])
    out = ['<h2 id="base2new">Base-to-novel</h2>',
           "<p>Both HM conventions that published tables mix: the HM of the averaged base and novel accuracies, "
           "and the mean of the per-dataset HMs.</p>",
           "<h3>Average over datasets</h3>",
           grid_table(["Method", "Model", "K"] + [h for _, h in B2N_AVERAGE], order, cells,
                      [m for m, _ in B2N_AVERAGE], evidence, root)]
    order, cells = pivot(per, lambda r: (r["method"], r["model"], r["shots"], r["dataset"]), lambda r: r["metric"])
    out += ["<h3>Per dataset (HM of the seed-mean base and novel)</h3>",
            grid_table(["Method", "Model", "K", "Dataset"] + [h for _, h in B2N_DATASET], order, cells,
                       [m for m, _ in B2N_DATASET], evidence, root)]
    return "\n".join(out)


def dg_section(pairs, evidence, root) -> str:
    rows = [p for p in pairs if p[0]["table"].startswith("dg from ")]
    if not rows:
        return ""
    out = ['<h2 id="dg">Domain generalisation</h2>',
           "<p>Trained on the source, tested on each target without retraining: ID is the source's test accuracy, "
           "OOD the mean over the targets, HM the mean over seeds of the per-seed HM.</p>"]
    for table in dict.fromkeys(p[0]["table"] for p in rows):
        chosen = [p for p in rows if p[0]["table"] == table]
        targets = sorted({p[0]["dataset"] for p in chosen if p[0]["metric"] == "accuracy"})
        order, cells = pivot(chosen, lambda r: (r["method"], r["model"], r["shots"]),
                             lambda r: r["dataset"] if r["metric"] == "accuracy" else r["metric"])
        out += [f"<h3>From {esc(table[len('dg from '):])}</h3>",
                grid_table(["Method", "Model", "K"] + [h for _, h in DG_FIXED] + targets, order, cells,
                           [m for m, _ in DG_FIXED] + targets, evidence, root)]
    return "\n".join(out)


def paper_section(pairs, root) -> str:
    rows = [p for p in pairs if p[0]["paper"] is not None]
    if not rows:
        return ""
    body = []
    for raw, text in rows:
        metric = raw["metric"].replace("_", " ")
        lead = [raw["method"], PAPER_NAMES.get(raw["method"], raw["method"]), raw["model"],
                "few-shot" if raw["table"] == "few_shot" else "base-to-novel", k_label(raw["shots"]), metric]
        body.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in lead)
                    + "".join(number_td((raw, text), None, root, f) for f in ("mean", "paper", "diff")) + "</tr>")
    twins = sorted({p[0]["model"] for p in rows if paper_backbone(p[0]["model"])[1]})
    note = (f'<p class="banner">{esc(", ".join(twins))}: tiny random twin(s), set beside the published numbers of '
            "the full model only to show the layout.</p>") if twins else ""
    head = "".join(f"<th>{h}</th>" for h in ("Method", "Paper name", "Model", "Protocol", "K", "Metric", "Ours",
                                             "Paper", "Ours − paper"))
    return "\n".join(['<h2 id="paper">The paper\'s numbers</h2>', note,
                      "<p>The paper's averages (11 datasets few-shot, 10 base-to-novel); each HM is compared under "
                      "the convention the paper appears to use.</p>",
                      f"<table><tr>{head}</tr>{''.join(body)}</table>"])


def settings_section(runs: list[Run]) -> str:
    """For the rows of one method (and model, protocol), the number-changing settings that differ between
    them, compared on runs of the same dataset and K."""
    groups: dict[tuple, dict[str, dict[tuple, dict]]] = {}
    for r in runs:
        if not r.config or r.task not in ("few_shot", "base", "new"):
            continue
        key = (r.task, r.method, r.backbone)
        per_row = groups.setdefault(key, {}).setdefault(r.row_name, {})
        per_row.setdefault((r.dataset, r.shots), number_settings(r.config))
    parts = []
    for (task, method, backbone), rows in groups.items():
        names = list(rows)
        if len(names) < 2:
            continue
        keys: set[str] = set()
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                for where in set(rows[a]) & set(rows[b]):
                    keys |= set(setting_differences(rows[a][where], rows[b][where]))
        keys = sorted(keys)
        if not keys:
            continue
        head = "".join(f"<th>{esc(k)}</th>" for k in ["Row"] + keys)
        body = []
        for name in names:
            values = [" / ".join(sorted({str(c.get(k, "-")) for c in rows[name].values()})) for k in keys]
            body.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in [name] + values) + "</tr>")
        parts.append(f"<h3>{esc(method)} ({esc(backbone)}), {esc(task.replace('_', '-'))}</h3>"
                     f"<table><tr>{head}</tr>{''.join(body)}</table>")
    if not parts:
        return ""
    return "\n".join(['<h2 id="settings">Settings that differ between rows of one method</h2>',
                      "<p>Number-changing keys (locations aside) whose values differ between rows of the same "
                      "method and model, compared on runs of the same dataset and K.</p>"] + parts)


def attention_section(runs: list[Run], root: str) -> str:
    failed = [r for r in runs if not r.ok]
    collapsed = [r for r in runs if r.ok and r.collapsed]
    if not failed and not collapsed:
        return '<h2 id="attention">Failed and collapsed runs</h2><p>None: every run finished and none collapsed.</p>'
    out = ['<h2 id="attention">Failed and collapsed runs</h2>',
           f"<p>{len(failed)} run(s) without a usable results.json (failed, interrupted or still running) and "
           f"{len(collapsed)} collapsed run(s) (every test image given the same class), each with the end of its "
           "log.</p>",
           "<table><tr><th>State</th><th>Run folder</th><th>Why</th><th>End of log.txt</th></tr>"]
    for r in failed:
        status = run_status(r.path)
        tail = status.log_tail or log_tail(r.path, TAIL_LINES)
        word = esc(r.state or "failed")  # failed, or interrupted (resumable) or still running
        out.append(f'<tr class="failed" data-run-state="{word}" data-path="{esc(rel(r.path, root))}">'
                   f'<td><span class="flag flag-failed">{word}</span></td><td>{esc(rel(r.path, root))}</td>'
                   f"<td>{esc(r.failure)}</td><td>{tail_html(tail)}</td></tr>")
    for r in collapsed:
        counts = r.record.get("prediction_counts")
        why = f"accuracy {r.accuracy:.2f}%" + (f"; predictions per class {counts}" if counts else "")
        out.append(f'<tr class="collapsed" data-run-state="collapsed" data-path="{esc(rel(r.path, root))}">'
                   f'<td><span class="flag flag-collapsed">collapsed</span></td><td>{esc(rel(r.path, root))}</td>'
                   f"<td>{esc(why)}</td><td>{tail_html(log_tail(r.path, TAIL_LINES))}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def tail_html(lines: list[str]) -> str:
    if not lines:
        return '<span class="muted">no log.txt</span>'
    return f"<pre>{esc(chr(10).join(lines[-TAIL_LINES:]))}</pre>"


# ----- figures ------------------------------------------------------------------------------------------


def inline_svg(path: str) -> str:
    """An SVG file as markup to place in the page: the XML prolog and the metadata block left out."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _svg_settings():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font is needed to read the page
    matplotlib.rcParams["svg.hashsalt"] = "report"  # the same ids on every build


def overview_figure(root: str, paper: bool) -> str:
    from results.plots import plot_results

    _svg_settings()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "overview.svg")
        try:
            plot_results(root, out, paper=paper)
        except FileNotFoundError:
            return ""
        svg = inline_svg(out)
    return ('<h2 id="figures">Accuracy against K, and base-to-novel</h2>'
            "<p>Averaged over datasets and per dataset (tools/plot_results.py's figure, every seed found); "
            "bands: std over seeds; x: a point whose cell misses a seed.</p>"
            f'<figure class="plot">{svg}</figure>')


def training_curves(runs: list[Run], root: str, max_figures: int) -> str:
    """Curves from the TensorBoard event files in the run folders: one figure per row, model, K and task,
    one panel per tag, one line per dataset and seed."""
    trained = [r for r in runs if not r.record.get("eval_only")]
    head = '<h2 id="curves">Training curves (TensorBoard event files)</h2>'
    if not trained:
        return ""
    try:
        import tensorboard  # noqa: F401

        from engine.tracking import EVENT_GLOB, event_scalars
    except ImportError:
        return head + "<p>The tensorboard package is not installed (pip install tensorboard), so no curves.</p>"
    with_events: dict[tuple, list[Run]] = {}
    without = []
    for r in trained:
        if glob.glob(os.path.join(glob.escape(r.path), EVENT_GLOB)):
            name = r.row_name if r.task != "dg" else dg_row_name(r)
            with_events.setdefault((name, r.backbone, r.task, r.shots), []).append(r)
        else:
            without.append(r)
    out = [head]
    if with_events:
        out.append("<p>One panel per scalar tag; colour: dataset; one line per seed.</p>")
    keys = list(with_events)[:max_figures]
    for key in keys:
        out.append(curve_figure(key, with_events[key], event_scalars))
    if len(with_events) > len(keys):
        left = [f"{n} ({b}), {t}, K={k}" for n, b, t, k in list(with_events)[len(keys):]]
        out.append(f"<p>{len(left)} more figure(s) not drawn (--max-curves): {esc('; '.join(left))}</p>")
    if without:
        items = "".join(f"<li>{esc(rel(r.path, root))}</li>" for r in without)
        out.append(f"<details><summary>{len(without)} run(s) have no event files (TRAIN.REPORT_TO without "
                   f"tensorboard, or made before curves were written)</summary><ul>{items}</ul></details>")
    return "\n".join(out)


def curve_figure(key: tuple, runs: list[Run], event_scalars) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    _svg_settings()
    name, backbone, task, shots = key
    series = {(r.dataset, r.seed): event_scalars(r.path) for r in sorted(runs, key=lambda r: (r.dataset, r.seed))}
    stage = {"train": 0, "val": 1, "test": 2}  # training terms first, the loss leading, then val, then test
    tags = sorted({t for s in series.values() for t in s},
                  key=lambda t: (stage.get(t.split("/")[0], 3), t != "train/loss", t))
    if not tags:
        return ""
    datasets = sorted({d for d, _ in series})
    palette = plt.get_cmap("tab10").colors
    color = {d: palette[i % len(palette)] for i, d in enumerate(datasets)}
    ncols = min(4, len(tags))
    nrows = -(-len(tags) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.4 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    for ax, tag in zip(axes.flat, tags):
        for (dataset, _seed), scalars in series.items():
            points = scalars.get(tag)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) == 1 else None, markersize=4, linewidth=1.2,
                        color=color[dataset], alpha=0.85, label=dataset)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=color[d], linewidth=2) for d in datasets]
    fig.legend(handles, datasets, loc="outside lower center", ncols=min(6, len(datasets)), fontsize=8)
    what = {"few_shot": "few-shot", "base": "base-to-novel (base)", "new": "base-to-novel (novel)"}.get(task, task)
    fig.suptitle(f"{name} ({backbone}), {what}, {k_label(shots)}", fontsize=10)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "curves.svg")
        fig.savefig(out)
        plt.close(fig)
        svg = inline_svg(out)
    return f'<figure class="plot curves">{svg}</figure>'


# ----- the page -----------------------------------------------------------------------------------------


def build_report(root: str, paper: bool = True, seeds: list[int] | None = None, title: str | None = None,
                 max_curves: int = 24) -> str:
    """The HTML page; raises FileNotFoundError when there is nothing to tabulate (as make_tables)."""
    report = build_tables(root, paper, seeds)
    runs, _ = select_seeds(scan(root), seeds)
    split_settings(runs)  # row names as make_tables gives them
    pairs = csv_pairs(report.csv_rows)
    evidence = Evidence(runs)
    finished = sum(r.ok for r in runs)
    interrupted = sum(not r.ok and r.state == "interrupted" for r in runs)
    failed = len(runs) - finished - interrupted
    collapsed = sum(r.ok and r.collapsed for r in runs)
    twins = sorted({r.backbone for r in runs if paper_backbone(r.backbone)[1]})
    heading = title or f"Results: {os.path.basename(os.path.abspath(root))}"
    parts = [few_shot_section(pairs, evidence, root), base2new_section(pairs, evidence, root),
             dg_section(pairs, evidence, root), paper_section(pairs, root) if paper else "",
             overview_figure(root, paper), settings_section(runs), attention_section(runs, root),
             training_curves(runs, root, max_curves)]
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    parts.append(f'<h2 id="notes">Notes (as make_tables prints them)</h2><ul>{notes}</ul>')
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in sections_present(parts))
    banner = (f'<p class="banner">{esc(", ".join(twins))}: tiny random twin(s) on synthetic data; the numbers show '
              "the pipeline, not the methods.</p>") if twins else ""
    summary = (f'<p class="muted">{len(runs)} run folder(s) under {esc(root)}: {finished} finished '
               f"({collapsed} collapsed), {failed} failed"
               + (f", {interrupted} interrupted (rerunning resumes them)" if interrupted else "")
               + ". Every number is a row of "
               "<code>python tools/make_tables.py ROOT --format csv</code>; click a mean for the seeds behind it."
               "</p>")
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(heading)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{esc(heading)}</h1>{summary}{banner}<nav>{nav}</nav>\n"
            f"{body}\n</body></html>\n")


def sections_present(parts: list[str]) -> list[tuple[str, str]]:
    found = []
    for part in parts:
        match = re.match(r'<h2 id="([^"]+)">(.*?)</h2>', part)
        if match:
            found.append((match.group(1), html.unescape(match.group(2))))
    return found


# ----- a headless browser (the test and --screenshot) ------------------------------------------------------

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The system Chromium (Debian's `chromium` package), or None."""
    import shutil

    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_missing() -> str | None:
    """Why no headless browser can be driven here (one line), or None when one can."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -r requirements.txt)"
    if find_browser() is None:
        return "no chromium on PATH (apt-get install -y chromium, as .ci/run does)"
    return None


def open_browser(playwright, profile_dir: str, width: int = 1280, height: int = 900):
    """A headless Chromium context on a fresh profile, launched from the system browser (never
    `playwright install`, which downloads one)."""
    return playwright.chromium.launch_persistent_context(
        profile_dir, executable_path=find_browser(), headless=True, args=BROWSER_ARGS,
        viewport={"width": width, "height": height}, offline=True)


def screenshot(html_path: str, png_path: str, width: int = 1100, height: int = 1400, colors: int = 96) -> str:
    """The top of the page as a small PNG (palette of `colors`), for docs."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    why = browser_missing()
    if why:
        raise RuntimeError(f"cannot take a screenshot: {why}")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = open_browser(p, profile, width, height)
        try:
            page = context.new_page()
            page.goto("file://" + os.path.abspath(html_path))
            raw = page.screenshot(full_page=False)
        finally:
            context.close()
    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=colors)
    image.save(png_path, optimize=True)
    return png_path
