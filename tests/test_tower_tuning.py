"""CLIP-LoRA and CLIP-SVD: frozen model at initialisation, only learned tensors move, published
parameter budgets at full size, the iteration budget and schedules, bf16 autocast, checkpoints
that reload to the same accuracy, and the four scripts end to end on the tiny twins."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from script_runs import run_script_in_process

import train
from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from engine.trainer import build_trainer
from engine.utils import set_random_seed
from trainers.clip_lora import LowRankUpdate, attach_lora
from trainers.tower_tuning import find_weights, select_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "CLIPLoRA": os.path.join(REPO, "configs/trainers/CLIPLoRA/default.yaml"),
    "CLIPSVD": os.path.join(REPO, "configs/trainers/CLIPSVD/few_shot/btmri.yaml"),
}
TWINS = ("TinyBiomedCLIP", "TinyCLIP", "TinyPMCCLIP")


def make_trainer(root, method, model, out, extra=()):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"{method}_{model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", CONFIGS[method], "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", *extra,
    ])
    set_random_seed(1)
    return build_trainer(train.setup_cfg(args))


def frozen_state(trainer) -> dict:
    learned = {id(p) for p in trainer.learned.parameters()}
    return {k: v.detach().clone() for k, v in trainer.backbone.state_dict(keep_vars=True).items()
            if id(v) not in learned}


def batch_of(trainer, n=4):
    loader = trainer.train_batches()
    trainer.epoch = 0
    return next(iter(loader))


@pytest.mark.parametrize("model", TWINS)
@pytest.mark.parametrize("method", ["CLIPLoRA", "CLIPSVD"])
def test_starts_as_the_frozen_model_and_one_step_moves_only_learned_tensors(synthetic_btmri, tmp_path, method, model):
    trainer = make_trainer(synthetic_btmri, method, model, tmp_path)
    frozen = BACKBONE_REGISTRY.get(model)().eval()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = F.normalize(frozen.encode_text(trainer.text_ids), dim=-1)
        expected = trainer.scale * F.normalize(frozen.encode_image(images), dim=-1) @ text.t()
        trainer.set_model_mode("eval")
        with trainer.forward_context():
            got = trainer.logits(trainer.backbone.encode_image(images), trainer.class_text_features())
    if method == "CLIPLoRA":
        updates = [m for m in trainer.backbone.modules() if isinstance(m, LowRankUpdate)]
        peft_b = [p for n, p in trainer.learned.named_parameters() if "lora_B/default" in n]
        assert all(not u.lora_B.any() for u in updates) and all(not b.any() for b in peft_b)
        assert updates or peft_b
        if model == "TinyBiomedCLIP":
            # timm's own attention and BERT run unchanged, plus a zero update: bit-identical.
            assert torch.equal(got, expected)
    else:
        # min(out, in) singular values per selected matrix (ties the full-size count below to the
        # tensors actually trained), and every rebuilt U diag(s) V^T equals the pretrained weight.
        planned = select_weights(frozen, trainer.method_cfg, "CLIPSVD")
        assert sum(p.numel() for p in trainer.learned.parameters()) == sum(min(w.shape) for w in planned)
        for w in planned:
            original = getattr(w.owner, w.param).chunk(w.blocks)[w.block]
            now = getattr(trainer.backbone.get_submodule(w.name), w.param).chunk(w.blocks)[w.block]
            assert (now - original).abs().max() <= 1e-5 * max(1.0, original.abs().max().item())
    # nn.MultiheadAttention / the attention pool are re-run step by step (and SVD rounds): float noise only.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # One training step: the learned tensors move, everything else (BatchNorm statistics included)
    # stays bit-identical.
    before_frozen = frozen_state(trainer)
    before_learned = {k: v.detach().clone() for k, v in trainer.learned.state_dict().items()}
    trainer.set_model_mode("train")
    assert math.isfinite(trainer.forward_backward(batch_of(trainer))["loss"])
    after_frozen = frozen_state(trainer)
    assert before_frozen.keys() == after_frozen.keys()
    assert [k for k in before_frozen if not torch.equal(before_frozen[k], after_frozen[k])] == []
    moved = {k: not torch.equal(v, trainer.learned.state_dict()[k]) for k, v in before_learned.items()}
    if method == "CLIPLoRA":
        # B gets the gradient on the first step (A's gradient is B^T(...) = 0 while B = 0).
        assert all(moved[k] for k in moved if k.endswith("lora_B") or "lora_B/" in k)
    else:
        assert all(moved.values())
    trainable = [n for n, p in trainer.backbone.named_parameters() if p.requires_grad]
    assert len(trainable) == len(list(trainer.learned.parameters()))


def test_learned_counts_equal_the_published_budgets_at_full_biomedclip_size():
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PRETRAINED = False
    full = BACKBONE_REGISTRY.get("BiomedCLIP")(cfg)  # random weights, full architecture
    # CLIP-SVD: 12 blocks x (q, k, v, o, fc1, fc2) x 768 singular values x 2 towers (factorising all
    # 144 matrices here would take minutes on CPU; the count is min(out, in) per selected matrix,
    # which the twin test below ties to the tensors actually trained).
    svd = select_weights(full, cfg.TRAINER.CLIPSVD, "CLIPSVD")
    assert len(svd) == 144 and sum(min(w.shape) for w in svd) == 12 * 6 * 768 * 2 == 110_592
    # CLIP-LoRA: 12 blocks x (q, k, v) x rank 2 x (768 + 768) x 2 towers.
    attach_lora(full, select_weights(full, cfg.TRAINER.CLIPLORA, "CLIPLORA"), 2, 1.0, 0.25)
    lora = sum(p.numel() for n, p in full.named_parameters() if "lora_" in n)
    assert lora == 12 * 3 * 2 * (768 + 768) * 2 == 221_184


def test_weights_are_found_in_every_family_with_layers_and_roles():
    for model, image_roles in (("TinyBiomedCLIP", "qkvo" + "mm"), ("TinyCLIP", "qkvo" + "mm"), ("TinyPMCCLIP", "qkvo")):
        weights = find_weights(BACKBONE_REGISTRY.get(model)())
        text = [w for w in weights if w.tower == "text"]
        image = [w for w in weights if w.tower == "image"]
        assert sorted({w.layer for w in text}) == [0, 1] and len(text) == 2 * 6
        per_layer = len(image) if model == "TinyPMCCLIP" else len(image) // 2
        assert per_layer == len(image_roles)
        if model == "TinyPMCCLIP":  # no blocks: the attention pool alone, layer None
            assert {w.layer for w in image} == {None}


def test_layer_and_param_selection_and_bad_values(synthetic_btmri, tmp_path):
    backbone = BACKBONE_REGISTRY.get("TinyBiomedCLIP")()
    cfg = get_cfg_default()
    node = cfg.TRAINER.CLIPSVD
    node.LAYERS, node.PARAMS, node.TOWERS = "1-1", ("q", "mlp"), "text"
    chosen = select_weights(backbone, node, "CLIPSVD")
    assert sorted((w.tower, w.layer, w.role) for w in chosen) == [("text", 1, "mlp")] * 2 + [("text", 1, "q")]
    node.LAYERS = "top"
    with pytest.raises(UserError, match="LAYERS"):
        select_weights(backbone, node, "CLIPSVD")
    with pytest.raises(UserError, match="PREC"):
        make_trainer(synthetic_btmri, "CLIPLoRA", "TinyBiomedCLIP", tmp_path, ["TRAINER.CLIPLORA.PREC", "half"])


def run_counting_steps(trainer, monkeypatch):
    lrs = []
    original = type(trainer).forward_backward

    def counted(self, batch):
        lrs.append(self.get_current_lr())
        return original(self, batch)

    monkeypatch.setattr(type(trainer), "forward_backward", counted)
    trainer.cfg.defrost()
    trainer.cfg.TEST.NO_TEST = True
    trainer.train()
    return lrs


def test_lora_runs_exactly_iters_per_shot_times_shots_with_a_cosine_over_all_of_them(
        synthetic_btmri, tmp_path, monkeypatch):
    # 16 images, batch 6 -> 3 iterations per epoch (the last batch of 4 is kept); 2 x 4 shots = 8
    # iterations -> epochs of 3, 3 and 2 iterations.
    trainer = make_trainer(synthetic_btmri, "CLIPLoRA", "TinyBiomedCLIP", tmp_path,
                           ["TRAINER.CLIPLORA.ITERS_PER_SHOT", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "6"])
    assert (trainer.iters_per_epoch, trainer.total_iters, trainer.max_epoch) == (3, 8, 3)
    lrs = run_counting_steps(trainer, monkeypatch)
    base, low = 2e-4, 1e-6
    assert lrs == pytest.approx([low + (base - low) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)])
    assert os.path.isfile(tmp_path / "lora" / "model.pth.tar-3")


def test_svd_cosine_has_a_period_of_max_epoch_steps_as_in_the_reference(synthetic_btmri, tmp_path, monkeypatch):
    # 3 iterations per epoch, 2 epochs, T_max = 2 stepped every iteration: down, up, down again.
    trainer = make_trainer(synthetic_btmri, "CLIPSVD", "TinyPMCCLIP", tmp_path,
                           ["OPTIM.MAX_EPOCH", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "6"])
    lrs = run_counting_steps(trainer, monkeypatch)
    base, low = 0.007, 1e-6
    assert lrs == pytest.approx([low + (base - low) * (1 + math.cos(math.pi * t / 2)) / 2 for t in range(6)])
    assert lrs[4] == pytest.approx(base)


@pytest.mark.parametrize("method", ["CLIPLoRA", "CLIPSVD"])
def test_one_step_under_cpu_bf16_autocast(synthetic_btmri, tmp_path, method):
    key = "CLIPLORA" if method == "CLIPLoRA" else "CLIPSVD"
    model = "TinyCLIP" if method == "CLIPLoRA" else "TinyBiomedCLIP"
    fp32 = make_trainer(synthetic_btmri, method, model, tmp_path / "fp32")
    bf16 = make_trainer(synthetic_btmri, method, model, tmp_path / "bf16", [f"TRAINER.{key}.PREC", "bf16"])
    assert bf16.amp_dtype == torch.bfloat16 and fp32.amp_dtype is None
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = []
        for t in (fp32, bf16):
            t.set_model_mode("eval")
            with t.forward_context():
                outs.append(t.logits(t.backbone.encode_image(images), t.class_text_features()))
    assert outs[1].dtype == torch.float32
    # bf16 keeps ~3 significant digits; through a random twin the logits move by a few % of their range
    torch.testing.assert_close(outs[1], outs[0], atol=0.1 * outs[0].abs().max().item(), rtol=0)
    before = frozen_state(bf16)
    bf16.set_model_mode("train")
    assert math.isfinite(bf16.forward_backward(batch_of(bf16))["loss"])
    assert all(p.dtype == torch.float32 for p in bf16.learned.parameters())  # fp32 master weights
    after = frozen_state(bf16)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_holds_only_learned_tensors_and_reloads_to_the_same_accuracy(synthetic_btmri, tmp_path):
    out = tmp_path / "run"
    common = ["--root", synthetic_btmri, "--seed", "1", "--trainer", "CLIPSVD_TinyPMCCLIP",
              "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
              "--config-file", CONFIGS["CLIPSVD"]]
    opts = ["DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2"]
    assert train.main([*common, "--output-dir", str(out), *opts]) == 0
    trained = json.load(open(out / "results.json"))
    ckpt = torch.load(out / "singular_values" / "model.pth.tar-2", weights_only=False)
    values = ckpt["state_dict"]
    assert all(k.endswith("singular_values") for k in values)
    assert sum(v.numel() for v in values.values()) == 2 * 6 * 64 + 3 * 256 + 32  # BERT blocks + attention pool
    assert train.main([*common, "--output-dir", str(tmp_path / "eval"), "--model-dir", str(out), "--eval-only",
                       *opts]) == 0
    again = json.load(open(tmp_path / "eval" / "results.json"))
    assert again["accuracy"] == trained["accuracy"] and again["per_class_accuracy"] == trained["per_class_accuracy"]


@pytest.mark.parametrize("script,model,extra", [
    ("clip_lora/few_shot.sh", "TinyPMCCLIP", "TRAINER.CLIPLORA.ITERS_PER_SHOT 1"),
    ("clip_svd/few_shot.sh", "TinyBiomedCLIP", "OPTIM.MAX_EPOCH 1"),
])
def test_few_shot_scripts_end_to_end(synthetic_btmri, tmp_path, monkeypatch, script, model, extra):
    """CLIP-LoRA's and CLIP-SVD's few_shot.sh (its run in this process) train and test on BTMRI."""
    run_script_in_process(f"scripts/{script}", [synthetic_btmri, "btmri", "4", model], tmp_path, monkeypatch,
                          f"{extra} DATALOADER.NUM_WORKERS 0")
    method = "CLIPLoRA" if "lora" in script else "CLIPSVD"
    result = json.load(open(tmp_path / "output/btmri/shots_4" / f"{method}_{model}" / "nctx4_cscFalse_ctpend/seed1"
                            / "results.json"))
    assert result["method"] == method and result["total"] == 24 and 0 <= result["accuracy"] <= 100


@pytest.mark.parametrize("script,model,extra", [
    ("clip_lora/base2new.sh", "TinyBiomedCLIP", "TRAINER.CLIPLORA.ITERS_PER_SHOT 0 OPTIM.MAX_EPOCH 1"),
    ("clip_svd/base2new.sh", "TinyPMCCLIP", "OPTIM.MAX_EPOCH 1"),
])
def test_base2new_scripts_test_the_latest_checkpoint_on_new_classes(synthetic_btmri, tmp_path, monkeypatch, script,
                                                                   model, extra):
    """base2new.sh (its runs in this process) with no --load-epoch: the new classes are tested with the
    latest checkpoint of the base run, whatever its epoch count."""
    run_script_in_process(f"scripts/{script}", [synthetic_btmri, "btmri", model], tmp_path, monkeypatch,
                          f"{extra} DATALOADER.NUM_WORKERS 0")
    method = "CLIPLoRA" if "lora" in script else "CLIPSVD"
    sub = f"btmri/shots_16/{method}_{model}/nctx4_cscFalse_ctpend/seed1"
    base = json.load(open(tmp_path / "output/base2new/train_base" / sub / "results.json"))
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert base["classnames"] == ["glioma tumor", "meningioma tumor"]
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]
