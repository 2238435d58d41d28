"""A lean, Dassl-compatible core: config, registries, data, trainer loop, optimisers, feature cache.

Names mirror Dassl (TRAINER_REGISTRY, DatasetBase, Datum, DataManager, TrainerX, build_optimizer,
build_lr_scheduler, get_cfg_default) so a CoOp-family trainer ports by changing one import.
"""

from engine.config import get_cfg_default
from engine.data import DataManager, DatasetBase, Datum
from engine.optim import build_lr_scheduler, build_optimizer
from engine.registry import DATASET_REGISTRY, TRAINER_REGISTRY, Registry
from engine.trainer import TrainerX, build_trainer

__all__ = [
    "DATASET_REGISTRY",
    "TRAINER_REGISTRY",
    "DataManager",
    "DatasetBase",
    "Datum",
    "Registry",
    "TrainerX",
    "build_lr_scheduler",
    "build_optimizer",
    "build_trainer",
    "get_cfg_default",
]
