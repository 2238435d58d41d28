"""GDA: the discriminant against a hand computation and a direct one, the alpha search, the fit on a
tiny twin, and the few-shot script end to end (its fit time is measured in benchmarks/, not here)."""

import json
import math
import os
import subprocess

import pytest
import torch
from script_runs import run_script_in_process

import train
from engine.errors import UserError
from engine.trainer import build_trainer
from trainers.gda import GDAHead, gda_classifier, novel_classifier, search_alpha, shrunk_precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "trainers", "GDA", "few_shot", "default.yaml")


def test_classifier_by_hand():
    # class 0 at (1,0), (3,0): mean (2,0); class 1 at (0,1), (0,3): mean (0,2). The features minus their
    # class mean are (+-1, 0), (0, +-1): S = diag(2, 2) / 3, so (N-1) S + tr(S) I = diag(10/3, 10/3) and
    # the precision is D * 0.3 = 0.6 on the diagonal.
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    means = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(shrunk_precision(feats.double(), labels, means.double()).float(), 0.6 * torch.eye(2))
    weight, bias = gda_classifier(feats, labels, 2)
    assert torch.allclose(weight, torch.tensor([[1.2, 0.0], [0.0, 1.2]]))
    expected_b = math.log(0.5) - 0.5 * 0.6 * 4.0  # log prior - mu^T P mu / 2
    assert torch.allclose(bias, torch.tensor([expected_b, expected_b]))


def test_classifier_against_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    n_classes, dim = 3, 5
    feats = torch.nn.functional.normalize(torch.randn(12, dim, generator=gen), dim=-1)  # N = 12 > D: invertible
    labels = torch.arange(12) % n_classes
    means = torch.stack([feats[labels == c].mean(0) for c in range(n_classes)])
    centred = feats - means[labels]
    cov = torch.cov(centred.t())  # the authors' estimate: torch.cov of the centred features
    precision = dim * torch.linalg.inv((len(feats) - 1) * cov + cov.trace() * torch.eye(dim))
    logits = feats @ precision @ means.t() + math.log(1 / n_classes) - 0.5 * torch.diag(means @ precision @ means.t())
    weight, bias = gda_classifier(feats, labels, n_classes)
    assert weight.shape == (dim, n_classes) and bias.shape == (n_classes,)
    assert torch.allclose(feats @ weight + bias, logits, atol=1e-4)
    # fewer features than dimensions: the trace term keeps the system solvable, still equal to the direct form
    few = feats[:4]
    weight, bias = gda_classifier(few, labels[:4], n_classes)
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()


def test_novel_classes_against_a_direct_computation():
    # the authors' synthesis: mean of the k base features nearest the text feature and the text feature
    # repeated; precision from those k features centred on the text feature, averaged over novel classes
    gen = torch.Generator().manual_seed(1)
    dim, k, reps = 4, 3, 2
    bank = torch.nn.functional.normalize(torch.randn(7, dim, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(2, dim, generator=gen), dim=-1)
    means, precisions = [], []
    for w in text:
        near = bank[(bank @ w).argsort(descending=True)[:k]]
        means.append(torch.cat([near, w.repeat(reps, 1)]).mean(0))
        cov = (near - w).t() @ (near - w) / (k - 1)
        precisions.append(dim * torch.linalg.pinv((k - 1) * cov + cov.trace() * torch.eye(dim)))
    means, precision = torch.stack(means), torch.stack(precisions).mean(0)
    weight, bias = novel_classifier(bank, text, k, reps)
    assert torch.allclose(weight, precision @ means.t(), atol=1e-5)
    assert torch.allclose(bias, math.log(0.5) - 0.5 * torch.diag(means @ precision @ means.t()), atol=1e-5)
    # fewer base features than k: all of them are used
    assert torch.allclose(novel_classifier(bank[:2], text, 64, reps)[0], novel_classifier(bank[:2], text, 2, reps)[0])


def test_classifier_needs_every_class():
    with pytest.raises(UserError, match=r"classes \[2\]"):
        gda_classifier(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 3)


def test_alpha_search_first_strict_improvement_and_default():
    labels = torch.tensor([0, 1])
    clip = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # zero-shot gets sample 1 wrong
    gda = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # sample 1 is right once alpha > 1
    alpha, acc = search_alpha(clip, gda, labels, [0.1, 1.0, 10.0, 100.0], default=0.1)
    assert (alpha, acc) == (10.0, 100.0)  # 1.0 only ties (argmax takes the first), 100 is no strict gain
    # nothing scores above 0: the default stays
    assert search_alpha(-clip, torch.zeros(2, 2), torch.tensor([0, 0]), [1.0], default=0.1) == (0.1, 0.0)


def test_head_adds_alpha_times_the_discriminant():
    head = GDAHead(2, 2, 0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        head.bias.copy_(torch.tensor([0.5, -0.5]))
        head.alpha.fill_(2.0)
    assert torch.allclose(head(torch.tensor([[1.0, 1.0]])), torch.tensor([[2 * (4 + 0.5), 2 * (6 - 0.5)]]))


def test_fit_pools_the_views_of_the_twin(synthetic_btmri, tmp_path):
    args = train.parse_args([
        "--root", synthetic_btmri, "--seed", "1", "--trainer", "GDA_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--config-file", CONFIG,
        "--output-dir", str(tmp_path / "run"), "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0",
        "TRAINER.GDA.AUGMENT_EPOCH", "2",
    ])
    trainer = build_trainer(train.setup_cfg(args))
    trainer.fit()
    views, labels = trainer.train_views(2)
    assert views.shape[:2] == (2, 8)
    weight, bias = gda_classifier(views.reshape(-1, views.shape[-1]), labels.repeat(2), 4)
    assert torch.allclose(trainer.head.weight, weight) and torch.allclose(trainer.head.bias, bias)
    assert any(math.isclose(float(trainer.head.alpha), a, rel_tol=1e-6) for a in (1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100))


def test_few_shot_script_end_to_end(synthetic_btmri, tmp_path, monkeypatch):
    """few_shot.sh (its run in this process) fits GDA on two views per image and saves the head with its
    feature bank; that checkpoint alone, evaluated, reproduces the test accuracy."""
    run_script_in_process("scripts/gda/few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, "DATALOADER.NUM_WORKERS 0 TRAINER.GDA.AUGMENT_EPOCH 2")
    run = tmp_path / "output" / "btmri" / "shots_2" / "GDA_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend" / "seed1"
    result = json.load(open(run / "results.json"))
    assert result["method"] == "GDA" and result["total"] == 24 and result["train_views"] == 2
    log = (run / "log.txt").read_text()
    assert "GDA on 16 features (2 view(s) per image)" in log and f"* accuracy: {result['accuracy']:.2f}%" in log
    state = torch.load(run / "gda" / "model.pth.tar-1", map_location="cpu", weights_only=False)["state_dict"]
    assert sorted(state) == ["alpha", "bank", "bias", "weight"] and state["weight"].shape[1] == 4
    assert state["bank"].shape[0] == 2 * 8  # the pooled views: 2 per image, 2 shots x 4 classes
    # the checkpoint alone reproduces the test accuracy (in this process: no second start-up)
    out = tmp_path / "eval"
    assert train.main([
        "--root", synthetic_btmri, "--seed", "1", "--trainer", "GDA_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--config-file", CONFIG,
        "--output-dir", str(out), "--model-dir", str(run), "--eval-only",
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "TRAINER.GDA.AUGMENT_EPOCH", "2",
    ]) == 0
    assert json.load(open(out / "results.json"))["accuracy"] == result["accuracy"]


def test_base_to_novel_script(synthetic_btmri, tmp_path, monkeypatch):
    """base2new.sh (its runs in this process): GDA trained on the base classes, then the new classes'
    heads built from their text and the base features, tested eval-only on the new classes."""
    run_script_in_process("scripts/gda/base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, "DATALOADER.NUM_WORKERS 0 TRAINER.GDA.AUGMENT_EPOCH 2")
    sub = os.path.join("btmri", "shots_16", "GDA_TinyBiomedCLIP", "nctx4_cscFalse_ctpend", "seed1")
    base = json.load(open(tmp_path / "output" / "base2new" / "train_base" / sub / "results.json"))
    new_dir = tmp_path / "output" / "base2new" / "test_new" / sub
    new = json.load(open(new_dir / "results.json"))
    assert base["classnames"] == ["glioma tumor", "meningioma tumor"]
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"] and new["total"] == 12
    assert "GDA: 2 novel class(es) built from their text and the 40 nearest of 40 base features" in (
        new_dir / "log.txt").read_text()


def test_the_scripts_pick_gdas_one_config_without_a_note():
    """GDA has one config for every dataset, so its scripts say nothing about a missing per-dataset file;
    a folder of per-dataset files that lacks the dataset's still gets the note."""
    def pick(folder, dataset):
        line = f'source scripts/common.sh; per_dataset_config "$REPO/{folder}" {dataset}'
        return subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True, check=True)

    gda = pick("configs/trainers/GDA/few_shot", "btmri")
    assert gda.stdout.strip() == CONFIG and gda.stderr == ""
    missing = pick("configs/trainers/BiomedCoOp/base_to_novel", "busi")
    assert missing.stdout.strip().endswith("BiomedCoOp/base_to_novel/default.yaml")
    assert "note: no " in missing.stderr and "busi.yaml" in missing.stderr
