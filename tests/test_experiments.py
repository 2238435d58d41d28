"""The paper's experiments as one-command workflows (ablation, tau and N_PROMPTS sweeps, transfer,
imbalanced protocol), end to end on the tiny twin and synthetic data, plus the arithmetic they rest on."""

import json
import os
import random
import shlex
import subprocess
import sys

import make_tables
import plot_results
import pytest
import transfer_table

import train
from engine.data import Datum, fewshot_file, imbalanced_counts, load_or_make_fewshot
from results.aggregate import method_sort_key
from results.records import run_label, scan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 TRAINER.BIOMEDCOOP.N_PROMPTS 5"
TRAINER_DIR = "shots_2/BiomedCoOp_TinyBiomedCLIP"


def run_script(script, args, cwd, **env):
    full_env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1", "EXTRA_OPTS": FAST, **env}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic BTMRI and BUSI; BUSI's training split is made imbalanced: 5, 3 and 1 images per class."""
    from make_synthetic_dataset import write_dataset

    root = str(tmp_path_factory.mktemp("exp_data"))
    write_dataset(root, "BTMRI", per_class=10, size=32)
    write_dataset(root, "BUSI", per_class=10, size=32)
    path = os.path.join(root, "BUSI", "split_BUSI.json")
    split = json.load(open(path))
    keep = {0: 5, 1: 3, 2: 1}
    seen = {0: 0, 1: 0, 2: 0}
    train = []
    for row in split["train"]:
        if seen[row[1]] < keep[row[1]]:
            train.append(row)
            seen[row[1]] += 1
    split["train"] = train
    json.dump(split, open(path, "w"))
    return root


# ----- arithmetic -----------------------------------------------------------------------------------


def test_imbalanced_counts_follow_the_class_shares_with_one_each_at_least():
    assert imbalanced_counts([10, 10, 10, 10], 16) == [4, 4, 4, 4]  # balanced split: K per class
    # ideal 16 * [100, 10, 5, 1] / 116 = [13.79, 1.38, 0.69, 0.14]: floors [13, 1, 0, 0], raised to one each
    assert imbalanced_counts([100, 10, 5, 1], 16) == [13, 1, 1, 1]
    # ideal [3, 1.8, 1.2]: floors [3, 1, 1] = 5, the sixth to the class furthest below its ideal (0.8)
    assert imbalanced_counts([50, 30, 20], 6) == [3, 2, 1]
    # the at-least-one rule overshoots (3 + 1 + 1 + 1 > 4): taken back from the largest class
    assert imbalanced_counts([97, 1, 1, 1], 4) == [1, 1, 1, 1]
    assert imbalanced_counts([3, 1], 10) == [3, 1]  # fewer images than asked: the whole split


def test_imbalanced_draw_is_seeded_has_no_val_and_its_own_cache_file(tmp_path):
    train = [Datum(f"/x/{c}{i}.png", c, f"class {c}", relpath=f"{c}{i}.png") for c, n in enumerate((12, 4, 2))
             for i in range(n)]
    val = [Datum(f"/x/v{c}.png", c, f"class {c}", relpath=f"v{c}.png") for c in range(3)]
    assert fewshot_file(2, 1) == "shot_2-seed_1.json"  # the balanced name (and draw) is unchanged
    assert fewshot_file(2, 1, "imbalanced") == "imbalanced_shot_2-seed_1.json"

    def draw(seed, cache):
        random.seed(seed)
        return load_or_make_fewshot(train, val, 2, seed, str(tmp_path / cache), str(tmp_path), "imbalanced")

    first, first_val = draw(1, "a")
    again, _ = draw(1, "b")
    assert first_val == []
    assert [d.relpath for d in first] == [d.relpath for d in again]
    assert [sum(d.label == c for d in first) for c in range(3)] == imbalanced_counts([12, 4, 2], 6) == [4, 1, 1]
    assert os.listdir(tmp_path / "a") == ["imbalanced_shot_2-seed_1.json"]


def test_variant_rows_sort_as_the_ablation_builds_up_and_numbers_naturally():
    names = ["BiomedCoOp [full]", "BiomedCoOp [sccm]", "BiomedCoOp", "CoOp", "BiomedCoOp [ce]",
             "BiomedCoOp [kdsp_selected]", "BiomedCoOp [kdsp_all]"]
    assert sorted(names, key=method_sort_key) == [
        "CoOp", "BiomedCoOp", "BiomedCoOp [ce]", "BiomedCoOp [sccm]", "BiomedCoOp [kdsp_all]",
        "BiomedCoOp [kdsp_selected]", "BiomedCoOp [full]"]
    taus = ["X [tau_none]", "X [tau_10]", "X [tau_1.25]", "X [tau_2]"]
    assert sorted(taus, key=method_sort_key) == ["X [tau_1.25]", "X [tau_2]", "X [tau_10]", "X [tau_none]"]
    assert run_label({"label": "ce", "fewshot_protocol": "imbalanced"}) == "imbalanced_ce"
    assert run_label({"label": "", "fewshot_protocol": "balanced"}) == ""


# ----- workflows ------------------------------------------------------------------------------------
# The scripts list their train.py commands (PRINT_RUNS=1, as tools/sweep.py reads them); most tests run
# those commands in this process (one import of torch instead of one per run) and then the report the
# script ends with; test_n_prompts_sweep runs its script for real, report included.


def run_workflow(script, args, cwd, monkeypatch, **env) -> list[list[str]]:
    """Run the script's train.py commands in this process; returns them."""
    proc = run_script(script, args, cwd, PRINT_RUNS="1", **env)
    commands = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
    monkeypatch.chdir(cwd)
    for command in commands:
        assert command[1].endswith("train.py"), command
        assert train.main(command[2:]) == 0, command
    return commands


def test_ablation_runs_five_variants_and_tabulates_them_as_rows(data, tmp_path, monkeypatch, capsys):
    commands = run_workflow("biomedcoop/ablation.sh", [data, "BTMRI", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    lines = [" ".join(c) for c in commands]
    assert len(lines) == 5
    for line, variant in zip(lines, ["ce", "sccm", "kdsp_all", "kdsp_selected", "full"]):
        assert f"nctx4_cscFalse_ctpend_{variant}/seed1" in line and f"TRAINER.RUN_LABEL {variant}" in line
    assert "TRAINER.BIOMEDCOOP.TAU 1000.0" in lines[2] and "SCCM_LAMBDA 0.0" in lines[2]
    capsys.readouterr()
    assert make_tables.main(["output/ablation", "--seeds", "1"]) == 0  # the script's report line
    rows = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("BiomedCoOp [")]
    assert rows[:5] == ["[ce]", "[sccm]", "[kdsp_all]", "[kdsp_selected]", "[full]"]
    runs = {r.label: r for r in scan("output/ablation")}
    assert sorted(runs) == sorted(["ce", "sccm", "kdsp_all", "kdsp_selected", "full"])
    config = {label: run.record["config"] for label, run in runs.items()}
    assert config["ce"]["TRAINER.BIOMEDCOOP.SCCM_LAMBDA"] == config["ce"]["TRAINER.BIOMEDCOOP.KDSP_LAMBDA"] == 0
    assert config["full"]["TRAINER.BIOMEDCOOP.SCCM_LAMBDA"] == 0.5  # btmri's config value
    assert runs["kdsp_all"].record["prompts_kept_share"] == 1.0  # no selection keeps every description
    # same seed, same images: one few-shot draw (the cache file) serves all five
    assert os.listdir(os.path.join(data, "BTMRI", "split_fewshot")) == ["shot_2-seed_1.json"]


def test_tau_sweep_tabulates_kept_share_and_plots(data, tmp_path, monkeypatch, capsys):
    run_workflow("biomedcoop/tau_sweep.sh", [data, "BTMRI", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch,
                 TAUS="none 0.5")
    capsys.readouterr()
    assert make_tables.main(["output/tau_sweep", "--against", "TRAINER.BIOMEDCOOP.TAU",
                             "--also", "prompts_kept_share"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[4]: line.split() for line in out.splitlines() if line.startswith("BiomedCoOp ")}
    assert list(rows) == ["0.5", "none"]  # numeric order, no pruning last
    assert rows["none"][-1] == "1.00"  # TAU 1000 keeps every description
    records = {r.label: r.record for r in scan("output/tau_sweep")}
    assert f"{records['tau_0.5']['prompts_kept_share']:.2f}" == rows["0.5"][-1]
    assert plot_results.main(["output/tau_sweep", "--against", "TRAINER.BIOMEDCOOP.TAU", "--out", "tau.png"]) == 0
    assert os.path.getsize("tau.png") > 1000


def test_n_prompts_sweep_script_runs_and_reports(data, tmp_path):
    proc = run_script("biomedcoop/n_prompts.sh", [data, "BTMRI", "2", "TinyBiomedCLIP"], tmp_path, COUNTS="3")
    values = [line.split()[4] for line in proc.stdout.splitlines() if line.startswith("BiomedCoOp ")]
    assert values == ["3"]
    records = {r.label: r.record for r in scan(str(tmp_path / "output/n_prompts"))}
    assert records["nprompts_3"]["n_prompts"] == 3
    assert os.path.getsize(tmp_path / "output/n_prompts/n_prompts_btmri_shots2.png") > 1000


def test_transfer_splices_the_learned_context_with_the_targets_classes(data, tmp_path, monkeypatch, capsys):
    commands = run_workflow("biomedcoop/transfer.sh", [data, "BTMRI", "BTMRI BUSI", "2", "TinyBiomedCLIP"],
                            tmp_path, monkeypatch)
    assert len(commands) == 2 and "--eval-only" in commands[1]  # BTMRI is trained once, not evaluated again
    out = tmp_path / "output/transfer"
    target = json.load(open(out / "busi" / TRAINER_DIR / "nctx4_cscFalse_ctpend_from_btmri/seed1/results.json"))
    assert target["dataset"] == "BUSI" and target["eval_only"] and target["label"] == "from_btmri"
    assert target["classnames"] == ["benign tumor", "malignant tumor", "normal scan"]
    source = json.load(open(out / "btmri" / TRAINER_DIR / "nctx4_cscFalse_ctpend/seed1/results.json"))
    capsys.readouterr()
    assert transfer_table.main(["output/transfer", "--seeds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("trained on"))
    assert header.split()[2:] == ["BTMRI", "BUSI"]
    row = next(line for line in lines if line.startswith("BTMRI ->")).split()
    assert float(row[2]) == pytest.approx(source["accuracy"], abs=0.01)
    assert float(row[6]) == pytest.approx(target["accuracy"], abs=0.01)


def test_imbalanced_protocol_draws_class_shares_and_feature_methods_search_on_train(data, tmp_path, monkeypatch):
    opts = "DATALOADER.NUM_WORKERS 0 DATASET.FEWSHOT_PROTOCOL imbalanced"
    run_workflow("tip_adapter/few_shot.sh", [data, "BUSI", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch,
                 EXTRA_OPTS=opts)
    run_dir = tmp_path / "output/busi/shots_2/TipAdapter_TinyBiomedCLIP/nctx4_cscFalse_ctpend_imbalanced/seed1"
    record = json.load(open(run_dir / "results.json"))
    assert record["fewshot_protocol"] == "imbalanced" and record["validation"] == "train"
    log = open(run_dir / "log.txt").read()
    assert "No val split under DATASET.FEWSHOT_PROTOCOL imbalanced" in log
    # 5, 3 and 1 training images, K x C = 6: ideal [3.33, 2, 0.67] -> [3, 2, 1]
    cache = json.load(open(os.path.join(data, "BUSI/split_fewshot/imbalanced_shot_2-seed_1.json")))
    assert [sum(row[1] == c for row in cache["train"]) for c in range(3)] == [3, 2, 1] and cache["val"] == []
    assert [r.row_name for r in scan(str(tmp_path / "output"))] == ["TipAdapter [imbalanced]"]


def test_no_pruning_tau_keeps_every_description_and_one_description_is_kept_quietly():
    import warnings

    import torch

    from trainers.prompt_bank import select_prompts

    scores = torch.zeros(50)
    scores[0] = 100.0  # the most extreme outlier 50 scores can hold: |z| = 49 / sqrt(50) = 6.93
    assert not select_prompts(scores, 6.9)[0] and select_prompts(scores, 6.93).all()
    assert select_prompts(scores, 1000.0).all()  # the sweep's "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's std() of one value would warn
        assert select_prompts(torch.tensor([0.3]), 1.5).tolist() == [True]
