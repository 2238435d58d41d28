"""Zero-shot (single template and LLM ensemble), CoCoOp, KgCoOp and ProGrad: each update by hand,
each method through its scripts, and checkpoints that reload to the same accuracy."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from script_runs import run_script_in_process
from test_trainers import make_trainer

import train
from engine.prompts import load_ensemble
from trainers.cocoop import ConditionalPromptLearner
from trainers.kgcoop import knowledge_distance
from trainers.prograd import ProGrad, project_conflicting, soft_target_loss
from trainers.prompt_learner import PromptLearner
from trainers.zeroshot import ensemble_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0"


def first_batch(trainer):
    batches = trainer.train_batches()
    trainer.num_batches, trainer.batch_idx = len(batches), 0
    return next(iter(batches))


# ----- CoCoOp --------------------------------------------------------------------------------


def test_cocoop_adds_each_images_meta_net_bias_to_every_context_token(tiny_biomedclip):
    learner = ConditionalPromptLearner(tiny_biomedclip, ["glioma", "normal"], ctx_init="a photo of a")
    d, hidden = tiny_biomedclip.embed_dim, tiny_biomedclip.embed_dim // 16
    net = learner.meta_net
    with torch.no_grad():
        # linear1 reads v[0] and -v[1]; linear2 writes 0.5 * h[0] (+ 0.25) into every width channel.
        net.linear1.weight.zero_()
        net.linear1.bias.zero_()
        net.linear1.weight[0, 0], net.linear1.weight[1, 1] = 1.0, -1.0
        net.linear2.weight.zero_()
        net.linear2.weight[:, 0] = 0.5
        net.linear2.bias.fill_(0.25)
    v = torch.zeros(2, d)
    v[0, 0], v[0, 1] = 2.0, 3.0  # h = relu(2, -3) = (2, 0): bias 0.5 * 2 + 0.25 = 1.25
    v[1, 0], v[1, 1] = -1.0, -4.0  # h = relu(-1, 4) = (0, 4): bias 0 + 0.25 = 0.25
    assert hidden >= 2
    shifted = learner.shifted_ctx(v)
    assert torch.allclose(shifted[0], learner.ctx + 1.25) and torch.allclose(shifted[1], learner.ctx + 0.25)

    prompts = learner(shifted)  # (B, C, L, width): the shifted context sits in slots 1..n_ctx of each class
    plain = learner()
    assert prompts.shape[:2] == (2, 2)
    for b in range(2):
        assert torch.allclose(prompts[b, :, 1:5], shifted[b].expand(2, -1, -1))
        assert torch.equal(prompts[b, :, :1], plain[:, :1]) and torch.equal(prompts[b, :, 5:], plain[:, 5:])

    # One batched text pass over (image, class) equals encoding each image's prompts on its own.
    batched = learner.text_features(shifted)
    for b in range(2):
        assert torch.allclose(batched[b], learner.text_features(shifted[b]), atol=1e-5)


def test_cocoop_logits_are_each_image_against_its_own_text(synthetic_btmri, tmp_path):
    t = make_trainer(synthetic_btmri, "CoCoOp_TinyBiomedCLIP", "configs/trainers/CoCoOp/vit_b16.yaml", tmp_path)
    feats = t.test_features()[0][:5]
    logits = t.model_inference(feats)
    v = F.normalize(feats, dim=-1)
    for b in range(5):
        text = F.normalize(t.prompt_learner.text_features(t.prompt_learner.shifted_ctx(v[b : b + 1])[0]), dim=-1)
        assert torch.allclose(logits[b], t.backbone.logit_scale * v[b] @ text.t(), atol=1e-4)
    assert t.cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 1 and t.max_epoch == 10


# ----- KgCoOp --------------------------------------------------------------------------------


def test_kgcoop_distance_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    hand = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # cosines 1 and 1/sqrt(2)
    expected = 1 - (1 + 1 / math.sqrt(2)) / 2
    assert abs(knowledge_distance(text, hand).item() - expected) < 1e-6


def test_one_kgcoop_step_is_ce_plus_w_times_the_distance(synthetic_btmri, tmp_path):
    t = make_trainer(synthetic_btmri, "KgCoOp_TinyBiomedCLIP", "configs/trainers/KgCoOp/few_shot/btmri.yaml", tmp_path)
    assert t.method_cfg.W == 2.0  # btmri's weight, through the per-dataset file's _BASE_
    batch = first_batch(t)
    t.set_model_mode("train")
    with torch.no_grad():
        # Initialised from "a photo of a", the learned prompts are the hand-crafted ones: distance 0.
        assert knowledge_distance(t.prompt_learner.text_features(), t.hand_crafted).abs() < 1e-5
        t.prompt_learner.ctx.add_(torch.randn(t.prompt_learner.ctx.shape, generator=torch.Generator().manual_seed(0)))
        logits, text = t.student_logits(batch["feat"])
        hand = F.normalize(t.backbone.encode_prompts([f"a photo of a {c}." for c in t.classnames]), dim=-1)
        cos = (text * hand).sum(-1)
        expected = F.cross_entropy(logits, batch["label"]) + 2.0 * (1 - cos.mean())
    summary = t.forward_backward(batch)
    assert abs(summary["loss"] - expected.item()) < 1e-5 and summary["loss_kg"] > 0


# ----- ProGrad -------------------------------------------------------------------------------


def test_prograd_projection_removes_only_a_conflicting_component():
    grad = torch.tensor([1.0, 0.0])
    conflicting = torch.tensor([-1.0, 1.0])  # cosine -1/sqrt(2) < 0
    # grad - (grad . u) u with u = (-1, 1)/sqrt(2): (1, 0) - (-1/sqrt 2)(-1, 1)/sqrt 2 = (0.5, 0.5)
    assert torch.allclose(project_conflicting(grad, conflicting), torch.tensor([0.5, 0.5]))
    assert torch.allclose(project_conflicting(grad, conflicting, lambda_=0.5), torch.tensor([0.75, 0.25]))
    agreeing = torch.tensor([1.0, 1.0])
    assert torch.equal(project_conflicting(grad, agreeing), grad)
    assert torch.equal(project_conflicting(grad, torch.zeros(2)), grad)  # self-teacher: zero guide


def test_prograd_soft_target_loss_by_hand():
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.zeros(1, 2)  # uniform target
    # T = 1: -(0.5 log 1/4 + 0.5 log 3/4)
    assert abs(soft_target_loss(student, teacher, 1.0).item() - (-0.5 * math.log(0.25) - 0.5 * math.log(0.75))) < 1e-6
    # T = 2: student/2 = (0, log sqrt 3), so p = (1, sqrt 3)/(1 + sqrt 3); the loss is multiplied by T^2 = 4
    s3 = math.sqrt(3.0)
    expected = -4 * 0.5 * (math.log(1 / (1 + s3)) + math.log(s3 / (1 + s3)))
    assert abs(soft_target_loss(student, teacher, 2.0).item() - expected) < 1e-6


def test_prograd_update_steps_on_the_projected_gradient():
    p = torch.nn.Parameter(torch.zeros(2))
    module = torch.nn.Module()
    module.p = p
    trainer = ProGrad.__new__(ProGrad)  # only the update machinery, no data or backbone
    trainer._models = {"m": module}
    trainer._optims = {"m": torch.optim.SGD([p], lr=1.0)}
    trainer._scheds = {"m": None}
    trainer.device = torch.device("cpu")
    trainer.grad_scaler = torch.amp.GradScaler("cpu", enabled=False)  # fp32: scaling is the identity
    loss_ce = (torch.tensor([1.0, 0.0]) * p).sum()  # gradient (1, 0)
    loss_kl = (torch.tensor([-1.0, 1.0]) * p).sum()  # gradient (-1, 1): conflicts
    trainer.prograd_backward_and_update(loss_ce, loss_kl, 1.0)
    assert torch.allclose(p.detach(), torch.tensor([-0.5, -0.5]))  # one step of lr 1 on (0.5, 0.5)
    loss_ce = (torch.tensor([1.0, 0.0]) * p).sum()
    loss_kl = (torch.tensor([1.0, 1.0]) * p).sum()  # agrees: plain cross-entropy step
    trainer.prograd_backward_and_update(loss_ce, loss_kl, 1.0)
    assert torch.allclose(p.detach(), torch.tensor([-1.5, -0.5]))


def test_prograd_teacher_is_the_zero_shot_model_and_self_teacher_reduces_to_coop(synthetic_btmri, tmp_path):
    pg = make_trainer(synthetic_btmri, "ProGrad_TinyBiomedCLIP", "configs/trainers/ProGrad/few_shot/btmri.yaml",
                      tmp_path / "pg")
    assert pg.method_cfg.T == 2.0 and pg.method_cfg.TEACHER == "zeroshot"
    batch = first_batch(pg)
    with torch.no_grad():
        logits, _ = pg.student_logits(batch["feat"])
        hand = F.normalize(pg.backbone.encode_prompts([f"a photo of a {c}." for c in pg.classnames]), dim=-1)
        expected = pg.backbone.logit_scale * F.normalize(batch["feat"], dim=-1) @ hand.t()
    assert torch.allclose(pg.teacher_logits(batch["feat"], logits), expected, atol=1e-5)

    selfish = make_trainer(synthetic_btmri, "ProGrad_TinyBiomedCLIP", "configs/trainers/ProGrad/few_shot/btmri.yaml",
                           tmp_path / "self", "TRAINER.PROGRAD.TEACHER", "self", "OPTIM.LR", "1.0")
    coop = make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", "configs/trainers/CoOp/vit_b16.yaml",
                        tmp_path / "coop", "OPTIM.LR", "1.0")
    for t in (selfish, coop):
        t.num_batches, t.batch_idx = 2, 0  # not the last batch: no scheduler step
        t.set_model_mode("train")
        t.forward_backward(batch)
    assert torch.allclose(selfish.prompt_learner.ctx, coop.prompt_learner.ctx, atol=1e-6)


def test_prograd_rejects_an_unknown_teacher(synthetic_btmri, tmp_path):
    from engine.errors import UserError

    with pytest.raises(UserError, match="TEACHER"):
        make_trainer(synthetic_btmri, "ProGrad_TinyBiomedCLIP", "configs/trainers/ProGrad/few_shot/btmri.yaml",
                     tmp_path, "TRAINER.PROGRAD.TEACHER", "student")


# ----- zero-shot -----------------------------------------------------------------------------


def test_ensemble_classifier_is_the_renormalised_mean_of_normalised_sentences():
    bank = torch.tensor([[[2.0, 0.0], [0.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]])  # (C=2, N=2, D=2)
    expected = torch.tensor([[1.0, 1.0], [1.0, 1.0]]) / math.sqrt(2.0)
    assert torch.allclose(ensemble_classifier(bank), expected)
    skewed = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])  # mean (0.8, 0.4), then unit length
    assert torch.allclose(ensemble_classifier(skewed), torch.tensor([[0.8, 0.4]]) / math.sqrt(0.8))


def test_zero_shot_trainers_build_their_classifiers_from_the_frozen_text_tower(synthetic_btmri, tmp_path):
    zs = make_trainer(synthetic_btmri, "ZeroShot_TinyBiomedCLIP", "configs/trainers/ZeroShot/vit_b16.yaml",
                      tmp_path / "a")
    with torch.no_grad():
        single = F.normalize(zs.backbone.encode_prompts([f"a photo of a {c}." for c in zs.classnames]), dim=-1)
    assert torch.allclose(zs.classifier, single, atol=1e-5)
    ens = make_trainer(synthetic_btmri, "ZeroShotEnsemble_TinyBiomedCLIP", "configs/trainers/ZeroShot/vit_b16.yaml",
                       tmp_path / "b", "TRAINER.ZEROSHOT.N_PROMPTS", "3")
    sentences = load_ensemble("BTMRI", ens.classnames, 3)
    with torch.no_grad():
        feats = F.normalize(ens.backbone.encode_prompts([s for c in sentences for s in c]), dim=-1).view(4, 3, -1)
    assert torch.allclose(ens.classifier, F.normalize(feats.mean(1), dim=-1), atol=1e-5)
    assert not torch.allclose(ens.classifier, single, atol=1e-3)


# ----- end to end and checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("script,trainer,env", [
    ("zeroshot", "ZeroShot", {}),
    ("zeroshot", "ZeroShotEnsemble", {"ENSEMBLE": "1"}),
    ("cocoop", "CoCoOp", {}),
    ("kgcoop", "KgCoOp", {}),
    ("prograd", "ProGrad", {}),
])
def test_few_shot_script(script, trainer, env, synthetic_btmri, tmp_path, monkeypatch):
    """Each prompt baseline's few_shot.sh (its run in this process; ENSEMBLE=1 picks the ensemble): the
    prompt learners train and save their final checkpoint, zero-shot only evaluates."""
    run_script_in_process(f"scripts/{script}/few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"],
                          tmp_path, monkeypatch, FAST, **env)
    seed_dir = tmp_path / "output/btmri/shots_2" / f"{trainer}_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend/seed1"
    result = json.load(open(seed_dir / "results.json"))
    assert result["method"] == trainer and result["total"] == 24 and 0 <= result["accuracy"] <= 100
    trained = trainer not in ("ZeroShot", "ZeroShotEnsemble")
    assert result["eval_only"] is not trained
    assert (seed_dir / "prompt_learner" / "model.pth.tar-2").exists() is trained


@pytest.mark.parametrize("script,trainer,env", [
    ("zeroshot", "ZeroShotEnsemble", {"ENSEMBLE": "1"}),
    ("cocoop", "CoCoOp", {}),  # trains 10 epochs and tests the novel classes with epoch 10
])
def test_base2new_script(script, trainer, env, synthetic_btmri, tmp_path, monkeypatch):
    """base2new.sh (its runs in this process): trained (or zero-shot) on the base classes, tested
    eval-only on the new classes."""
    opts = "DATALOADER.NUM_WORKERS 0 DATASET.NUM_SHOTS 2"
    run_script_in_process(f"scripts/{script}/base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, opts, **env)
    sub = f"btmri/shots_16/{trainer}_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    base = json.load(open(tmp_path / "output" / "base2new" / "train_base" / sub / "results.json"))
    new = json.load(open(tmp_path / "output" / "base2new" / "test_new" / sub / "results.json"))
    assert base["classnames"] == ["glioma tumor", "meningioma tumor"]
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]


@pytest.mark.parametrize("config", ["configs/trainers/KgCoOp/vit_b16_base2new.yaml",
                                    "configs/trainers/ProGrad/vit_b16_base2new.yaml"])
def test_base2new_configs_load(config):
    args = train.parse_args(["--trainer", "CoOp_TinyBiomedCLIP", "--config-file", os.path.join(REPO, config)])
    cfg = train.setup_cfg(args)
    assert cfg.OPTIM.MAX_EPOCH == 50 and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 128


@pytest.mark.parametrize("trainer,config", [
    ("CoCoOp", "configs/trainers/CoCoOp/vit_b16.yaml"),
    ("KgCoOp", "configs/trainers/KgCoOp/few_shot/btmri.yaml"),
    ("ProGrad", "configs/trainers/ProGrad/few_shot/btmri.yaml"),
])
def test_checkpoint_reloads_to_the_same_accuracy(trainer, config, synthetic_btmri, tmp_path):
    name = f"{trainer}_TinyBiomedCLIP"
    t = make_trainer(synthetic_btmri, name, config, tmp_path / "run", "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.5")
    trained = t.train()
    learned = {k: v.clone() for k, v in t.prompt_learner.state_dict().items()}
    fresh = make_trainer(synthetic_btmri, name, config, tmp_path / "eval", "OPTIM.MAX_EPOCH", "2")
    assert any(not torch.equal(v, fresh.prompt_learner.state_dict()[k]) for k, v in learned.items())
    fresh.load_model(str(tmp_path / "run"), epoch=2)
    for k, v in learned.items():
        assert torch.equal(v, fresh.prompt_learner.state_dict()[k]), k
    assert fresh.test()["accuracy"] == trained["accuracy"]


def test_cocoop_refuses_a_checkpoint_without_a_meta_network(tiny_biomedclip):
    from engine.errors import UserError

    learner = ConditionalPromptLearner(tiny_biomedclip, ["a", "b"], ctx_init="a photo of a")
    with pytest.raises(UserError, match="meta-network"):
        learner.load_state_dict({"ctx": torch.zeros_like(learner.ctx)})  # a CoOp checkpoint


def test_prompt_learner_builds_per_image_prompts_like_shared_ones(tiny_biomedclip):
    learner = PromptLearner(tiny_biomedclip, ["a", "b", "c"], ctx_init="a photo of a")
    stacked = learner(learner.ctx.unsqueeze(0).expand(2, -1, -1))
    assert stacked.shape[:2] == (2, 3) and torch.equal(stacked[0], learner()) and torch.equal(stacked[1], learner())


@pytest.mark.parametrize("backbone", ["TinyCLIP", "TinyPubMedCLIP", "TinyPMCCLIP"])
def test_every_method_trains_and_predicts_on_every_family(backbone, synthetic_btmri, tmp_path):
    configs = {
        "ZeroShot": "configs/trainers/ZeroShot/vit_b16.yaml",
        "ZeroShotEnsemble": "configs/trainers/ZeroShot/vit_b16.yaml",
        "CoCoOp": "configs/trainers/CoCoOp/vit_b16.yaml",
        "KgCoOp": "configs/trainers/KgCoOp/few_shot/btmri.yaml",
        "ProGrad": "configs/trainers/ProGrad/few_shot/btmri.yaml",
    }
    for method, config in configs.items():
        t = make_trainer(synthetic_btmri, f"{method}_{backbone}", config, tmp_path / method, "OPTIM.MAX_EPOCH", "1")
        if method.startswith("ZeroShot"):
            assert t.train()["total"] == 24
            continue
        before = t.prompt_learner.ctx.detach().clone()
        t.set_model_mode("train")
        summary = t.forward_backward(first_batch(t))
        assert math.isfinite(summary["loss"]) and not torch.equal(before, t.prompt_learner.ctx)
        logits = t.model_inference(t.test_features()[0][:3])
        assert logits.shape == (3, 4) and torch.isfinite(logits).all()
