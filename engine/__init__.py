"""A lean, Dassl-compatible core: config, registries, data, trainer loop, optimisers, feature cache.

Names mirror Dassl (TRAINER_REGISTRY, DatasetBase, Datum, DataManager, TrainerX, build_optimizer,
build_lr_scheduler, get_cfg_default) so a CoOp-family trainer ports by changing one import. They
are imported lazily, so a tool that only needs `engine.errors` does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "get_cfg_default": "engine.config",
    "DataManager": "engine.data",
    "DatasetBase": "engine.data",
    "Datum": "engine.data",
    "build_lr_scheduler": "engine.optim",
    "build_optimizer": "engine.optim",
    "DATASET_REGISTRY": "engine.registry",
    "TRAINER_REGISTRY": "engine.registry",
    "Registry": "engine.registry",
    "TrainerX": "engine.trainer",
    "build_trainer": "engine.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
