"""Method behaviour that the numbers depend on: train/eval modes, the teacher bank, one optimiser step."""

import os

import torch
import torch.nn.functional as F

import train
from engine.prompts import load_ensemble
from engine.trainer import build_trainer
from trainers.biomedcoop import kdsp_loss, sccm_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_trainer(root, trainer, config, tmp_path, *extra):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, config), "--output-dir", str(tmp_path),
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", *extra,
    ])
    return build_trainer(train.setup_cfg(args))


def test_biomedcoop_trains_with_text_dropout_and_a_fixed_eval_mode_bank(synthetic_btmri, tmp_path):
    t = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP",
                     "configs/trainers/BiomedCoOp/few_shot/btmri.yaml", tmp_path)
    assert t.prompt_bank.shape == (4, 50, t.backbone.embed_dim)
    assert torch.allclose(t.prompt_bank.norm(dim=-1), torch.ones(4, 50))
    sentence = load_ensemble("BTMRI", t.classnames, 50)[0][0]
    with torch.no_grad():  # the bank is the eval-mode encoding of the ensemble sentences
        first = F.normalize(t.backbone.encode_prompts([sentence]), dim=-1)
    assert torch.allclose(first[0], t.prompt_bank[0, 0], atol=1e-5)
    t.set_model_mode("train")
    assert t.backbone.text_tower.training  # BERT dropout active, as in the reference
    t.set_model_mode("eval")
    assert not t.backbone.text_tower.training


def test_coop_keeps_the_text_tower_in_eval_mode(synthetic_btmri, tmp_path):
    t = make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", "configs/trainers/CoOp/vit_b16.yaml", tmp_path)
    t.set_model_mode("train")
    assert not t.backbone.text_tower.training and t.prompt_learner.training


def test_one_biomedcoop_step_matches_the_losses_computed_by_hand(synthetic_btmri, tmp_path):
    t = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP",
                     "configs/trainers/BiomedCoOp/few_shot/btmri.yaml", tmp_path, "OPTIM.MAX_EPOCH", "2")
    t.set_model_mode("eval")  # no dropout, so the recomputation below sees the same network
    t.set_model_mode = lambda *a, **k: None  # keep eval mode inside forward_backward
    batches = t.train_batches()
    t.num_batches, t.batch_idx = len(batches), 0
    batch = next(iter(batches))
    ctx_before = t.prompt_learner.ctx.detach().clone()
    with torch.no_grad():
        feats = F.normalize(batch["feat"], dim=-1)
        text = F.normalize(t.prompt_learner.text_features(), dim=-1)
        scale = t.backbone.logit_scale
        logits = scale * feats @ text.t()
        teacher = t.teacher_logits(feats, scale)
        expected = (F.cross_entropy(logits, batch["label"]) + 0.5 * sccm_loss(text, t.ensemble_mean)
                    + 0.25 * kdsp_loss(logits, teacher))  # btmri: SCCM 0.5, KDSP 0.25
    summary = t.forward_backward(batch)
    assert abs(summary["loss"] - expected.item()) < 1e-5
    assert not torch.equal(ctx_before, t.prompt_learner.ctx)  # one SGD step moved the context
