"""The evidence tools on real short runs (TinyBiomedCLIP, synthetic BTMRI): tables, predictions,
prompt interpretation, released-checkpoint evaluation and the reproduction report."""

import csv
import io
import json
import os

import pytest
import torch
from make_tables import make_tables

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "nctx4_cscFalse_ctpend"


def run_dir(root, method, seed, shots=2, phase=None):
    sub = f"btmri/shots_{shots}/{method}_TinyBiomedCLIP/{TAG}/seed{seed}"
    return os.path.join(root, "base2new", phase, sub) if phase else os.path.join(root, sub)


def train_run(data, out, method="BiomedCoOp", seed=1, shots=2, extra=(), config=None, cli=()):
    config = config or (f"configs/trainers/{method}/few_shot/btmri.yaml" if method == "BiomedCoOp"
                        else f"configs/trainers/{method}/vit_b16.yaml")
    args = ["--root", data, "--seed", str(seed), "--trainer", f"{method}_TinyBiomedCLIP",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", os.path.join(REPO, config), "--output-dir", out, *cli,
            "DATASET.NUM_SHOTS", str(shots), "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0", *extra]
    assert train.main(args) == 0
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(synthetic_btmri, tmp_path_factory):
    """BiomedCoOp K=2 seeds 1-2 and base-to-novel seed 1."""
    root = str(tmp_path_factory.mktemp("output"))
    results = {}
    for seed in (1, 2):
        results[("BiomedCoOp", seed)] = train_run(synthetic_btmri, run_dir(root, "BiomedCoOp", seed), seed=seed)
    base_dir = run_dir(root, "BiomedCoOp", 1, phase="train_base")
    results["base"] = train_run(synthetic_btmri, base_dir, extra=["DATASET.SUBSAMPLE_CLASSES", "base"])
    results["new"] = train_run(
        synthetic_btmri, run_dir(root, "BiomedCoOp", 1, phase="test_new"),
        extra=["DATASET.SUBSAMPLE_CLASSES", "new"], cli=["--eval-only", "--model-dir", base_dir, "--load-epoch", "2"],
    )
    return {"root": root, "data": synthetic_btmri, "results": results}


def csv_pick(text, **want):
    hits = [r for r in csv.DictReader(io.StringIO(text)) if all(r[k] == str(v) for k, v in want.items())]
    assert len(hits) == 1, (want, hits)
    return hits[0]


def test_tables_from_real_runs_match_hand_computed_numbers(runs):
    res = runs["results"]
    a1, a2 = res[("BiomedCoOp", 1)]["accuracy"], res[("BiomedCoOp", 2)]["accuracy"]
    text = make_tables(runs["root"], "csv", seeds=[1, 2])
    row = csv_pick(text, method="BiomedCoOp", dataset="BTMRI", shots=2, table="few_shot")
    assert float(row["mean"]) == pytest.approx((a1 + a2) / 2, abs=1e-4)
    assert float(row["std"]) == pytest.approx(abs(a1 - a2) / 2, abs=1e-4)  # population std of two values
    assert row["complete"] == "True" and row["seeds"] == "2"
    base, new = res["base"]["accuracy"], res["new"]["accuracy"]
    assert res["base"]["classnames"] != res["new"]["classnames"]
    hm = csv_pick(text, method="BiomedCoOp", dataset="BTMRI", metric="hm")
    assert float(hm["mean"]) == pytest.approx(2 * base * new / (base + new), abs=1e-4)

    terminal = make_tables(runs["root"], "terminal", seeds=[1, 2, 3])
    assert "missing: BiomedCoOp_TinyBiomedCLIP K=2 BTMRI: seed 3" in terminal
    assert f"{(a1 + a2) / 2:.2f} ± {abs(a1 - a2) / 2:.2f} (2/3) *" in terminal


def test_predict_probabilities_sum_to_one_and_reproduce_the_test_accuracy(runs, tmp_path):
    from predict import Predictor, find_images

    seed_dir = run_dir(runs["root"], "BiomedCoOp", 1)
    split = json.load(open(os.path.join(runs["data"], "BTMRI", "split_BTMRI.json")))["test"]
    paths = [os.path.join(runs["data"], "BTMRI", "BTMRI", rel) for rel, _, _ in split]
    rows = Predictor(seed_dir).predict(paths, batch_size=7)
    assert [r["image"] for r in rows] == paths
    for row in rows:
        probs = [v for k, v in row.items() if k.startswith("p(")]
        assert len(probs) == 4 and sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["top1_probability"] == max(probs)
    correct = sum(r["top1"] == name for r, (_, _, name) in zip(rows, split))
    assert 100.0 * correct / len(split) == pytest.approx(runs["results"][("BiomedCoOp", 1)]["accuracy"])
    assert len(find_images([os.path.join(runs["data"], "BTMRI", "BTMRI")])) == 80


def test_predict_cli_reports_an_unreadable_image_and_goes_on(runs, tmp_path, capsys):
    import predict

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = sorted(predict.find_images([os.path.join(runs["data"], "BTMRI", "BTMRI", "glioma_tumor")]))[:2]
    out = tmp_path / "pred.csv"
    new_dir = run_dir(runs["root"], "BiomedCoOp", 1, phase="test_new")  # eval-only: loads the base-trained ctx
    assert predict.main(["--run-dir", new_dir, str(bad), *good, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: cannot read" in err and "broken.png" in err
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["image"] == str(bad) and rows[0]["error"] and not rows[0]["top1"]
    assert len(rows) == 3 and all(r["top1"] in runs["results"]["new"]["classnames"] for r in rows[1:])
    assert predict.main(["--run-dir", str(tmp_path), *good]) == 2
    assert "results.json not found" in capsys.readouterr().err


def test_predict_reads_an_older_runs_settings_from_its_log(runs, tmp_path):
    import shutil

    from predict import build_run_config, read_run_record

    old = tmp_path / "seed1"
    shutil.copytree(run_dir(runs["root"], "BiomedCoOp", 1), old)
    record = json.load(open(old / "results.json"))
    recorded = build_run_config(read_run_record(str(old)))
    del record["config"]
    json.dump(record, open(old / "results.json", "w"))
    from_log = build_run_config(read_run_record(str(old)))
    for part in ("TRAINER", "DATASET", "INPUT", "MODEL", "OPTIM", "FEATURES"):  # what changes the numbers
        assert from_log[part].dump() == recorded[part].dump()


@pytest.mark.parametrize("model", ["TinyBiomedCLIP", "TinyCLIP"])
def test_interpret_prompt_recovers_the_words_a_context_was_made_from(model, tmp_path, capsys):
    import interpret_prompt

    from engine.registry import BACKBONE_REGISTRY

    backbone = BACKBONE_REGISTRY.get(model)()
    ids = backbone.tokenize(["brain tumor scan"])[0, 1:4]  # the three word tokens after the start token
    with torch.no_grad():
        ctx = backbone.embed_tokens(ids[None])[0]
    # A reference-style checkpoint: the whole model's state dict, the context under prompt_learner.ctx.
    ckpt = tmp_path / "model.pth.tar-100"
    torch.save({"state_dict": {"image_encoder.w": torch.zeros(2), "prompt_learner.ctx": ctx}, "epoch": 100}, ckpt)
    assert interpret_prompt.main([str(ckpt), "--model", model, "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "nearest reading: brain tumor scan" in out
    lines = [line for line in out.splitlines() if line.startswith("ctx ")]
    nearest = [float(line.split("(")[1].split(")")[0]) for line in lines]  # cdist is exact to ~1e-4
    assert len(lines) == 3 and max(nearest) < 1e-3


def test_interpret_prompt_reads_a_trained_run(runs, capsys):
    import interpret_prompt

    assert interpret_prompt.main([run_dir(runs["root"], "BiomedCoOp", 1), "--topk", "3"]) == 0
    out = capsys.readouterr().out
    assert "TinyBiomedCLIP vocabulary" in out and "model.pth.tar-2" in out
    lines = [line for line in out.splitlines() if line.startswith("ctx ")]
    assert len(lines) == 4 and all(line.count("(") == 3 for line in lines)
    # the eval-only novel-class run points at the checkpoint it tested
    assert interpret_prompt.main([run_dir(runs["root"], "BiomedCoOp", 1, phase="test_new")]) == 0
    assert "train_base" in capsys.readouterr().out
