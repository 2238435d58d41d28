"""tools/report.py: one self-contained HTML page whose every number is make_tables' CSV value, opened in a
real headless Chromium (the system browser, driven by playwright) on a hand-written tree of runs."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest
from make_tables import make_tables

from results.report import browser_missing, build_report, open_browser

TAG = "nctx4_cscFalse_ctpend"
MODEL = "TinyBiomedCLIP"
BASE_CONFIG = {"OPTIM.LR": 0.002, "OPTIM.MAX_EPOCH": 5, "TRAINER.BIOMEDCOOP.SCCM_LAMBDA": 1.0}


def write_run(root, sub, method, dataset, shots, seed, acc, counts=None, label="", subsample="all", config=None,
              **fields):
    tag = f"{TAG}_{label}" if label else TAG
    folder = os.path.join(root, sub, f"{method}_{MODEL}", tag, f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    record = {"method": method, "backbone": MODEL, "dataset": dataset, "num_shots": shots, "seed": seed,
              "subsample_classes": subsample, "fewshot_protocol": "balanced", "label": label, "accuracy": acc,
              "total": 10, "per_class_accuracy": {"a": acc, "b": acc}, "prediction_counts": counts or {"a": 5, "b": 5},
              "config": {"SEED": seed, "DATASET.NAME": dataset, "DATASET.NUM_SHOTS": shots,
                         **BASE_CONFIG, **(config or {})}, **fields}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)
    with open(os.path.join(folder, "log.txt"), "w") as f:
        f.write(f"epoch [5/5] loss 0.5\n=> result\n* accuracy: {acc:.2f}%\n")
    return folder


def write_events(folder, epochs=3):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=folder)
    for epoch in range(epochs):
        writer.add_scalar("train/loss", 2.0 / (epoch + 1), epoch)
        writer.add_scalar("train/lr", 0.002 * (epochs - epoch) / epochs, epoch)
    writer.add_scalar("test/acc", 55.0, epochs)
    writer.close()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Few-shot CoOp and BiomedCoOp (+ an ablation row) on two datasets, K 1 and 4, seeds 1-2; a collapsed
    seed, a crashed seed, base-to-novel CoOp, a DG target and event files for two runs."""
    root = str(tmp_path_factory.mktemp("report_runs"))
    accs = {"CoOp": 50.0, "BiomedCoOp": 60.0}
    for method, base in accs.items():
        for ds, shift in (("BTMRI", 0.0), ("BUSI", 7.5)):
            for k in (1, 4):
                for seed in (1, 2):
                    acc = base + shift + k + 1.25 * seed
                    counts = {"a": 10, "b": 0} if (method, ds, k, seed) == ("CoOp", "BTMRI", 1, 2) else None
                    folder = write_run(root, f"{ds.lower()}/shots_{k}", method, ds, k, seed, acc, counts=counts)
                    if ds == "BTMRI" and k == 4 and seed == 1:
                        write_events(folder)
    for seed in (1, 2):
        write_run(root, "btmri/shots_4", "BiomedCoOp", "BTMRI", 4, seed, 55.0 + seed, label="ce",
                  config={"TRAINER.BIOMEDCOOP.SCCM_LAMBDA": 0.0})
    crashed = os.path.join(root, "busi/shots_4", f"CoOp_{MODEL}", TAG, "seed3")
    os.makedirs(crashed)
    with open(os.path.join(crashed, "log.txt"), "w") as f:
        f.write("epoch [1/5] loss 1.2\nRuntimeError: CUDA out of memory <oops>\n")
    for seed in (1, 2):
        for half, task, acc in (("train_base", "base", 80.0 + seed), ("test_new", "new", 60.0 - seed)):
            write_run(root, f"base2new/{half}/btmri/shots_16", "CoOp", "BTMRI", 16, seed, acc, subsample=task)
        source = os.path.join(root, "btmri/shots_4", f"CoOp_{MODEL}", TAG, f"seed{seed}")
        write_run(root, "brisc/shots_4", "CoOp", "BRISC", 4, seed, 40.0 + 3 * seed, label="from_btmri",
                  eval_only=True, protocol="dg", source="BTMRI", target="BRISC",
                  config={"run.eval_only": True, "run.model_dir": source})
    return root


@pytest.fixture(scope="module")
def page_path(tree, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("report_page") / "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(build_report(tree))
    return path


def csv_values(tree) -> dict:
    rows = csv.DictReader(io.StringIO(make_tables(tree, "csv", paper=True)))
    return {tuple(r[k] for k in ("table", "method", "model", "dataset", "shots", "metric")): r for r in rows}


def test_page_is_self_contained_and_covers_every_section(page_path):
    text = open(page_path, encoding="utf-8").read()
    # nothing to fetch: no script, stylesheet, font or image by URL
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "@import" not in text and "url(http" not in text and "<script" not in text
    for anchor in ("few-shot", "base2new", "dg", "paper", "figures", "settings", "attention", "curves", "notes"):
        assert f'id="{anchor}"' in text, anchor
    # both HM conventions, the ablation row's differing key, the crash's log tail (escaped)
    assert "HM of averages" in text and "mean of per-dataset HMs" in text
    assert "TRAINER.BIOMEDCOOP.SCCM_LAMBDA" in text and "BiomedCoOp [ce]" in text
    assert "CUDA out of memory &lt;oops&gt;" in text
    assert "run(s) have no event files" in text


def test_every_number_is_make_tables_csv_value(tree, page_path):
    """Without a browser: each marked number's data-value is the CSV text, and every CSV mean is in the page."""
    text = open(page_path, encoding="utf-8").read()
    expected = csv_values(tree)
    marked = re.findall(r'data-table="([^"]*)" data-method="([^"]*)" data-model="([^"]*)" data-dataset="([^"]*)" '
                        r'data-shots="([^"]*)" data-metric="([^"]*)" data-field="([^"]*)" data-value="([^"]*)"', text)
    assert len(marked) > 40
    import html

    seen = set()
    for *key, field, value in marked:
        key = tuple(html.unescape(k) for k in key)
        assert expected[key][field] == value, (key, field)
        seen.add(key)
    assert {k for k, r in expected.items() if r["mean"]} <= seen


def test_missing_results_folder_is_one_line(tmp_path, capsys):
    import report

    assert report.main([str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results.json under") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_cli_options_and_a_quick_help(tree, tmp_path, capsys):
    import subprocess
    import sys

    import report

    out = tmp_path / "page.html"
    assert report.main([tree, "--out", str(out), "--no-paper", "--max-curves", "1", "--title", "Demo <1>"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "<title>Demo &lt;1&gt;</title>" in text and 'id="paper"' not in text
    assert text.count('<figure class="plot curves">') == 1 and "1 more figure(s) not drawn (--max-curves)" in text
    assert f"wrote {out}" in capsys.readouterr().out
    code = ("import runpy, sys\nsys.argv = ['report.py', '--help']\nsys.path.insert(0, 'tools')\ntry:\n"
            "    runpy.run_path('tools/report.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "usage:" in done.stdout
    assert not {"torch", "matplotlib", "playwright"} & {m.split(".")[0] for m in eval(done.stdout.rsplit("\n", 2)[-2])}


def test_report_opens_in_headless_chromium(tree, page_path, tmp_path):
    why = browser_missing()
    if why:
        pytest.skip(f"no headless browser here: {why}")
    from playwright.sync_api import sync_playwright

    expected = csv_values(tree)
    url = "file://" + os.path.abspath(page_path)
    with sync_playwright() as p:
        context = open_browser(p, str(tmp_path / "profile"), 1280, 900)
        try:
            page = context.new_page()
            requests, problems = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url, wait_until="load")
            numbers = page.eval_on_selector_all("[data-field]", """els => els.map(e => ({
                key: [e.dataset.table, e.dataset.method, e.dataset.model, e.dataset.dataset, e.dataset.shots,
                      e.dataset.metric], field: e.dataset.field, value: e.dataset.value,
                shown: e.querySelector('.v') ? e.querySelector('.v').innerText : null}))""")
            flagged = page.eval_on_selector_all("[data-run-state=collapsed]", "els => els.map(e => e.dataset.path)")
            flags_in_tables = page.locator("td[data-field=mean] .flag-collapsed").count()
            # open one mean: its per-seed table becomes visible
            first = page.locator("td[data-table=few_shot][data-dataset=BTMRI] details").first
            first.locator("summary").click()
            seeds_visible = first.locator("table.seeds").is_visible()
            figure = page.locator("#figures ~ figure svg").first
            figure.scroll_into_view_if_needed()
            shot = figure.screenshot()
        finally:
            context.close()

    assert requests == [url] and problems == []
    assert len(numbers) > 40
    for n in numbers:
        row = expected[tuple(n["key"])]
        assert n["value"] == row[n["field"]], n
        if n["shown"] not in (None, "-", "missing"):
            # what a reader sees is the CSV number to two decimals (signed for a difference)
            assert abs(float(n["shown"]) - float(row[n["field"]])) <= 0.005 + 1e-9, n
    assert flagged == [os.path.join("btmri", "shots_1", f"CoOp_{MODEL}", TAG, "seed2")]
    assert flags_in_tables >= 2 and seeds_visible
    from PIL import Image

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.width > 300 and len(image.getcolors(maxcolors=1 << 20)) > 20  # drawn lines, not a blank box


def test_the_seeds_behind_each_dataset_mean_are_the_ones_it_averages(tree):
    """Evidence finds, for every per-dataset number, exactly the runs whose seeds make its mean."""
    from results.aggregate import first_per_seed, split_settings
    from results.records import scan
    from results.report import Evidence
    from results.tables import build_tables

    runs = scan(tree)
    split_settings(runs)
    evidence = Evidence(runs)
    checked = 0
    for raw in build_tables(tree).csv_rows:
        if raw["dataset"] in ("average", "targets") or raw["seeds"] is None or raw["mean"] is None:
            continue
        (_, behind), = evidence.groups(raw)
        values = [r.accuracy for r in first_per_seed(behind)[0].values()]
        assert len(values) == raw["seeds"] and sum(values) / len(values) == pytest.approx(raw["mean"]), raw
        checked += 1
    assert checked == 13  # 9 few-shot, base and novel, DG source and target
    # the crashed seed sits behind its cell as a failed run, the collapsed one as collapsed
    raw = {"table": "few_shot", "method": "CoOp", "model": MODEL, "dataset": "BUSI", "shots": 4, "metric": "accuracy"}
    assert [r.seed for r in evidence.groups(raw)[0][1] if not r.ok] == [3]
    raw.update(dataset="BTMRI", shots=1)
    assert [r.seed for r in evidence.groups(raw)[0][1] if r.collapsed] == [2]
