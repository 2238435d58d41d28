"""The feature-encoding job: every frozen image feature a group's runs will read, encoded once.

A group is one (model, dataset) of a plan. The job builds what the runs' feature cache depends on
and nothing else: the data (each run's own few-shot draw, seeded as train.py seeds it), the frozen
backbone (one per weights, shared by the group and never handed to a trainer, so no method can
change it) and the feature cache; then it asks the cache for what each run will ask it for: the
training views, the val features of the methods that choose settings on them, and the test split.
Runs that tune the image tower (CLIP-LoRA, CLIP-SVD) read no cached features and are left out.

    python -m sweeps.encode PLAN_FILE GROUP
"""

from __future__ import annotations

import json
import os
import sys

from engine.errors import UserError


def _shell(cls, cfg, dm):
    """An instance of the run's trainer class without its __init__ (nothing built): enough to ask
    the class's own rules how many views and which validation images the run reads."""
    from engine.config import epoch_budget
    from engine.utils import get_logger

    shell = cls.__new__(cls)
    shell.cfg, shell.dm, shell.logger, shell.max_epoch = cfg, dm, get_logger(), epoch_budget(cfg)
    return shell


def encode_group(plan_path: str, group: str) -> int:
    """Encode the features of the group's submitted, unfinished runs; returns how many runs it served."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from engine.config import flat_config
    from engine.data import DataManager, transform_spec
    from engine.features import FeatureCache, feature_cache_dir
    from engine.runs import FINISHED
    from engine.trainer import build_backbone
    from engine.utils import set_random_seed
    from sweeps.plan import is_zero_shot, train_config, trainer_class
    from sweeps.state import read_plan, unit_status

    plan = read_plan(plan_path)
    sweep_dir = os.path.dirname(os.path.dirname(os.path.abspath(plan_path)))
    submitted = set(plan["submitted"])
    backbones: dict[tuple, object] = {}
    caches: dict[tuple, FeatureCache] = {}
    served = 0
    for unit in plan["units"]:
        if unit.group != group or unit.id not in submitted or unit_status(sweep_dir, unit).state == FINISHED:
            continue
        for argv in unit.commands:
            args, cfg = train_config(argv)
            cls = trainer_class(cfg)
            if not (cls.frozen_image_path(cfg) and cfg.FEATURES.ENABLED) or cfg.TEST.get("DATASET"):
                continue  # pixels each step, or another dataset's test split: nothing this job can share
            if cfg.SEED >= 0:
                set_random_seed(cfg.SEED)  # the run's own few-shot draw
            dm = DataManager(cfg)
            device = torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
            weights = tuple(sorted((k, str(v)) for k, v in flat_config(cfg).items() if k.startswith("MODEL.BACKBONE.")))
            if weights not in backbones:
                backbone = build_backbone(cfg).to(device)
                backbone.requires_grad_(False)
                backbones[weights] = backbone.eval()
            where = feature_cache_dir(cfg, dm.dataset.dataset_dir)
            variant = json.dumps(cls.feature_variant_key(cfg), sort_keys=True)  # a method's own image path
            key = (weights, where, cfg.FEATURES.PRECISION, cfg.FEATURES.STORE_DTYPE, variant)
            if key not in caches:
                caches[key] = FeatureCache(where, backbones[weights], device, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                           workers=cfg.DATALOADER.NUM_WORKERS, precision=cfg.FEATURES.PRECISION,
                                           store=cfg.FEATURES.STORE_DTYPE,
                                           variant=cls.feature_variant(cfg, backbones[weights]))
            cache, shell = caches[key], _shell(cls, cfg, dm)
            if not args.eval_only and not is_zero_shot(cls):
                cache.get(dm.dataset.train_x, dm.tfm_train, transform_spec(cfg, True),
                          views=shell.train_view_count(), desc="train views")
                if hasattr(cls, "val_features"):  # the feature methods choose their settings on these
                    items = shell.validation_items()
                    if items:
                        cache.get(items, dm.tfm_test, transform_spec(cfg, False), desc="val set")
            test = dm.dataset.val if cfg.TEST.SPLIT == "val" else dm.dataset.test
            if test:
                cache.get(test, dm.tfm_test, transform_spec(cfg, False), desc=f"{cfg.TEST.SPLIT} set")
            served += 1
    return served


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sweeps.encode PLAN_FILE GROUP", file=sys.stderr)
        return 2
    try:
        served = encode_group(*argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"encoded the features of {served} run(s) of {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
