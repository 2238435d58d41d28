"""The evidence tools on real short runs (TinyBiomedCLIP, synthetic BTMRI): tables, predictions,
prompt interpretation, released-checkpoint evaluation and the reproduction report."""

import csv
import io
import json
import os
import sys

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
    from engine.predict import Predictor, find_images

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

    from engine.predict import find_images

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = sorted(find_images([os.path.join(runs["data"], "BTMRI", "BTMRI", "glioma_tumor")]))[:2]
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

    from engine.predict import build_run_config, read_run_record

    old = tmp_path / "seed1"
    shutil.copytree(run_dir(runs["root"], "BiomedCoOp", 1), old)
    record = json.load(open(old / "results.json"))
    recorded = build_run_config(read_run_record(str(old)))
    del record["config"]
    json.dump(record, open(old / "results.json", "w"))
    from_log = build_run_config(read_run_record(str(old)))
    for part in ("TRAINER", "DATASET", "INPUT", "MODEL", "OPTIM", "FEATURES"):  # what changes the numbers
        assert from_log[part].dump() == recorded[part].dump()


def test_predict_loads_through_the_engine_and_refuses_another_backbones_checkpoint(runs, tmp_path, capsys):
    import shutil

    import predict

    swapped = tmp_path / "seed1"
    shutil.copytree(run_dir(runs["root"], "BiomedCoOp", 1), swapped)
    ckpt_path = swapped / "prompt_learner" / "model.pth.tar-2"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["trained_with"] = {**ckpt["trained_with"], "model": "TinyPMCCLIP", "backbone": "TinyPMCCLIP"}
    torch.save(ckpt, ckpt_path)  # a context of the same width, trained on another backbone
    image = os.path.join(runs["data"], "BTMRI", "BTMRI", "glioma_tumor")
    assert predict.main(["--run-dir", str(swapped), image]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "TinyPMCCLIP" in err and "TinyBiomedCLIP" in err
    assert "ALLOW_CHECKPOINT_MISMATCH" in err


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


def reference_checkpoint(ctx, path):
    """What the reference saves: the whole CustomCLIP's state dict, the learned context among it."""
    state = {"prompt_learner.ctx": ctx.clone(), "prompt_learner.token_prefix": torch.zeros(4, 1, 64),
             "image_encoder.trunk.weight": torch.zeros(3, 3), "text_encoder.proj": torch.zeros(2)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state, "epoch": 2, "optimizer": None, "scheduler": None}, path)


def own_ctx(folder, epoch=2):
    return torch.load(os.path.join(folder, "prompt_learner", f"model.pth.tar-{epoch}"), weights_only=False)[
        "state_dict"]["ctx"]


def run_script(script, args, cwd, **env):
    import subprocess

    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_eval_scripts_evaluate_reference_style_checkpoints(runs, tmp_path):
    root, data, res = runs["root"], runs["data"], runs["results"]
    tag = f"BiomedCoOp_TinyBiomedCLIP/{TAG}/seed1/prompt_learner/model.pth.tar-2"
    reference_checkpoint(own_ctx(run_dir(root, "BiomedCoOp", 1)), tmp_path / f"released/few_shot/btmri/shots_2/{tag}")
    base_ctx = own_ctx(run_dir(root, "BiomedCoOp", 1, phase="train_base"))
    reference_checkpoint(base_ctx, tmp_path / f"released/base2new/train_base/btmri/shots_16/{tag}")
    env = {"SEEDS": "1 2", "LOAD_EPOCH": "2", "EVAL_ROOT": str(tmp_path / "eval"),
           "EXTRA_OPTS": "DATALOADER.NUM_WORKERS 0"}

    few = run_script("scripts/biomedcoop/eval_fewshot.sh", [data, "btmri", "2", "TinyBiomedCLIP"], tmp_path,
                     MODEL_ROOT=str(tmp_path / "released/few_shot"), **env)
    assert few.returncode == 0, few.stderr[-2000:]
    assert "seed 2 skipped" in few.stderr  # no checkpoint for seed 2: named, not a crash
    got = json.load(open(tmp_path / f"eval/btmri/shots_2/BiomedCoOp_TinyBiomedCLIP/{TAG}/seed1/results.json"))
    assert got["eval_only"] and got["accuracy"] == res[("BiomedCoOp", 1)]["accuracy"]

    b2n = run_script("scripts/biomedcoop/eval_base2new.sh", [data, "btmri", "TinyBiomedCLIP"], tmp_path,
                     MODEL_ROOT=str(tmp_path / "released/base2new"), **{**env, "SEEDS": "1"})
    assert b2n.returncode == 0, b2n.stderr[-2000:]
    for phase, key in (("test_base", "base"), ("test_new", "new")):
        path = tmp_path / f"eval/base2new/{phase}/btmri/shots_16/BiomedCoOp_TinyBiomedCLIP/{TAG}/seed1/results.json"
        got = json.load(open(path))
        assert got["subsample_classes"] == key and got["accuracy"] == res[key]["accuracy"]
        assert got["classnames"] == res[key]["classnames"]

    from reproduction_report import report_rows

    rows = report_rows(root, str(tmp_path / "eval"))
    same = [r for r in rows if r["dataset"] == "BTMRI" and r["seed"] == 1 and r["task"] in ("few_shot", "new")]
    assert len(same) == 2 and all(r["ours_minus_released"] == 0.0 and r["flag"] == "" for r in same)


class FakeHub:
    """Stands in for huggingface_hub: a repository holding seeds 1 and 2 of some checkpoints."""

    def __init__(self, files):
        self.files, self.downloads = files, []

    def api(self):
        hub = self

        class Api:
            def list_repo_files(self, repo_id, repo_type=None):
                assert repo_id == "TahaKoleilat/BiomedCoOp" and repo_type == "model"
                return list(hub.files)

        return Api()

    def download(self, repo_id, filename, repo_type=None, local_dir=None):
        self.downloads.append(filename)
        target = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(b"ckpt")
        return target


def test_download_checkpoints_fetches_every_released_seed_and_names_the_rest(tmp_path, monkeypatch, capsys):
    import download_checkpoints as dc
    import huggingface_hub

    from backbones.released import checkpoint_path

    released = [checkpoint_path("few_shot", "btmri", s, 16) for s in (1, 2)]
    released.append(checkpoint_path("base2new", "btmri", 1).replace("btmri", "BTMRI"))  # spelled differently
    hub = FakeHub(released + ["README.md"])
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.api)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.download)
    args = ["--datasets", "btmri", "busi", "--shots", "16", "--dir", str(tmp_path)]
    assert dc.main(args) == 0
    out = capsys.readouterr().out
    assert "3 downloaded, 0 already present" in out
    assert "few_shot btmri K=16: seed 3" in out and "few_shot busi K=16: seed 1, 2, 3" in out
    assert "base2new btmri: seed 2, 3" in out and "base2new busi" not in out  # BUSI has no class split
    assert os.path.isfile(tmp_path / checkpoint_path("base2new", "btmri", 1))
    assert os.path.isfile(tmp_path / checkpoint_path("few_shot", "btmri", 2, 16))

    hub.downloads.clear()
    assert dc.main(args) == 0  # a second run fetches nothing already there
    assert hub.downloads == [] and "0 downloaded, 3 already present" in capsys.readouterr().out

    def offline():
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "HfApi", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dc.main(["--datasets", "kvasir", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot list the checkpoints") and "HF_HUB_OFFLINE is set" in err


def test_reproduce_paper_dry_run_lists_runs_and_counts_tower_passes(tmp_path):
    env = {"DATASETS": "btmri", "SHOTS": "1 2", "SEEDS": "1", "METHODS": "coop biomedcoop nosuch"}
    proc = run_script("scripts/reproduce_paper.sh", ["--dry-run", "DATA", "BiomedCLIP"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nosuch skipped" in proc.stderr
    assert proc.stdout.count("to run") == 8 and "8 runs (0 already finished)" in proc.stdout
    # BTMRI: 4 classes, 1717 test images (858 per class half). Cache: 100 views x (4 + 8) images for
    # K = 1, 2; 50 views x 32 base-class images; the test set once. Without it, per method:
    # 100 x 4 + 1717 + 100 x 8 + 1717 + 50 x 32 + 858 + 858 (novel classes: evaluation only).
    assert "at most 4,517 with the feature cache" in proc.stdout
    assert f"({2 * (400 + 1717 + 800 + 1717 + 1600 + 858 + 858):,} if every image" in proc.stdout
    assert not (tmp_path / "output").exists()  # nothing ran


def test_reproduce_paper_runs_a_small_grid_and_ends_with_tables_and_plot(synthetic_btmri, tmp_path):
    env = {"DATASETS": "btmri", "SHOTS": "1", "SEEDS": "1", "METHODS": "biomedcoop", "BASE2NEW": "0",
           "EXTRA_OPTS": "OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0"}
    proc = run_script("scripts/reproduce_paper.sh", [synthetic_btmri, "TinyBiomedCLIP"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Few-shot accuracy (%), average over 1 dataset(s)" in proc.stdout
    assert "BiomedCoOp" in (tmp_path / "output/tables.md").read_text()
    from PIL import Image

    with Image.open(tmp_path / "output/results.png") as img:
        assert img.format == "PNG"


def test_an_older_eval_only_run_names_its_checkpoint_in_its_log(runs, tmp_path):
    import shutil

    from engine.run_weights import evaluated_model

    old = tmp_path / "seed1"
    shutil.copytree(run_dir(runs["root"], "BiomedCoOp", 1, phase="test_new"), old)
    record = json.load(open(old / "results.json"))
    record.pop("config", None)
    base_dir = run_dir(runs["root"], "BiomedCoOp", 1, phase="train_base")
    assert evaluated_model(str(old), record) == (base_dir, 2)
    assert evaluated_model(base_dir, runs["results"]["base"]) == (base_dir, None)
