"""make_tables arithmetic on hand-written results.json trees: means, stds, both HMs, flags, formats."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from make_tables import make_tables

from results.aggregate import harmonic_mean
from results.records import is_collapsed, scan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "nctx4_cscFalse_ctpend"


def write_run(root, sub, method, dataset, shots, seed, acc, subsample="all", counts=None, backbone="BiomedCLIP"):
    folder = os.path.join(root, sub, f"{method}_{backbone}", TAG, f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    record = {
        "method": method, "backbone": backbone, "dataset": dataset, "num_shots": shots, "seed": seed,
        "subsample_classes": subsample, "accuracy": acc, "total": 10,
        "per_class_accuracy": {"a": acc, "b": acc},
        "prediction_counts": counts or {"a": 5, "b": 5},
    }
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)
    return folder


@pytest.fixture()
def grid(tmp_path):
    """CoOp on two datasets, K=4, seeds 1-3, except BUSI seed 3 which crashed (log.txt only)."""
    root = str(tmp_path)
    accs = {("BTMRI", 1): 60.0, ("BTMRI", 2): 62.0, ("BTMRI", 3): 67.0,
            ("BUSI", 1): 40.0, ("BUSI", 2): 50.0}
    for (ds, seed), acc in accs.items():
        write_run(root, f"{ds.lower()}/shots_4", "CoOp", ds, 4, seed, acc)
    crashed = os.path.join(root, "busi/shots_4/CoOp_BiomedCLIP", TAG, "seed3")
    os.makedirs(crashed)
    open(os.path.join(crashed, "log.txt"), "w").write("epoch [1/50]\n")
    return root


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def pick(rows, **want):
    hits = [r for r in rows if all(r[k] == str(v) for k, v in want.items())]
    assert len(hits) == 1, (want, hits)
    return hits[0]


def test_few_shot_means_stds_and_failed_seed(grid):
    rows = csv_rows(make_tables(grid, "csv"))
    btmri = pick(rows, table="few_shot", dataset="BTMRI", shots=4)
    assert float(btmri["mean"]) == pytest.approx(63.0)  # (60 + 62 + 67) / 3
    assert float(btmri["std"]) == pytest.approx((26 / 3) ** 0.5, abs=1e-4)  # deviations -3, -1, 4
    busi = pick(rows, table="few_shot", dataset="BUSI", shots=4)
    assert (busi["mean"], busi["std"], busi["seeds"], busi["complete"]) == ("45.0000", "5.0000", "2", "False")
    avg = pick(rows, table="few_shot", dataset="average", shots=4)
    # mean of the per-dataset means; std over the seeds both datasets have: (50, 56) -> 3
    assert float(avg["mean"]) == pytest.approx((63.0 + 45.0) / 2)
    assert float(avg["std"]) == pytest.approx(3.0)
    assert avg["seeds"] == "2" and avg["complete"] == "False"

    text = make_tables(grid, "terminal")
    assert "54.00 ± 3.00 (2/3) *" in text
    assert "63.00 ± 2.94 (3)" in text
    assert "failed: " in text and "busi/shots_4/CoOp_BiomedCLIP" in text and "no results.json" in text


def test_missing_seed_is_flagged_not_silently_averaged(grid):
    text = make_tables(grid, "terminal", seeds=[1, 2, 3, 4])
    assert "missing: CoOp_BiomedCLIP K=4 BTMRI: seed 4" in text
    assert "63.00 ± 2.94 (3/4) *" in text


def test_base_to_novel_both_hm_conventions_and_collapse_flag(tmp_path):
    root = str(tmp_path)
    # Per dataset (seed means): A: base 80, novel 40 -> HM 53.333; B: base 60, novel 60 -> HM 60.
    values = {("A", "base"): (78.0, 82.0), ("A", "new"): (40.0, 40.0), ("B", "base"): (60.0, 60.0),
              ("B", "new"): (58.0, 62.0)}
    for (ds, task), accs in values.items():
        for seed, acc in enumerate(accs, start=1):
            phase = "train_base" if task == "base" else "test_new"
            counts = {"a": 10, "b": 0} if (ds, task, seed) == ("A", "new", 2) else None
            write_run(root, f"base2new/{phase}/{ds.lower()}/shots_16", "BiomedCoOp", ds, 16, seed, acc, task, counts)
    rows = csv_rows(make_tables(root, "csv", paper=True))
    hm_a = harmonic_mean(80.0, 40.0)
    assert hm_a == pytest.approx(160 / 3)
    assert float(pick(rows, dataset="A", metric="hm")["mean"]) == pytest.approx(hm_a, abs=1e-4)
    assert float(pick(rows, dataset="average", metric="base")["mean"]) == pytest.approx(70.0)
    assert float(pick(rows, dataset="average", metric="novel")["mean"]) == pytest.approx(50.0)
    hm_of_avgs = pick(rows, dataset="average", metric="hm_of_averages")
    assert float(hm_of_avgs["mean"]) == pytest.approx(2 * 70 * 50 / 120, abs=1e-4)  # 58.333
    # The paper's BiomedCoOp HM (75.07) is an HM of averages: the difference sits on that row.
    assert float(hm_of_avgs["diff"]) == pytest.approx(2 * 70 * 50 / 120 - 75.07, abs=1e-4)
    mean_hms = pick(rows, dataset="average", metric="mean_of_per_dataset_hms")
    assert float(mean_hms["mean"]) == pytest.approx((hm_a + 60.0) / 2, abs=1e-4)  # 56.667
    assert mean_hms["paper"] == ""

    text = make_tables(root, "terminal", paper=True)
    assert "58.33" in text and "56.67" in text and "HM of averages" in text
    assert "C = a seed's predictions collapsed" in text
    assert "collapsed onto one class" in text and os.path.join("test_new", "a") in text


def test_every_format_renders_the_same_numbers(grid):
    md = make_tables(grid, "markdown")
    assert "| CoOp " in md and "63.00 ± 2.94 (3)" in md and md.count("### ") == 2
    latex = make_tables(grid, "latex")
    assert "\\begin{tabular}" in latex and "63.00 $\\pm$ 2.94 (3)" in latex and "±" not in latex.split("%")[-1]
    terminal = make_tables(grid, "terminal")
    assert "== Few-shot accuracy" in terminal


def test_paper_column_and_zero_shot_mapping(tmp_path):
    root = str(tmp_path)
    for seed in (1, 2, 3):
        write_run(root, "btmri/shots_16", "BiomedCoOp", "BTMRI", 16, seed, 70.0 + seed)
        write_run(root, "btmri/shots_0", "ZeroShot", "BTMRI", 0, seed, 40.0)
    rows = csv_rows(make_tables(root, "csv", paper=True))
    ours = pick(rows, method="BiomedCoOp", dataset="average")
    assert float(ours["paper"]) == 72.42 and float(ours["diff"]) == pytest.approx(72.0 - 72.42)
    zero = pick(rows, method="ZeroShot", dataset="average")
    assert float(zero["paper"]) == 42.05
    text = make_tables(root, "terminal", paper=True)
    assert "zero-shot" in text and "-0.42" in text and "Standard LP" not in text


def test_collapse_detection_uses_prediction_counts_then_per_class_pattern():
    assert is_collapsed({"total": 10, "prediction_counts": {"a": 10, "b": 0}})
    assert not is_collapsed({"total": 10, "prediction_counts": {"a": 9, "b": 1}})
    assert is_collapsed({"per_class_accuracy": {"a": 0.0, "b": 100.0, "c": 0.0}})
    assert not is_collapsed({"per_class_accuracy": {"a": 50.0, "b": 100.0}})


def test_random_weight_runs_never_share_a_row_with_real_ones(tmp_path):
    root = str(tmp_path)
    write_run(root, "btmri/shots_1", "CoOp", "BTMRI", 1, 1, 50.0)
    folder = write_run(str(tmp_path / "r"), "btmri/shots_1", "CoOp", "BTMRI", 1, 1, 20.0)
    record = json.load(open(os.path.join(folder, "results.json")))
    record["pretrained"] = False
    json.dump(record, open(os.path.join(folder, "results.json"), "w"))
    backbones = sorted(r.backbone for r in scan(root))
    assert backbones == ["BiomedCLIP", "BiomedCLIP-random"]
    assert "50.00" in make_tables(root, "terminal", paper=True) and "Ours - paper" in make_tables(root, paper=True)
    rows = csv_rows(make_tables(root, "csv", paper=True))
    assert pick(rows, model="BiomedCLIP-random", dataset="average")["paper"] == ""


def test_cli_formats_and_empty_folder(grid, tmp_path):
    tool = os.path.join(REPO, "tools", "make_tables.py")
    out = tmp_path / "t.md"
    proc = subprocess.run([sys.executable, tool, grid, "--format", "markdown", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "63.00 ± 2.94 (3)" in out.read_text()
    empty = subprocess.run([sys.executable, tool, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr.startswith("error: ")


def test_classification_report_counts_predictions_per_class():
    import torch

    from engine.evaluation import classification_report

    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    report = classification_report(logits, torch.tensor([0, 1, 2, 1]), ["a", "b", "c"])
    assert report["prediction_counts"] == {"a": 1, "b": 3, "c": 0}
    assert not is_collapsed(report)
    collapsed = classification_report(logits[[0, 1, 3]], torch.tensor([0, 1, 2]), ["a", "b", "c"])
    assert collapsed["prediction_counts"] == {"a": 0, "b": 3, "c": 0} and is_collapsed(collapsed)


@pytest.mark.parametrize("ext", [".png", ".svg"])
def test_plot_file_opens(grid, tmp_path, ext):
    from plot_results import plot_results

    write_run(grid, "base2new/train_base/btmri/shots_16", "CoOp", "BTMRI", 16, 1, 70.0, "base")
    write_run(grid, "base2new/test_new/btmri/shots_16", "CoOp", "BTMRI", 16, 1, 50.0, "new")
    out = plot_results(grid, str(tmp_path / f"fig{ext}"), paper=True)
    if ext == ".png":
        from PIL import Image

        with Image.open(out) as img:
            assert img.format == "PNG" and img.size[0] > 800 and img.size[1] > 600
    else:
        import xml.etree.ElementTree as ET

        text = open(out).read()
        ET.fromstring(text)  # well-formed
        assert "BTMRI" in text and "Base-to-novel" in text
    with pytest.raises(ValueError, match="must end in"):
        plot_results(grid, str(tmp_path / "fig.jpg"))


def test_reproduction_report_rows_averages_and_drift(tmp_path):
    from results.reproduction import render, report_rows

    ours, released = str(tmp_path / "ours"), str(tmp_path / "eval")
    for root, accs in ((ours, {("BTMRI", 1): 70.0, ("BTMRI", 2): 72.0, ("BUSI", 1): 60.0}),
                       (released, {("BTMRI", 1): 71.0, ("BTMRI", 2): 75.0, ("BUSI", 1): 60.5, ("BUSI", 2): 61.0})):
        for (ds, seed), acc in accs.items():
            write_run(root, f"{ds.lower()}/shots_16", "BiomedCoOp", ds, 16, seed, acc)
    write_run(ours, "base2new/test_new/btmri/shots_16", "BiomedCoOp", "BTMRI", 16, 1, 50.0, "new")
    write_run(released, "base2new/test_new/btmri/shots_16", "BiomedCoOp", "BTMRI", 16, 1, 55.0, "new")
    rows = report_rows(ours, released, tolerance=2.0)
    by_key = {(r["task"], r["dataset"], r["seed"]): r for r in rows}
    assert by_key[("few_shot", "BTMRI", 1)]["ours_minus_released"] == -1.0 and not by_key[("few_shot", "BTMRI", 1)][
        "flag"]
    assert by_key[("few_shot", "BTMRI", 2)]["flag"] == "drift"  # 72 vs 75
    assert by_key[("few_shot", "BUSI", 2)]["flag"] == "only released"
    avg = by_key[("few_shot", "average", "mean")]
    assert avg["ours"] == pytest.approx((71.0 + 60.0) / 2) and avg["released"] == pytest.approx((73.0 + 60.75) / 2)
    assert avg["paper"] == 72.42 and avg["ours_minus_paper"] == pytest.approx(65.5 - 72.42)
    assert "paper averages 11 datasets" in avg["flag"]
    novel = by_key[("new", "average", "mean")]
    assert novel["paper"] == 73.92 and novel["ours_minus_released"] == -5.0 and "drift" in novel["flag"]
    text = render(rows, "markdown")
    assert "| few_shot | BTMRI" in text and "drift" in text
    assert len(list(csv.DictReader(io.StringIO(render(rows, "csv"))))) == len(rows)
    assert "\\begin{tabular}" in render(rows, "latex")


# ----- one run identity (issue 25 items 1-5, 8; issue 21 item 7) ------------------------------------


def with_fields(folder, **fields):
    path = os.path.join(folder, "results.json")
    record = json.load(open(path))
    record.update(fields)
    json.dump(record, open(path, "w"))
    return folder


def epochs(n, dataset="BTMRI"):
    return {"config": {"OPTIM.MAX_EPOCH": n, "DATASET.NAME": dataset, "DATASET.ROOT": f"/data/{n}"}}


def test_two_configurations_in_one_cell_become_two_named_rows(tmp_path):
    root = str(tmp_path)
    for parent, n, accs in (("short", 50, (60.0, 62.0)), ("long", 200, (70.0, 74.0))):
        for seed, acc in enumerate(accs, start=1):
            with_fields(write_run(os.path.join(root, parent), "btmri/shots_4", "CoOp", "BTMRI", 4, seed, acc),
                        **epochs(n))
    rows = csv_rows(make_tables(root, "csv"))
    short = pick(rows, method="CoOp [OPTIM.MAX_EPOCH=50]", dataset="BTMRI")
    long = pick(rows, method="CoOp [OPTIM.MAX_EPOCH=200]", dataset="BTMRI")
    assert float(short["mean"]) == 61.0 and float(long["mean"]) == 72.0
    assert short["seeds"] == long["seeds"] == "2" and short["complete"] == "True"
    text = make_tables(root, "terminal")
    assert "rows are split by OPTIM.MAX_EPOCH" in text and "duplicate" not in text


def test_the_same_run_and_seed_in_two_folders_is_reported_not_overwritten(tmp_path):
    root = str(tmp_path)
    first = write_run(os.path.join(root, "a"), "btmri/shots_4", "CoOp", "BTMRI", 4, 1, 60.0)
    second = write_run(os.path.join(root, "b"), "btmri/shots_4", "CoOp", "BTMRI", 4, 1, 80.0)
    for folder in (first, second):
        with_fields(folder, **epochs(50))
    assert float(pick(csv_rows(make_tables(root, "csv")), dataset="BTMRI")["mean"]) == 60.0
    text = make_tables(root, "terminal")
    assert f"duplicate: {second} holds seed 1 of the same run as {first} (80.00% vs 60.00%)" in text


def test_base_to_novel_rows_carry_their_own_k(tmp_path):
    root = str(tmp_path)
    for k, (base, new) in ((4, (70.0, 50.0)), (16, (80.0, 60.0))):
        write_run(root, f"base2new/train_base/btmri/shots_{k}", "CoOp", "BTMRI", k, 1, base, "base")
        write_run(root, f"base2new/test_new/btmri/shots_{k}", "CoOp", "BTMRI", k, 1, new, "new")
    rows = csv_rows(make_tables(root, "csv"))
    assert float(pick(rows, table="base2new", dataset="BTMRI", metric="base", shots=4)["mean"]) == 70.0
    assert float(pick(rows, table="base2new", dataset="average", metric="novel", shots=16)["mean"]) == 60.0
    text = make_tables(root, "terminal", paper=True)
    table = text.split("== Base-to-novel accuracy (%) per dataset")[1]
    assert [line.split()[2] for line in table.splitlines() if line.startswith("CoOp")] == ["4", "16"]
    paper_row = next(line for line in text.splitlines() if line.startswith("CoOp") and "73.85" in line)
    assert paper_row.split()[2] == "16"  # the paper's 16-shot numbers sit beside the K=16 row only


def test_seeds_filter_lists_what_it_left_out(grid):
    stray = write_run(grid, "btmri/shots_4", "CoOp", "BTMRI", 4, 4, 99.0)
    text = make_tables(grid, "terminal", seeds=[1, 2, 3])
    assert "63.00 ± 2.94 (3)" in text  # seed 4 (99%) is not averaged in
    assert f"left out (seed 4 not in --seeds): {stray}" in text
    assert "Seed grid: 1 2 3 for every row (--seeds)." in text


def test_each_row_has_its_own_seed_grid_unless_seeds_is_given(grid):
    write_run(grid, "btmri/shots_4", "KgCoOp", "BTMRI", 4, 1, 55.0)  # a one-seed sweep beside a 3-seed run
    text = make_tables(grid, "terminal")
    assert "55.00 ± 0.00 (1)" in text and "KgCoOp_BiomedCLIP K=4 BTMRI: seed" not in text
    assert "Seed grid: each row's own seeds" in text
    assert "55.00 ± 0.00 (1/3) *" in make_tables(grid, "terminal", seeds=[1, 2, 3])


def test_a_results_file_that_is_not_an_object_is_one_line(grid):
    folder = os.path.join(grid, "btmri/shots_4/CoOp_BiomedCLIP", TAG, "seed5")
    os.makedirs(folder)
    open(os.path.join(folder, "results.json"), "w").write("[1, 2, 3]")
    text = make_tables(grid, "terminal")
    assert f"failed: {folder}: results.json holds a JSON list, not a results record" in text


def test_a_failed_run_of_a_model_label_with_underscores_keeps_method_and_model(tmp_path):
    root = str(tmp_path)
    model = "OpenCLIP-org--my_model"
    write_run(root, "btmri/shots_4", "CoOp", "BTMRI", 4, 1, 60.0, backbone=model)
    for seed, parent in ((2, "btmri/shots_4"), (1, "busi/shots_4")):  # beside a finished seed, and alone
        folder = os.path.join(root, parent, f"CoOp_{model}", TAG, f"seed{seed}")
        os.makedirs(folder)
        open(os.path.join(folder, "log.txt"), "w").write("Traceback\n")
    failed = [r for r in scan(root) if not r.ok]
    assert [(r.method, r.backbone, r.dataset) for r in failed] == [("CoOp", model, "BTMRI"), ("CoOp", model, "busi")]
    text = make_tables(root, "terminal")
    assert [line.split()[:2] for line in text.splitlines() if line.startswith("CoOp")][0] == ["CoOp", model]
    assert "_my_model" not in text.replace(f"CoOp_{model}", "")


def test_against_keeps_an_ablation_row_apart_from_the_sweep_point_of_the_same_value(tmp_path):
    root = str(tmp_path)
    base = {"TRAINER.BIOMEDCOOP.TAU": 1.5, "TRAINER.BIOMEDCOOP.SCCM_LAMBDA": 0.5, "OPTIM.MAX_EPOCH": 50}
    runs = (("tau_0.5", {**base, "TRAINER.BIOMEDCOOP.TAU": 0.5}, 61.0), ("tau_1.5", base, 63.0),
            ("ce", {**base, "TRAINER.BIOMEDCOOP.SCCM_LAMBDA": 0.0}, 40.0))
    for label, config, acc in runs:
        folder = write_run(os.path.join(root, label), "btmri/shots_4", "BiomedCoOp", "BTMRI", 4, 1, acc)
        with_fields(folder, label=label, config=config)
    text = make_tables(root, "terminal", against="TRAINER.BIOMEDCOOP.TAU")
    rows = [line.split() for line in text.splitlines() if line.startswith("BiomedCoOp")]
    by_row = {(" ".join(r[:-8]), r[-5]): r[-4] for r in rows}  # (series, TAU) -> accuracy
    assert by_row == {("BiomedCoOp [TRAINER.BIOMEDCOOP.SCCM_LAMBDA=0]", "1.5"): "40.00",
                      ("BiomedCoOp [TRAINER.BIOMEDCOOP.SCCM_LAMBDA=0.5]", "0.5"): "61.00",
                      ("BiomedCoOp [TRAINER.BIOMEDCOOP.SCCM_LAMBDA=0.5]", "1.5"): "63.00"}


def test_transfer_tables_are_kept_apart_per_k_and_say_it(tmp_path):
    from transfer_table import transfer_table

    root = str(tmp_path)
    for k, (own, moved) in ((4, (60.0, 30.0)), (16, (80.0, 45.0))):
        source = write_run(root, f"btmri/shots_{k}", "BiomedCoOp", "BTMRI", k, 1, own)
        target = write_run(root, f"busi/shots_{k}", "BiomedCoOp", "BUSI", k, 1, moved)
        os.rename(os.path.dirname(target), os.path.dirname(target) + "_from_btmri")
        with_fields(os.path.join(os.path.dirname(target) + "_from_btmri", "seed1"), eval_only=True,
                    label="from_btmri", config={"run.model_dir": source, "run.eval_only": True})
    text = transfer_table(root, seeds=[1])
    tables = {block.split(":")[0]: block for block in text.split("== ")[1:]}
    assert sorted(tables) == ["BiomedCoOp (BiomedCLIP, K=16)", "BiomedCoOp (BiomedCLIP, K=4)"]
    row = next(line for line in tables["BiomedCoOp (BiomedCLIP, K=4)"].splitlines() if line.startswith("BTMRI ->"))
    assert row.split()[2] == "60.00" and row.split()[6] == "30.00"
    row = next(line for line in tables["BiomedCoOp (BiomedCLIP, K=16)"].splitlines() if line.startswith("BTMRI ->"))
    assert row.split()[2] == "80.00" and row.split()[6] == "45.00"


def test_parse_test_res_averages_seeds_of_one_run_and_stops_on_two_configurations(tmp_path, capsys):
    import parse_test_res

    root = str(tmp_path)
    folders = [with_fields(write_run(root, "btmri/shots_4", "CoOp", "BTMRI", 4, seed, acc), **epochs(50))
               for seed, acc in ((1, 60.0), (2, 64.0))]
    run_dir = os.path.dirname(folders[0])
    assert parse_test_res.main([run_dir]) == 0
    assert "* accuracy: 62.00% +- 2.00%" in capsys.readouterr().out
    with_fields(folders[1], **epochs(200))
    assert parse_test_res.main([run_dir]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and folders[0] in err and folders[1] in err and "OPTIM.MAX_EPOCH" in err


RESULT_TOOLS = ["make_tables", "plot_results", "reproduction_report", "transfer_table", "parse_test_res"]


@pytest.mark.parametrize("tool", RESULT_TOOLS)
def test_result_tools_are_thin_entry_points(tool):
    import ast

    source = open(os.path.join(REPO, "tools", f"{tool}.py"), encoding="utf-8").read()
    assert source.count("\n") <= 150
    tools = {name[:-3] for name in os.listdir(os.path.join(REPO, "tools")) if name.endswith(".py")} - {"_bootstrap"}
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & tools and "results" in imported
    assert not os.path.exists(os.path.join(REPO, "tools", "results_io.py"))


def test_trial_runs_get_rows_of_their_own(tmp_path):
    """A run shortened by TRAIN.TRIAL_EPOCHS (the README's trial runs, sweep --quick) never shares a row
    with full runs, even at another K, and the notes say what the tag means."""
    root = str(tmp_path)
    with_fields(write_run(root, "btmri/shots_4", "CoOp", "BTMRI", 4, 1, 70.0), config={"OPTIM.MAX_EPOCH": 50})
    with_fields(write_run(root, "btmri/shots_2", "CoOp", "BTMRI", 2, 1, 30.0),
                config={"OPTIM.MAX_EPOCH": 50, "TRAIN.TRIAL_EPOCHS": 1})
    rows = csv_rows(make_tables(root, "csv"))
    assert pick(rows, table="few_shot", method="CoOp", dataset="BTMRI")["shots"] == "4"
    assert pick(rows, table="few_shot", method="CoOp [trial]", dataset="BTMRI")["shots"] == "2"
    assert "[trial] = runs shortened by TRAIN.TRIAL_EPOCHS" in make_tables(root, "terminal")


def test_a_missing_novel_seed_is_listed_once(tmp_path):
    """The average and the per-dataset base-to-novel tables name a missing seed the same way, so the
    notes list it once."""
    root = str(tmp_path)
    write_run(root, "base2new/train_base/btmri/shots_16", "CoOp", "BTMRI", 16, 1, 60.0, subsample="base")
    lines = [line for line in make_tables(root, "terminal").splitlines() if line.startswith("missing:")]
    assert lines == ["missing: CoOp_BiomedCLIP K=16 BTMRI novel: seed 1"]
