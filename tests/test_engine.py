"""Engine pieces: learning-rate schedule, config errors, registries, few-shot caching, subsampling."""

import json
import math
import os
import random
import shutil

import pytest
import torch
from conftest import split_file

from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.data import Datum, generate_fewshot_dataset, subsample_classes
from engine.errors import UserError
from engine.optim import build_lr_scheduler, build_optimizer, epoch_lr
from engine.registry import DATASET_REGISTRY
from engine.trainer import split_trainer_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def biomedcoop_cfg(dataset="btmri"):
    cfg = get_cfg_default()
    merge_from_file(cfg, os.path.join(REPO, "configs/datasets", f"{dataset}.yaml"))
    merge_from_file(cfg, os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot", f"{dataset}.yaml"))
    return cfg


def test_learning_rates_per_epoch_match_dassl_constant_warmup_cosine():
    cfg = biomedcoop_cfg()
    param = torch.nn.Parameter(torch.zeros(1))
    optim = build_optimizer([param], cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    seen = []
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        seen.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    lr, epochs = 0.0025, 100
    assert seen[0] == pytest.approx(1e-5)
    assert seen[1] == pytest.approx(lr)
    assert seen[51] == pytest.approx(lr / 2)
    assert seen[99] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 98 / epochs)))
    assert seen[99] > 0
    assert all(a >= b for a, b in zip(seen[1:], seen[2:]))
    assert [epoch_lr(e, cfg.OPTIM) for e in range(100)] == pytest.approx(seen)


def test_sgd_uses_dassl_defaults():
    cfg = biomedcoop_cfg()
    optim = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.OPTIM)
    group = optim.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 5e-4, False)


def test_reference_hyper_parameters_load():
    cfg = biomedcoop_cfg("kneexray")
    b = cfg.TRAINER.BIOMEDCOOP
    assert (b.SCCM_LAMBDA, b.KDSP_LAMBDA, b.TAU, b.N_PROMPTS) == (5.0, 20.0, 1.75, 50)
    assert (cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.LR) == (100, 4, 0.0025)
    assert tuple(cfg.INPUT.SIZE) == (224, 224)


def test_unknown_config_key_names_the_key_and_the_valid_ones():
    cfg = get_cfg_default()
    with pytest.raises(UserError, match="TRAINER.BIOMEDCOOP.TAUU.*TAU"):
        merge_from_list(cfg, ["TRAINER.BIOMEDCOOP.TAUU", "2"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(UserError, match="bad.yaml.*OPTIM.LRR"):
        merge_from_file(get_cfg_default(), str(path))


def test_base_config_is_merged_first_and_cycles_are_named(tmp_path):
    (tmp_path / "default.yaml").write_text("OPTIM:\n  LR: 0.5\n  MAX_EPOCH: 7\n")
    (tmp_path / "one.yaml").write_text("_BASE_: default.yaml\nOPTIM:\n  LR: 0.25\n")
    cfg = get_cfg_default()
    merge_from_file(cfg, str(tmp_path / "one.yaml"))
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (0.25, 7)  # the file's own value wins over its base
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        merge_from_file(get_cfg_default(), str(tmp_path / "a.yaml"))
    (tmp_path / "lost.yaml").write_text("_BASE_: nowhere.yaml\n")
    with pytest.raises(UserError, match="nowhere.yaml"):
        merge_from_file(get_cfg_default(), str(tmp_path / "lost.yaml"))


def test_every_method_declares_its_config_subtree():
    cfg = get_cfg_default()
    for key in ("COOP", "BIOMEDCOOP", "COCOOP", "KGCOOP", "PROGRAD", "ZEROSHOT"):
        assert key in cfg.TRAINER
    assert (cfg.TRAINER.KGCOOP.W, cfg.TRAINER.PROGRAD.TEACHER, cfg.TRAINER.COCOOP.CTX_INIT) == (1.0, "zeroshot", "")


def test_trainer_names_split_into_method_and_backbone():
    assert split_trainer_name("BiomedCoOp_TinyBiomedCLIP") == ("BiomedCoOp", "TinyBiomedCLIP")
    assert split_trainer_name("CoOp_BiomedCLIP") == ("CoOp", "BiomedCLIP")
    with pytest.raises(UserError, match="Unknown trainer 'Foo_BiomedCLIP'.*BiomedCoOp"):
        split_trainer_name("Foo_BiomedCLIP")
    with pytest.raises(UserError, match="Unknown backbone 'NoSuchModel'"):
        split_trainer_name("CoOp_NoSuchModel")


def test_unknown_dataset_lists_valid_names(tmp_path):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(tmp_path), "BTMR"
    with pytest.raises(UserError, match="Did you mean the benchmark BTMRI.*prepare_dataset"):
        DATASET_REGISTRY.get("BTMR")(cfg)
    with pytest.raises(UserError, match="Unknown dataset 'no such'.*BTMRI"):
        DATASET_REGISTRY.get("no such")


def dassl_fewshot(items, k):
    """Dassl's procedure, restated: groups in first-appearance order, random.sample per group."""
    groups = {}
    for item in items:
        groups.setdefault(item[1], []).append(item)
    out = []
    for group in groups.values():
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return out


def placeholder_root(tmp_path, name):
    """A data root holding the real split file and empty placeholder images at the listed paths."""
    src = split_file(name)
    dataset_dir = tmp_path / name
    image_dir = dataset_dir / name
    split = json.load(open(src))
    for rows in split.values():
        for rel, _, _ in rows:
            path = image_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    shutil.copy(src, dataset_dir / f"split_{name}.json")
    return tmp_path, split


@pytest.mark.parametrize("shots,seed", [(1, 1), (4, 2), (16, 3)])
def test_btmri_fewshot_subset_is_dassls_and_cached_as_relative_json(tmp_path, shots, seed):
    root, split = placeholder_root(tmp_path, "BTMRI")
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = str(root), "BTMRI", shots, seed
    random.seed(seed)
    dataset = DATASET_REGISTRY.get("BTMRI")(cfg)

    random.seed(seed)
    expected_train = dassl_fewshot(split["train"], shots)
    expected_val = dassl_fewshot(split["val"], min(shots, 4))
    assert [d.relpath for d in dataset.train_x] == [r[0] for r in expected_train]
    assert [d.relpath for d in dataset.val] == [r[0] for r in expected_val]
    assert len(dataset.test) == 1717 and dataset.num_classes == 4
    assert dataset.classnames == ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]

    cache = root / "BTMRI" / "split_fewshot" / f"shot_{shots}-seed_{seed}.json"
    cached = json.load(open(cache))
    assert cached["train"] == [list(r) for r in expected_train]  # relative paths, readable JSON

    moved = tmp_path / "moved"
    shutil.move(str(root / "BTMRI"), str(moved / "BTMRI"))
    cfg.DATASET.ROOT = str(moved)
    random.seed(12345)  # a cached subset must not depend on the RNG any more
    again = DATASET_REGISTRY.get("BTMRI")(cfg)
    assert [d.impath for d in again.train_x] == [str(moved / "BTMRI" / "BTMRI" / r[0]) for r in expected_train]


def test_base_new_subsampling_renumbers_labels():
    items = [Datum(f"/x/{i}", label=i % 4, classname=f"c{i % 4}", relpath=str(i)) for i in range(8)]
    base, = subsample_classes(items, subsample="base")
    new, = subsample_classes(items, subsample="new")
    assert sorted({(d.label, d.classname) for d in base}) == [(0, "c0"), (1, "c1")]
    assert sorted({(d.label, d.classname) for d in new}) == [(0, "c2"), (1, "c3")]
    with pytest.raises(UserError, match="base or new"):
        subsample_classes(items, subsample="novel")


def test_fewshot_keeps_small_groups_whole():
    items = [Datum(f"/x/{i}", label=0 if i < 2 else 1, relpath=str(i)) for i in range(10)]
    random.seed(0)
    out = generate_fewshot_dataset(items, 4)
    assert sum(d.label == 0 for d in out) == 2 and sum(d.label == 1 for d in out) == 4


def test_prompt_ensemble_loads_in_class_order_and_names_a_short_class(tmp_path):
    from engine.prompts import load_ensemble

    classes = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]
    ensemble = load_ensemble("BTMRI", classes, 50)
    assert [len(s) for s in ensemble] == [50] * 4
    assert "glioma" in " ".join(ensemble[0]).lower() and "meningioma" in " ".join(ensemble[1]).lower()
    short = {"dataset": "BTMRI", "modality": "MRI", "classes": {c: ["one.", "two."] for c in classes}}
    short["classes"]["normal brain"] = ["only one."]
    (tmp_path / "BTMRI.json").write_text(json.dumps(short))
    with pytest.raises(UserError, match="class 'normal brain' has 1 prompts but N_PROMPTS is 2"):
        load_ensemble("BTMRI", classes, 2, directory=str(tmp_path))
    with pytest.raises(UserError, match=r"no prompts for class\(es\) \['kidney stone'\]"):
        load_ensemble("BTMRI", ["kidney stone"], 1, directory=str(tmp_path))


def test_macro_f1_is_scikit_learns_without_importing_it():
    """engine.evaluation.macro_f1 (no scikit-learn import per run) gives f1_score(average="macro",
    labels=np.unique(gt)) exactly: classes never predicted, predictions of classes absent from gt."""
    import numpy as np
    from sklearn.metrics import f1_score

    from engine.evaluation import macro_f1

    rng = np.random.default_rng(0)
    cases = [(np.array([0, 0, 1, 2]), np.array([0, 0, 0, 0])),  # classes 1 and 2 never predicted
             (np.array([1, 1, 2]), np.array([0, 1, 3]))]  # predicted 0 and 3 are not in gt
    cases += [(rng.integers(0, 5, n), rng.integers(0, 6, n)) for n in (1, 7, 50, 300)]
    for gt, pred in cases:
        assert macro_f1(gt, pred) == f1_score(gt, pred, average="macro", labels=np.unique(gt))
