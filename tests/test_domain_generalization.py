"""Domain generalisation: the six targets as benchmarks (declarations, prompts, synthetic twins, data
checks), the class matching of a retargeted evaluation, and dg.sh end to end on a synthetic source
with three synthetic targets, then its table."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from script_runs import run_script_in_process

import train
from datasets.benchmarks import BENCHMARKS, DG_SOURCE, DG_TARGETS, dg_targets, spec_for
from datasets.domain_generalization import read_test_split, target_columns
from engine.errors import UserError
from engine.prompts import PROMPTS_DIR, load_ensemble, prompt_file
from engine.registry import DATASET_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRAIN_TARGETS = ["BRISC", "BTMRI-P", "BTMRI-S"]


@pytest.fixture(scope="module")
def dg_root(tmp_path_factory) -> str:
    """Synthetic BTMRI and its three targets (12 images per class each)."""
    from make_synthetic_dataset import write_dataset

    root = tmp_path_factory.mktemp("dg_data")
    for name in ["BTMRI", *BRAIN_TARGETS]:
        write_dataset(str(root), name, per_class=12, size=32)
    return str(root)


def test_targets_are_declared_with_their_sources_classes():
    assert dg_targets("btmri") == BRAIN_TARGETS and dg_targets("BUSI") == ["BUID", "BUSBRA", "UDIAT"]
    assert not set(DG_TARGETS) & set(BENCHMARKS)  # the paper's eleven stay eleven ('all' downloads those)
    for name, spec in DG_TARGETS.items():
        source = BENCHMARKS[DG_SOURCE[name]]
        assert set(spec.classnames) <= set(source.classnames) and spec.modality == source.modality
        assert name in DATASET_REGISTRY and spec_for(spec.config) is spec and spec_for(name.lower()) is spec
        with open(os.path.join(REPO, "configs", "datasets", f"{spec.config}.yaml"), encoding="utf-8") as f:
            assert f'NAME: "{name}"' in f.read()
        assert spec.url.endswith(f"/{name}.zip")


def test_every_method_folder_has_a_dg_script_running_its_few_shot_settings():
    import glob
    import re

    for few_shot in glob.glob(os.path.join(REPO, "scripts", "*", "few_shot.sh")):
        dg = os.path.join(os.path.dirname(few_shot), "dg.sh")
        assert os.path.isfile(dg), f"{dg} is missing: copy a sibling's dg.sh (scripts/common.sh dg)"
        calls = lambda path, fn: re.findall(rf"^\s*{fn} (.*)$", open(path).read(), flags=re.M)  # noqa: E731
        assert calls(dg, "dg") == calls(few_shot, "few_shot") != [], dg  # same method, same config


def test_a_source_without_targets_stops_the_script_at_once(tmp_path):
    assert dg_targets("retina") == [] and dg_targets("MyScans") == []
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1"}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "coop", "dg.sh"), str(tmp_path), "retina", "2",
                           "TinyBiomedCLIP"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "'retina' has no domain-generalisation targets" in proc.stderr
    assert "TARGETS=" in proc.stderr and not (tmp_path / "output").exists()


def test_a_target_reads_its_sources_prompt_ensemble(tmp_path):
    assert prompt_file("BUSBRA") == os.path.join(PROMPTS_DIR, "BUSI.json")
    assert prompt_file("BRISC") == os.path.join(PROMPTS_DIR, "BTMRI.json")
    assert not os.path.exists(os.path.join(PROMPTS_DIR, "BRISC.json"))  # reused, not copied
    ensemble = load_ensemble("UDIAT", ["benign tumor", "malignant tumor"], 50)
    assert ensemble == load_ensemble("BUSI", ["benign tumor", "malignant tumor"], 50)
    # a file of the target's own, where one exists, wins
    (tmp_path / "UDIAT.json").write_text(json.dumps({"classes": {"benign tumor": ["a"], "malignant tumor": ["b"]}}))
    assert prompt_file("UDIAT", str(tmp_path)) == str(tmp_path / "UDIAT.json")
    assert prompt_file("MyScans") == os.path.join(PROMPTS_DIR, "MyScans.json")  # no source: its own name


def test_prompt_checks_check_a_target_as_its_source():
    from prompts.checks import check_jobs

    ((name, path, expected, note),) = check_jobs(["udiat"], PROMPTS_DIR)
    assert (name, os.path.basename(path), expected) == ("BUSI", "BUSI.json", list(BENCHMARKS["BUSI"].classnames))
    assert "UDIAT has no ensemble of its own" in note
    ((name, _, expected, note),) = check_jobs(["BUSI"], PROMPTS_DIR)
    assert name == "BUSI" and note is None


def test_synthetic_targets_look_like_their_source_at_another_site(dg_root):
    def mean_colour(name, relpath):
        return np.asarray(Image.open(os.path.join(dg_root, name, name, relpath)), dtype=float).mean(axis=(0, 1))

    split = json.load(open(os.path.join(dg_root, "BTMRI-P", "split_BTMRI-P.json")))
    assert [row[2] for row in split["train"][::6]] == list(spec_for("BTMRI-P").classnames)
    rel = "normal_brain/normal_brain_0000.jpg"
    source, target = mean_colour("BTMRI", rel), mean_colour("BTMRI-P", rel)
    other = mean_colour("BTMRI", "glioma_tumor/glioma_tumor_0000.jpg")
    # the same class's colour, washed toward grey: closer to its source class than to another class
    assert np.abs(target - source).sum() < np.abs(target - other).sum()
    assert np.abs(target - 127.5).sum() < np.abs(source - 127.5).sum()


def test_check_data_knows_the_targets(dg_root, capsys):
    import check_data

    assert check_data.main(["btmri_s", "--root", dg_root, "--no-images"]) == 0
    assert "OK" in capsys.readouterr().out
    split_path = os.path.join(dg_root, "BTMRI-S", "split_BTMRI-S.json")
    split = json.load(open(split_path))
    split["test"][0][2] = "astrocytoma"  # a class string the declaration does not have
    bad_root = os.path.join(dg_root, "bad")
    os.makedirs(os.path.join(bad_root, "BTMRI-S"), exist_ok=True)
    os.symlink(os.path.join(dg_root, "BTMRI-S", "BTMRI-S"), os.path.join(bad_root, "BTMRI-S", "BTMRI-S"))
    json.dump(split, open(os.path.join(bad_root, "BTMRI-S", "split_BTMRI-S.json"), "w"))
    assert check_data.main(["BTMRI-S", "--root", bad_root, "--no-images"]) != 0


def test_target_classes_are_matched_by_name():
    source = ["benign tumor", "malignant tumor", "normal scan"]
    assert target_columns(source, ["benign tumor", "malignant tumor"], "BUSI", "UDIAT") == [0, 1]
    assert target_columns(source, ["normal_scan", "Benign Tumor"], "BUSI", "X") == [2, 0]  # order, case, _
    with pytest.raises(UserError, match=r"\['cyst'\] are not among the classes"):
        target_columns(source, ["benign tumor", "cyst"], "BUSI", "X")


def test_read_test_split_and_its_errors(dg_root, tmp_path):
    items, classes, folder = read_test_split(dg_root, "BRISC")
    assert classes == list(spec_for("BRISC").classnames) and folder == os.path.join(dg_root, "BRISC")
    assert len(items) == 4 * 4 and all(os.path.isfile(d.impath) for d in items)
    with pytest.raises(UserError, match="download_data.py BUID"):
        read_test_split(str(tmp_path), "BUID")


def test_test_dataset_needs_eval_only(dg_root, capsys):
    code = train.main(["--root", dg_root, "--trainer", "CoOp_TinyBiomedCLIP",
                       "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
                       "TEST.DATASET", "brisc"])
    assert code == 2 and "--eval-only --model-dir" in capsys.readouterr().err


def run_dg(method_folder, root, cwd, monkeypatch, targets=None):
    """scripts/<method_folder>/dg.sh on the synthetic source, its train.py runs in this process."""
    fast = "DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH 1 FEATURES.TRAIN_VIEWS 1 TRAINER.GDA.AUGMENT_EPOCH 2"
    env = {"TARGETS": targets} if targets else {}
    run_script_in_process(f"scripts/{method_folder}/dg.sh", [root, "btmri", "2", "TinyBiomedCLIP"], cwd,
                          monkeypatch, fast, **env)


def test_dg_script_trains_once_and_scores_every_target(dg_root, tmp_path, monkeypatch, capsys):
    """dg.sh with BTMRI's default targets: one few-shot training on the source, then that model scored
    (eval-only, nothing retrained) on each target's test split, each record naming protocol, source and
    target; a second call skips all four runs; the DG table's ID is the source run, its OOD the targets' mean."""
    run_dg("coop", dg_root, tmp_path, monkeypatch)
    out = tmp_path / "output"
    source_run = out / "btmri" / "shots_2" / "CoOp_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend" / "seed1"
    source = json.load(open(source_run / "results.json"))
    assert source["dataset"] == "BTMRI" and not source["eval_only"] and "protocol" not in source
    for target in ["brisc", "btmri_p", "btmri_s"]:
        run = out / target / "shots_2" / "CoOp_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend_from_btmri" / "seed1"
        record = json.load(open(run / "results.json"))
        name = spec_for(target).name
        assert [record[k] for k in ("protocol", "source", "target", "dataset")] == ["dg", "BTMRI", name, name]
        assert record["num_shots"] == 2 and record["eval_only"] and record["total"] == 16
        assert record["config"]["TEST.DATASET"] == target
        assert not (run / "prompt_learner").exists()  # nothing retrained
        log = (run / "log.txt").read_text()
        assert f"Loading weights to prompt_learner from {source_run.relative_to(tmp_path)}" in log
        assert f"the BTMRI model scored on the {name} test split" in log
    # a second call reuses everything
    capsys.readouterr()
    run_dg("coop", dg_root, tmp_path, monkeypatch)
    assert capsys.readouterr().out.count("Skip this job") == 4
    # the table: in-distribution from the source run, out-of-distribution the mean over the three targets
    from make_tables import make_tables

    text = make_tables(str(out))
    assert "== Domain generalisation from BTMRI (%)" in text
    line = next(x for x in text.splitlines() if x.startswith("CoOp ") and "BRISC" not in x and x.count("(1)") == 6)
    accs = [json.load(open(out / t / "shots_2" / "CoOp_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend_from_btmri"
                           / "seed1" / "results.json"))["accuracy"] for t in ("brisc", "btmri_p", "btmri_s")]
    assert f"{source['accuracy']:.2f} ± 0.00 (1)" in line and f"{sum(accs) / 3:.2f} ± 0.00 (1)" in line
    assert "dg run(s) are not in these tables" not in text


def write_record(folder, **fields):
    os.makedirs(folder, exist_ok=True)
    record = {"method": "CoOp", "backbone": "TinyBiomedCLIP", "num_shots": 2, "subsample_classes": "all",
              "fewshot_protocol": "balanced", "label": "", **fields}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)


def test_dg_rows_by_hand(tmp_path):
    from results.domain_generalization import dg_rows
    from results.records import scan

    run = os.path.join("shots_2", "CoOp_TinyBiomedCLIP")
    # seed 1: ID 80, targets 60 and 70 (OOD 65); seed 2: ID 90, targets 50 and 90 (OOD 70)
    for seed, id_acc, accs in ((1, 80.0, (60.0, 70.0)), (2, 90.0, (50.0, 90.0))):
        source = str(tmp_path / "btmri" / run / "nctx4_cscFalse_ctpend" / f"seed{seed}")
        write_record(source, dataset="BTMRI", seed=seed, eval_only=False, accuracy=id_acc,
                     config={"SEED": seed, "OPTIM.LR": 0.002})
        for target, acc in zip(("BRISC", "BTMRI-S"), accs):
            write_record(str(tmp_path / target.lower() / run / "nctx4_cscFalse_ctpend_from_btmri" / f"seed{seed}"),
                         dataset=target, seed=seed, eval_only=True, accuracy=acc, protocol="dg", source="BTMRI",
                         target=target, label="from_btmri",
                         config={"SEED": seed, "OPTIM.LR": 0.002, "TEST.DATASET": target.lower(),
                                 "run.eval_only": True, "run.model_dir": source})
    (row,) = dg_rows(scan(str(tmp_path)))
    assert (row.method, row.source, row.shots, sorted(row.targets)) == ("CoOp", "BTMRI", 2, ["BRISC", "BTMRI-S"])
    assert (row.id.mean, row.id.std, row.id.n) == (85.0, 5.0, 2)
    assert (row.ood.mean, row.ood.std) == (67.5, 2.5)  # mean of the target means; std over seeds of (65, 70)
    hms = [2 * 80 * 65 / 145, 2 * 90 * 70 / 160]
    assert row.hm.mean == pytest.approx(sum(hms) / 2) and row.hm.std == pytest.approx(abs(hms[0] - hms[1]) / 2)
    assert (row.targets["BRISC"].mean, row.targets["BTMRI-S"].mean) == (55.0, 80.0)
    # a target run whose seed's source is gone still counts for OOD, not for ID or HM
    os.remove(tmp_path / "btmri" / run / "nctx4_cscFalse_ctpend" / "seed2" / "results.json")
    (row,) = dg_rows(scan(str(tmp_path)))
    assert row.id.n == 1 and row.ood.n == 2 and row.hm.n == 1 and row.hm.missing


@pytest.mark.parametrize("folder", ["gda", "biomedcoop"])
def test_dg_script_for_a_head_method_and_biomedcoop(dg_root, tmp_path, monkeypatch, folder):
    """dg.sh for a feature-head method (GDA) and BiomedCoOp, TARGETS=btmri_p: the target's record is a DG
    record scored on BTMRI-P's whole test split."""
    run_dg(folder, dg_root, tmp_path, monkeypatch, targets="btmri_p")
    method = {"gda": "GDA", "biomedcoop": "BiomedCoOp"}[folder]
    run = tmp_path / "output" / "btmri_p" / "shots_2" / f"{method}_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend_from_btmri"
    record = json.load(open(run / "seed1" / "results.json"))
    assert record["protocol"] == "dg" and record["target"] == "BTMRI-P" and record["total"] == 16


def test_a_row_missing_a_target_is_flagged_not_averaged_over_fewer(tmp_path):
    """OOD is the mean over the table's targets: a row run on a subset (TARGETS=...) is marked incomplete,
    with the missing target named, instead of passing off a mean over fewer targets."""
    from results.domain_generalization import dg_rows
    from results.records import scan

    for method, targets in (("CoOp", ("BRISC", "BTMRI-S")), ("GDA", ("BRISC",))):
        run = os.path.join("shots_2", f"{method}_TinyBiomedCLIP")
        source = str(tmp_path / "btmri" / run / "nctx4_cscFalse_ctpend" / "seed1")
        write_record(source, method=method, dataset="BTMRI", seed=1, eval_only=False, accuracy=80.0,
                     config={"SEED": 1})
        for target in targets:
            write_record(str(tmp_path / target.lower() / run / "nctx4_cscFalse_ctpend_from_btmri" / "seed1"),
                         method=method, dataset=target, seed=1, eval_only=True, accuracy=60.0, protocol="dg",
                         source="BTMRI", target=target, label="from_btmri",
                         config={"SEED": 1, "TEST.DATASET": target.lower(), "run.eval_only": True,
                                 "run.model_dir": source})
    rows = {r.method: r for r in dg_rows(scan(str(tmp_path)))}
    assert rows["CoOp"].ood.complete and rows["CoOp"].hm.n == 1
    gda = rows["GDA"]
    assert not gda.ood.complete and any("BTMRI-S" in m for m in gda.ood.missing)
    assert gda.hm.n == 0 and gda.hm.missing
