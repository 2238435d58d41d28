"""build_optimizer / build_lr_scheduler with Dassl's names and per-epoch semantics (see docs/DESIGN.md).

The scheduler is stepped once per epoch. With WARMUP_EPOCH=1, WARMUP_TYPE=constant and cosine, the
learning rate of 0-based epoch e is WARMUP_CONS_LR for e=0 and LR*(1+cos(pi*(e-1)/E))/2 after, the
same values Dassl's ConstantWarmupScheduler around CosineAnnealingLR produces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from engine.errors import UserError


def build_optimizer(model_or_params: nn.Module | Iterable, optim_cfg) -> torch.optim.Optimizer:
    if isinstance(model_or_params, nn.Module):
        params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = list(model_or_params)
    name = optim_cfg.NAME.lower()
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    raise UserError(f"OPTIM.NAME '{optim_cfg.NAME}' is not supported; use sgd, adam, adamw, amsgrad, rmsprop or radam.")


def epoch_lr(epoch: int, optim_cfg) -> float:
    """The learning rate for 0-based `epoch`, in closed form."""
    base = optim_cfg.LR
    warmup = max(optim_cfg.WARMUP_EPOCH, 0)
    if epoch < warmup:
        if optim_cfg.WARMUP_TYPE == "constant":
            return optim_cfg.WARMUP_CONS_LR
        if optim_cfg.WARMUP_TYPE == "linear":
            return optim_cfg.WARMUP_MIN_LR if epoch == 0 else base * epoch / warmup
        raise UserError(f"OPTIM.WARMUP_TYPE must be constant or linear; got '{optim_cfg.WARMUP_TYPE}'.")
    e = epoch - warmup if optim_cfg.WARMUP_RECOUNT else epoch
    sched = optim_cfg.LR_SCHEDULER
    if sched == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * e / optim_cfg.MAX_EPOCH))
    if sched == "single_step":
        step = optim_cfg.STEPSIZE[0] if optim_cfg.STEPSIZE[0] > 0 else optim_cfg.MAX_EPOCH
        return base * optim_cfg.GAMMA ** (e // step)
    if sched == "multi_step":
        return base * optim_cfg.GAMMA ** sum(e >= s for s in optim_cfg.STEPSIZE)
    raise UserError(f"OPTIM.LR_SCHEDULER must be cosine, single_step or multi_step; got '{sched}'.")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    base = optim_cfg.LR
    epoch_lr(0, optim_cfg)  # validate the settings now, not after the first epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: epoch_lr(e, optim_cfg) / base)
