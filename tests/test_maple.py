"""MaPLe on the tiny twins: its prompts as the authors build them, one step moves only the learned
tensors on every family that can hold them, checkpoints hold those tensors and reload to the same
accuracy, PMC-CLIP refuses in one line, and both scripts run end to end."""

import json
import os

import pytest
import torch
from script_runs import run_script_in_process

import train
from engine.errors import UserError
from engine.trainer import build_trainer
from engine.utils import set_random_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/trainers/MaPLe/default.yaml")


def args_for(root, model, out, extra=(), flags=()):
    return ["--root", root, "--seed", "1", "--trainer", f"MaPLe_{model}",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", CONFIG, "--output-dir", str(out), *flags,
            "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", *extra]


def make_trainer(root, model, out, extra=()):
    set_random_seed(1)
    return build_trainer(train.setup_cfg(train.parse_args(args_for(root, model, out, extra))))


def test_prompts_follow_the_authors_construction(synthetic_btmri, tmp_path):
    trainer = make_trainer(synthetic_btmri, "TinyCLIP", tmp_path)
    learner, backbone = trainer.prompt_learner, trainer.backbone
    assert trainer.prompt_depth == 2  # PROMPT_DEPTH 9 capped at the twin's two layers
    # the first N_CTX (2) tokens of "a photo of a" are learned; "of a {class}." stays in the prompt
    ids = backbone.tokenize(["a photo of a glioma tumor."])
    embeds = backbone.embed_tokens(ids)
    assert torch.equal(learner.ctx.detach(), embeds[0, 1:3])
    assert torch.equal(learner.token_suffix[0, :3], embeds[0, 3:6])
    width = backbone.tower_layers("image").width
    assert learner.proj.out_features == width and len(learner.deep_text) == len(learner.deep_proj) == 1
    hooks = learner.image_hooks()
    assert sorted(hooks.prompts) == [0, 1] and hooks.prompts[0].shape == (2, width)
    # checkpoint = the learned tensors: context, its projection, deep text tokens and their projections
    count = sum(p.numel() for p in learner.state_dict().values())
    text_w = backbone.token_width
    assert count == 2 * text_w + (text_w * width + width) * 2 + 2 * text_w


@pytest.mark.parametrize("model", ["TinyBiomedCLIP", "TinyCLIP", "TinyPubMedCLIP", "TinyOpenCLIP", "TinyHFCLIP",
                                   "TinyHFSigLIP"])
def test_one_step_moves_only_the_learned_tensors(synthetic_btmri, tmp_path, model):
    trainer = make_trainer(synthetic_btmri, model, tmp_path)
    frozen = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    learned = {k: v.clone() for k, v in trainer.prompt_learner.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    batch = next(iter(trainer.dm.train_loader_x))
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert all(torch.equal(frozen[k], v) for k, v in trainer.backbone.state_dict().items())
    after = trainer.prompt_learner.state_dict()
    moved = [k for k in learned if not torch.equal(learned[k], after[k])]
    # every learned tensor takes a step (the deep text tokens act through both towers)
    assert sorted(moved) == sorted(learned)


def test_checkpoint_holds_only_learned_tensors_and_reloads_to_the_same_accuracy(synthetic_btmri, tmp_path):
    out = tmp_path / "run"
    opts = ["OPTIM.MAX_EPOCH", "1"]
    assert train.main(args_for(synthetic_btmri, "TinyBiomedCLIP", out, opts)) == 0
    trained = json.load(open(out / "results.json"))
    assert trained["prompt_depth"] == 2
    state = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=False)["state_dict"]
    assert sorted(state) == sorted(["ctx", "proj.weight", "proj.bias", "deep_text.0", "deep_proj.0.weight",
                                    "deep_proj.0.bias"])
    evaluated = tmp_path / "eval"
    flags = ["--model-dir", str(out), "--eval-only"]
    assert train.main(args_for(synthetic_btmri, "TinyBiomedCLIP", evaluated, opts, flags)) == 0
    again = json.load(open(evaluated / "results.json"))
    assert again["accuracy"] == trained["accuracy"] and again["per_class_accuracy"] == trained["per_class_accuracy"]


def test_a_resnet_image_tower_refuses_in_one_line(synthetic_btmri, tmp_path):
    with pytest.raises(UserError) as err:
        make_trainer(synthetic_btmri, "TinyPMCCLIP", tmp_path)
    assert "\n" not in str(err.value) and "MaPLe needs deep prompts in the image tower" in str(err.value)


def test_prompt_depth_below_one_is_refused(synthetic_btmri, tmp_path):
    with pytest.raises(UserError, match="PROMPT_DEPTH"):
        make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path, ["TRAINER.MAPLE.PROMPT_DEPTH", "0"])


def run_script(script, args, cwd, monkeypatch):
    opts = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"
    run_script_in_process(f"scripts/maple/{script}", args, cwd, monkeypatch, opts)


def test_scripts_run_end_to_end(synthetic_btmri, tmp_path, monkeypatch):
    """few_shot.sh trains and tests MaPLe on BTMRI; base2new.sh trains on the base classes and tests the
    new ones (its runs in this process, as the scripts list them)."""
    run_script("few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    run = tmp_path / "output/btmri/shots_2/MaPLe_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    result = json.load(open(run / "results.json"))
    assert result["method"] == "MaPLe" and result["total"] == 24 and 0 <= result["accuracy"] <= 100
    run_script("base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    sub = "btmri/shots_16/MaPLe_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]


def test_bf16_autocast_step_keeps_fp32_prompts(synthetic_btmri, tmp_path):
    trainer = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path, ["TRAINER.MAPLE.PREC", "bf16"])
    assert trainer.train_amp_dtype == torch.bfloat16
    frozen = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the engine wraps around forward_backward
        summary = trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert all(p.dtype == torch.float32 for p in trainer.prompt_learner.parameters())
    assert all(torch.equal(frozen[k], v) for k, v in trainer.backbone.state_dict().items())
