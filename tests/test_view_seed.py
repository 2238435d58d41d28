"""FEATURES.VIEW_SEED: cached augmentation views shared by every run seed (default), or drawn per run."""

import os

import pytest
import torch

from engine.config import check_config_values, get_cfg_default
from engine.data import DataManager, build_transform, transform_spec
from engine.errors import UserError
from engine.features import FeatureCache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def btmri_cfg(root, seed: int, view_seed: str = "shared"):
    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs/datasets/btmri.yaml"))
    cfg.DATASET.ROOT, cfg.DATALOADER.NUM_WORKERS, cfg.SEED = root, 0, seed
    cfg.FEATURES.VIEW_SEED = view_seed
    return cfg


def train_views(cfg, items, backbone, cache_dir):
    cache = FeatureCache(cache_dir, backbone, CPU, batch_size=8)
    return cache.get(items, build_transform(cfg, True), transform_spec(cfg, True), views=2)


def test_views_are_shared_across_seeds_by_default_and_per_run_on_request(synthetic_btmri, tiny_biomedclip, tmp_path):
    items = DataManager(btmri_cfg(synthetic_btmri, 1)).dataset.train_x[:6]
    cache_dir = str(tmp_path / "cache")

    shared = [train_views(btmri_cfg(synthetic_btmri, s), items, tiny_biomedclip, cache_dir) for s in (1, 2)]
    assert torch.equal(shared[0], shared[1])  # same crops, same cache entries for every seed
    assert not torch.equal(shared[0][0], shared[0][1])  # views still differ from one another

    run = [train_views(btmri_cfg(synthetic_btmri, s, "run"), items, tiny_biomedclip, cache_dir) for s in (1, 2)]
    assert not torch.equal(run[0], run[1])  # each seed its own crops
    assert not torch.equal(run[0], shared[0])
    again = train_views(btmri_cfg(synthetic_btmri, 1, "run"), items, tiny_biomedclip, cache_dir)
    assert torch.equal(again, run[0])  # still deterministic for a given run seed

    # Test-time features are deterministic: the option leaves their cache key alone.
    run_spec = transform_spec(btmri_cfg(synthetic_btmri, 1, "run"), False)
    assert run_spec == transform_spec(btmri_cfg(synthetic_btmri, 2), False)


def test_unknown_view_seed_is_refused():
    cfg = get_cfg_default()
    cfg.FEATURES.VIEW_SEED = "per-seed"
    with pytest.raises(UserError, match="FEATURES.VIEW_SEED"):
        check_config_values(cfg)
