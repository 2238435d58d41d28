"""EviSteer: the evidential gates, Dempster-Shafer fusion and KL regulariser against hand-computed
values; the steering modules' shapes, zero start and parameter count."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from script_runs import run_script_in_process

import train
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from engine.trainer import build_trainer
from engine.utils import set_random_seed
from trainers.evisteer import (
    ImageSteer,
    TextSteer,
    dempster_shafer_confidence,
    evidential_alpha,
    evisteer_kl,
    gamma_kl_to_unit_prior,
)

EULER = 0.5772156649015329


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_evidential_alpha_is_softplus_of_the_squared_code_plus_one():
    got = evidential_alpha(torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    expected = [softplus(0.0) + 1 + 1e-6, softplus(1.0) + 1 + 1e-6, softplus(4.0) + 1 + 1e-6]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert (got > 1).all()


def test_dempster_shafer_fusion_by_hand():
    u_text = torch.tensor([0.5, 0.0, 1.0, 0.25], dtype=torch.float64)
    u_image = torch.tensor([0.5, 0.3, 0.3, 0.6], dtype=torch.float64)
    got = dempster_shafer_confidence(u_text, u_image)
    # equal ignorance 0.5: masses 0.25 on 'update', conflict 0.5 -> 0.25 / 0.5
    # a certain text (u_t = 0) leaves the image's own belief renormalised to ~1
    # a text with no evidence (u_t = 1) vetoes the update
    # u_t 0.25, u_v 0.6: 0.75 * 0.4 / (1 - (0.75 * 0.6 + 0.25 * 0.4))
    expected = [0.25 / (0.5 + 1e-6), 0.7 / (0.7 + 1e-6), 0.0, 0.3 / (1 - 0.55 + 1e-6)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # broadcasting as the image gate uses it: u_text (r,), u_image (B, N, r)
    assert dempster_shafer_confidence(torch.rand(4), torch.rand(2, 5, 4)).shape == (2, 5, 4)


def test_gamma_kl_to_the_unit_prior_by_hand():
    # alpha 1: 0 - lgamma(1) = 0; alpha 2: digamma(2) - lgamma(2) = 1 - gamma; alpha 3: 2 (1.5 - gamma) - ln 2
    kl2, kl3 = 1 - EULER, 2 * (1.5 - EULER) - math.log(2)
    assert gamma_kl_to_unit_prior(torch.tensor([1.0])).item() == pytest.approx(0.0, abs=1e-7)
    assert gamma_kl_to_unit_prior(torch.tensor([2.0, 3.0])).item() == pytest.approx((kl2 + kl3) / 2, rel=1e-6)
    # image term: mean over blocks of element means; text term likewise; summed
    got = evisteer_kl([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 3.0]])], [torch.tensor([[2.0]])])
    assert got.item() == pytest.approx(((0 + kl2) / 2 + kl3) / 2 + kl2, rel=1e-6)
    assert gamma_kl_to_unit_prior(torch.tensor([1.5], dtype=torch.bfloat16)).dtype == torch.float32


def _set(module, down, up, gate, global_gate=0.0):
    with torch.no_grad():
        module.down.weight.copy_(torch.tensor(down, dtype=torch.float64))
        module.up.weight.copy_(torch.tensor(up, dtype=torch.float64))
        module.gate.weight.copy_(torch.tensor(gate, dtype=torch.float64))
        module.global_gate.fill_(global_gate)


def test_text_and_image_steering_by_hand():
    text = TextSteer(2, 1).double()
    _set(text, [[1.0, 0.0], [0.0, 1.0]], [[1.0], [2.0]], [[3.0]])
    tokens = torch.tensor([[[3.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [5.0, 5.0]]], dtype=torch.float64)  # (C 2, T 2, w 2)
    update, alpha = text(tokens, pooled=torch.tensor([0, 1]))
    a = softplus(0.0) + 1 + 1e-6  # z_unc 0 for the first token of prompt 0
    gate = sigmoid(3 * (1 - 1 / a))
    torch.testing.assert_close(update[0, 0], torch.tensor([3.0, 6.0], dtype=torch.float64) * 0.5 * gate)
    # the pooled token: position 0 of prompt 0, position 1 of prompt 1 (z_unc 5)
    torch.testing.assert_close(alpha, torch.tensor([[a], [softplus(25.0) + 1 + 1e-6]], dtype=torch.float64))

    image = ImageSteer(2, 1).double()
    _set(image, [[1.0, 0.0], [0.0, 1.0]], [[1.0], [2.0]], [[2.0]], global_gate=1.0)
    text_alpha = torch.tensor([[2.0], [4.0]], dtype=torch.float64)
    update, alpha = image(torch.tensor([[[3.0, 0.0]]], dtype=torch.float64), text_alpha)
    u_t, u_v = (0.5 + 0.25) / 2, 1 / a
    fused = (1 - u_t) * (1 - u_v) / (1 - ((1 - u_t) * u_v + u_t * (1 - u_v)) + 1e-6)
    expected = sigmoid(1.0) * sigmoid(2 * fused) * torch.tensor([3.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(update[0, 0], expected)
    assert alpha.shape == (1, 1, 1)


def test_modules_start_with_a_zero_update_and_count_3_w_r_plus_r_plus_1_values():
    torch.manual_seed(0)
    text, image = TextSteer(768, 4), ImageSteer(768, 4)
    assert sum(p.numel() for p in text.parameters()) == 3 * 768 * 4 + 4 + 1 == 9221
    tokens = torch.randn(3, 7, 768)
    update, alpha = text(tokens, torch.zeros(3, dtype=torch.long))
    assert not update.any() and alpha.shape == (3, 4)
    update, alpha = image(torch.randn(2, 5, 768), alpha)
    assert not update.any() and alpha.shape == (2, 5, 4)
    # the first step's gradient reaches `up` (and through u_t the text's down projection later)
    update.sum().backward()
    assert image.up.weight.grad.abs().sum() > 0


# ----- the trainer on the tiny twins ---------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/trainers/EviSteer/default.yaml")


def make_trainer(root, model, out, extra=()):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"EviSteer_{model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", CONFIG, "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", *extra,
    ])
    set_random_seed(1)
    return build_trainer(train.setup_cfg(args))


@pytest.mark.parametrize("model", ["TinyBiomedCLIP", "TinyCLIP"])
def test_starts_as_the_frozen_model_and_one_step_moves_only_the_steering(synthetic_btmri, tmp_path, model):
    trainer = make_trainer(synthetic_btmri, model, tmp_path)
    towers = (trainer.backbone.tower_layers("image"), trainer.backbone.tower_layers("text"))
    assert trainer.steered == list(range(min(t.depth for t in towers) - 1))  # after blocks 0..L-2 = before 1..L-1
    per_layer = sum(3 * t.width * 4 + 4 + 1 for t in towers)
    assert sum(p.numel() for p in trainer.learned.parameters()) == len(trainer.steered) * per_layer
    assert trainer._scheds["steering"].T_max == 400  # the public code's fixed period

    frozen = BACKBONE_REGISTRY.get(model)().eval()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = F.normalize(frozen.encode_text(trainer.text_ids), dim=-1)
        expected = trainer.scale * F.normalize(frozen.encode_image(images), dim=-1) @ text.t()
        trainer.set_model_mode("eval")
        with trainer.forward_context():
            text_now = trainer.class_text_features()  # the text pass first: it conditions the image gates
            got = trainer.logits(trainer.image_features({"img": images}), text_now)
    # zero up projections: the hooks add exact zeros to the frozen model's own forward
    assert torch.equal(got, expected)

    learned_ids = {id(p) for p in trainer.learned.parameters()}
    before = {k: v.detach().clone() for k, v in trainer.backbone.state_dict(keep_vars=True).items()
              if id(v) not in learned_ids}
    before_learned = {k: v.detach().clone() for k, v in trainer.learned.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.epoch = 0
    summary = trainer.forward_backward(next(iter(trainer.train_batches())))
    assert math.isfinite(summary["loss"]) and summary["loss_kl"] > 0
    after = trainer.backbone.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    moved = {k for k, v in trainer.learned.state_dict().items() if not torch.equal(v, before_learned[k])}
    # the first step moves every up projection (their gradient is gate x code, nonzero) and the KL
    # reaches every down projection through the evidence codes
    assert {k for k in before_learned if k.endswith("up/weight") or k.endswith("down/weight")} <= moved
    assert not any(p.requires_grad for p in trainer.backbone.parameters())


@pytest.mark.parametrize("model", ["TinyBiomedCLIP", "TinyCLIP", "TinyHFSigLIP"])
def test_text_confidence_is_read_at_the_token_the_text_tower_pools(synthetic_btmri, tmp_path, model):
    """BERT-style towers pool [CLS] (token 0), CLIP's the end-of-text token (the largest BPE id),
    SigLIP's the last position: the recorded text alphas are the steering module's at that token."""
    trainer = make_trainer(synthetic_btmri, model, tmp_path)
    ids = trainer.text_ids
    expected = {"TinyBiomedCLIP": torch.zeros(len(ids), dtype=torch.long), "TinyCLIP": ids.argmax(dim=-1),
                "TinyHFSigLIP": torch.full((len(ids),), ids.shape[1] - 1)}[model]
    module = trainer.steering["text"][0]
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        trainer.class_text_features()
    handle.remove()
    with torch.no_grad():
        alpha = module.codes(seen[0])[1]
    assert torch.equal(trainer._text_alphas[0], alpha[torch.arange(len(ids)), expected])
    # each class prompt has its own confidence (a causal tower's token 0 would give them all the same)
    assert len({tuple(row.tolist()) for row in trainer._text_alphas[0]}) == len(ids)


def test_pmcclip_refuses_in_one_line(synthetic_btmri, tmp_path):
    with pytest.raises(UserError) as err:
        make_trainer(synthetic_btmri, "TinyPMCCLIP", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "EviSteer needs activation steering in the image tower" in message


def test_checkpoint_holds_only_the_steering_and_reloads_to_the_same_accuracy(synthetic_btmri, tmp_path):
    out = tmp_path / "run"
    common = ["--root", synthetic_btmri, "--seed", "1", "--trainer", "EviSteer_TinyBiomedCLIP",
              "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--config-file", CONFIG]
    opts = ["DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2"]
    assert train.main([*common, "--output-dir", str(out), *opts]) == 0
    trained = json.load(open(out / "results.json"))
    state = torch.load(out / "steering" / "model.pth.tar-2", weights_only=False)["state_dict"]
    ends = ("down/weight", "up/weight", "gate/weight", "global_gate")
    assert all(k.startswith(("image/", "text/")) and k.endswith(ends) for k in state)
    assert sum(v.numel() for v in state.values()) == 2 * (3 * 64 * 4 + 5)  # one steered block per tower
    assert train.main([*common, "--output-dir", str(tmp_path / "eval"), "--model-dir", str(out), "--eval-only",
                       *opts]) == 0
    again = json.load(open(tmp_path / "eval" / "results.json"))
    assert again["accuracy"] == trained["accuracy"] and again["per_class_accuracy"] == trained["per_class_accuracy"]


def test_full_size_steering_count_at_biomedclip_widths():
    # 11 steered blocks (1-11) x (image + text) x (3 x 768 x 4 + 4 + 1); the public code also builds a
    # module for block 0 that it never calls, which its 0.11% counts (benchmarks/bench_tower_tuning.py).
    modules = [cls(768, 4) for _ in range(11) for cls in (ImageSteer, TextSteer)]
    assert sum(p.numel() for m in modules for p in m.parameters()) == 11 * 2 * 9221 == 202_862


def run_script(script, args, cwd, monkeypatch):
    opts = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"
    run_script_in_process(f"scripts/evisteer/{script}", args, cwd, monkeypatch, opts)


def test_scripts_run_few_shot_and_base_to_novel(synthetic_btmri, tmp_path, monkeypatch):
    run_script("few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    result = json.load(open(tmp_path / "output/btmri/shots_2/EviSteer_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
                            / "results.json"))
    assert result["method"] == "EviSteer" and result["total"] == 24 and 0 <= result["accuracy"] <= 100
    run_script("base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    sub = "btmri/shots_16/EviSteer_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]
