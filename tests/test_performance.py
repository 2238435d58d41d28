"""Reduced precision where it is asked for: frozen-tower features (FEATURES.PRECISION / STORE_DTYPE)
and the training step (TRAINER.<METHOD>.PREC), checked on CPU against fp32 with tiny twins.

Tolerances: bf16 keeps 8 bits of mantissa (relative error about 0.4% per operation), so bf16
features must point the same way as fp32 ones (cosine > 0.99 for every image) and a bf16 training
step must give the fp32 loss within 2% and an update pointing the same way (cosine > 0.99).
"""

import logging
import os

import pytest
import torch
import torch.nn.functional as F

import train
from engine.data import build_transform, transform_spec
from engine.errors import UserError
from engine.features import FeatureCache
from engine.trainer import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def btmri_test_items(root):
    from engine.config import get_cfg_default
    from engine.data import DataManager

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs/datasets/btmri.yaml"))
    cfg.DATASET.ROOT, cfg.DATALOADER.NUM_WORKERS = root, 0
    return DataManager(cfg).dataset.test[:12], cfg


def test_bf16_features_match_fp32_and_fp16_storage_round_trips(synthetic_btmri, tiny_biomedclip, tmp_path):
    items, cfg = btmri_test_items(synthetic_btmri)
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    cache_dir = str(tmp_path / "cache")
    fp32 = FeatureCache(cache_dir, tiny_biomedclip, CPU, batch_size=5).get(items, tfm, spec)[0]
    bf16_cache = FeatureCache(cache_dir, tiny_biomedclip, CPU, batch_size=5, precision="bf16")
    bf16 = bf16_cache.get(items, tfm, spec)[0]
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # really computed in bf16
    assert F.cosine_similarity(bf16, fp32, dim=-1).min() > 0.99

    # fp16 storage: written as fp16, read back (by a fresh cache) as fp32 with fp16's rounding only.
    FeatureCache(cache_dir, tiny_biomedclip, CPU, store="fp16").get(items, tfm, spec)
    reread = FeatureCache(cache_dir, tiny_biomedclip, CPU, store="fp16")
    reread._compute = lambda *a: pytest.fail("fp16 features should have been read from disk")
    stored = reread.get(items, tfm, spec)[0]
    assert stored.dtype == torch.float32 and torch.equal(stored, fp32.half().float())
    # Each precision has its own files; the fp32 ones are untouched by the others.
    names = sorted(os.listdir(bf16_cache.dir))
    assert len([n for n in names if n.endswith(".pt")]) == 3
    again = FeatureCache(cache_dir, tiny_biomedclip, CPU)
    again._compute = lambda *a: pytest.fail("fp32 features should have been read from disk")
    assert torch.equal(again.get(items, tfm, spec)[0], fp32)


def test_bad_precision_values_are_refused(tiny_biomedclip, tmp_path):
    with pytest.raises(UserError, match="FEATURES.PRECISION"):
        FeatureCache(str(tmp_path), tiny_biomedclip, CPU, precision="half")
    with pytest.raises(UserError, match="FEATURES.STORE_DTYPE"):
        FeatureCache(str(tmp_path), tiny_biomedclip, CPU, store="bf16")


def make_trainer(root, trainer, config, out, *extra):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, config), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", *extra,
    ])
    return build_trainer(train.setup_cfg(args))


def one_epoch(trainer) -> tuple[dict, torch.Tensor]:
    """Losses of one epoch and the change it made to the learned context."""
    torch.manual_seed(0)
    trainer.before_train()
    before = trainer.prompt_learner.ctx.detach().clone()
    losses = trainer.run_epoch()
    return losses, trainer.prompt_learner.ctx.detach() - before


def test_bf16_training_step_on_cpu_is_close_to_fp32(synthetic_btmri, tmp_path):
    config = "configs/trainers/CoOp/vit_b16.yaml"
    fp32 = make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", config, tmp_path / "fp32")
    bf16 = make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", config, tmp_path / "bf16",
                        "TRAINER.COOP.PREC", "bf16")
    assert fp32.train_amp_dtype is None and bf16.train_amp_dtype == torch.bfloat16
    assert torch.equal(fp32.prompt_learner.ctx, bf16.prompt_learner.ctx)  # same start
    loss32, step32 = one_epoch(fp32)
    loss16, step16 = one_epoch(bf16)
    assert step16.abs().sum() > 0 and not torch.equal(step16, step32)  # it moved, and not in fp32
    assert abs(loss16["loss"] - loss32["loss"]) <= 0.02 * abs(loss32["loss"])
    assert F.cosine_similarity(step16.flatten(), step32.flatten(), dim=0) > 0.99


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # fp16 scaler skips steps by design
def test_biomedcoop_steps_under_bf16_and_fp16_with_a_scaler(synthetic_btmri, tmp_path):
    config = "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"
    for prec, scaled in (("bf16", False), ("fp16", True)):
        t = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / prec,
                         "TRAINER.BIOMEDCOOP.PREC", prec)
        assert t.grad_scaler.is_enabled() == scaled  # fp16 gradients need loss scaling; bf16 ones do not
        losses, step = one_epoch(t)
        epochs = 1
        # The fp16 scaler starts at a scale of 2**16 and skips the steps whose scaled gradients
        # overflow, halving the scale each time, until the gradients fit: a few skipped steps first.
        while scaled and step.abs().sum() == 0 and epochs < 12:
            before = t.prompt_learner.ctx.detach().clone()
            losses = t.run_epoch()
            step, epochs = t.prompt_learner.ctx.detach() - before, epochs + 1
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
        assert torch.isfinite(step).all() and step.abs().sum() > 0
        if epochs > 1:
            assert t.grad_scaler.get_scale() < 2.0**16  # it backed off from overflowing gradients


def test_amp_on_cpu_trains_in_fp32_and_says_so(synthetic_btmri, tmp_path, caplog):
    from engine.utils import get_logger

    logger = get_logger()  # train.py's set-up may stop it propagating, so listen to it directly
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    try:
        t = make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", "configs/trainers/CoOp/vit_b16.yaml",
                         tmp_path, "TRAINER.COOP.PREC", "amp")
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
    assert t.train_amp_dtype is None and not t.grad_scaler.is_enabled()
    assert "mixed precision is for CUDA; training in fp32 on cpu" in caplog.text
    with pytest.raises(UserError, match="TRAINER.COOP.PREC must be one of"):
        make_trainer(synthetic_btmri, "CoOp_TinyBiomedCLIP", "configs/trainers/CoOp/vit_b16.yaml",
                     tmp_path / "bad", "TRAINER.COOP.PREC", "half")
