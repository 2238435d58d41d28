"""TRAIN.TRIAL_EPOCHS: one key that shortens a trial run of every method, CLIP-LoRA's iteration budget
included (OPTIM.MAX_EPOCH alone leaves it at 500 x K iterations); the sweep's --quick uses it."""

import os

import pytest

import train
from engine.errors import UserError
from engine.trainer import build_trainer
from sweeps import plan
from sweeps.grid import QUICK_OPTS, build_grid, with_quick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainer(root, method, config, *opts):
    args = train.parse_args(["--root", root, "--seed", "1", "--trainer", f"{method}_TinyBiomedCLIP",
                             "--dataset-config-file", f"{REPO}/configs/datasets/btmri.yaml",
                             "--config-file", f"{REPO}/{config}",
                             "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", *opts])
    return build_trainer(train.setup_cfg(args))


def test_a_trial_run_of_clip_lora_is_short(synthetic_btmri, tmp_path):
    lora = "configs/trainers/CLIPLoRA/default.yaml"
    full = trainer(synthetic_btmri, "CLIPLoRA", lora, "OPTIM.MAX_EPOCH", "2")
    assert full.total_iters == 500 * 2  # MAX_EPOCH does not touch an iteration budget
    trial = trainer(synthetic_btmri, "CLIPLoRA", lora, "TRAIN.TRIAL_EPOCHS", "1",
                    "OUTPUT_DIR", str(tmp_path / "lora"))
    assert trial.total_iters == trial.iters_per_epoch == 1 and trial.max_epoch == 1  # 8 images, batch 32
    trial.train()
    assert trial.epoch == 0  # trained its one epoch and stopped

    svd = trainer(synthetic_btmri, "CLIPSVD", "configs/trainers/CLIPSVD/few_shot/btmri.yaml", "TRAIN.TRIAL_EPOCHS", "2")
    assert svd.total_iters == 2 * svd.iters_per_epoch  # its 100 epochs cut to 2
    coop = trainer(synthetic_btmri, "CoOp", "configs/trainers/CoOp/vit_b16.yaml", "OPTIM.MAX_EPOCH", "5",
                   "TRAIN.TRIAL_EPOCHS", "2")
    assert coop.max_epoch == 2 and coop.train_view_count() == 2
    assert trainer(synthetic_btmri, "CoOp", "configs/trainers/CoOp/vit_b16.yaml", "OPTIM.MAX_EPOCH", "1",
                   "TRAIN.TRIAL_EPOCHS", "3").max_epoch == 1  # a cap, never a lengthening


def test_a_bad_trial_value_is_named():
    args = train.parse_args(["--trainer", "CoOp_TinyBiomedCLIP", "TRAIN.TRIAL_EPOCHS", "-1"])
    with pytest.raises(UserError, match="TRAIN.TRIAL_EPOCHS must be a whole number"):
        train.setup_cfg(args)


def test_the_sweeps_quick_path_uses_it(tmp_path):
    g = with_quick(build_grid({}, {"root": "DATA", "methods": ["CLIPLoRA"], "datasets": ["btmri"], "shots": [4],
                                   "seeds": [1], "models": ["TinyBiomedCLIP"], "output_root": str(tmp_path),
                                   "extra_opts": "OPTIM.MAX_EPOCH 2"}))
    (unit,) = plan.plan_units(g)
    assert unit.commands[0][-4:] == ["OPTIM.MAX_EPOCH", "2", *QUICK_OPTS.split()]
    assert plan.estimate_seconds(unit.commands[0]) == plan.STARTUP_S + 1 * plan.STEP_S["tower"]  # one iteration


def test_a_trial_base_to_novel_run_tests_the_epoch_it_trained(synthetic_btmri, tmp_path, capsys):
    """base2new.sh passes --load-epoch (50 for CoOp); a trial run saved only epoch 1, and its test loads that."""
    common = ["--root", synthetic_btmri, "--seed", "1", "--trainer", "CoOp_TinyBiomedCLIP",
              "--dataset-config-file", f"{REPO}/configs/datasets/btmri.yaml",
              "--config-file", f"{REPO}/configs/trainers/CoOp/vit_b16_base2new.yaml"]
    opts = ["DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "TRAIN.TRIAL_EPOCHS", "1"]
    base, new = str(tmp_path / "train_base"), str(tmp_path / "test_new")
    assert train.main([*common, "--output-dir", base, "DATASET.SUBSAMPLE_CLASSES", "base", *opts]) == 0
    assert train.main([*common, "--output-dir", new, "--model-dir", base, "--load-epoch", "50", "--eval-only",
                       "DATASET.SUBSAMPLE_CLASSES", "new", *opts]) == 0
    assert "testing the checkpoint of epoch 1, not 50" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(new, "results.json"))
