"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the few-shot images.

logits = s * f . t_c + alpha * exp(-beta * (1 - f . keys)) @ values, where the keys are the unit
train features (averaged over AUGMENT_EPOCH augmented views, renormalised), the values their
one-hot labels and s the backbone's logit scale. Tip-Adapter is training-free: beta and alpha come
from a 200 x 200 grid, each 0.1 + i * (50 - 0.1) / 200, scored on the few-shot val split (beta-major,
first strict improvement over 0 wins, else beta = alpha = 0, as in the reference).

Tip-Adapter-F makes the keys a learned bias-free linear layer initialised from them, trained with
AdamW (lr 0.001, eps 1e-4) and a per-batch cosine schedule for 20 epochs; first the initial alpha is
searched over 0..9 (a fresh adapter trained per value, scored on val), then the adapter of the best
value is trained, its best-val epoch kept, and (beta, alpha) searched again on val before testing.
The reference wraps the keys in every adapter without copying, so the "fresh" adapters of the alpha
search continue from one another, and its main optimiser is bound to an adapter that is no longer
used, so the final training changes nothing. Both are fixed here;
TRAINER.TIPADAPTERF.REFERENCE_OPTIMIZER_BUG True restores them to reproduce its numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from engine.config import register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.feature_methods import FeatureMethod, shuffled_batches


@register_method_cfg("TIPADAPTER")
def tipadapter_cfg() -> CN:
    node = CN()
    node.AUGMENT_EPOCH = 1  # augmented views averaged into each cache key
    node.INIT_BETA = 1.0
    node.INIT_ALPHA = 1.0
    node.SEARCH_SCALE = [50.0, 50.0]  # largest beta and alpha of the grids (exclusive)
    node.SEARCH_STEP = [200, 200]  # grid sizes for beta and alpha
    # Multiplier of the zero-shot logits; 0 = the backbone's logit scale. The reference hard-coded
    # 100 for CLIP and PubMedCLIP and BiomedCLIP's 85.2323 for BiomedCLIP and PMC-CLIP.
    node.CLIP_SCALE = 0.0
    return node


@register_method_cfg("TIPADAPTERF")
def tipadapterf_cfg() -> CN:
    node = tipadapter_cfg()
    node.GRID_SEARCH = True  # search the initial alpha over 0..INIT_ALPHA_SCALE-1 before training
    node.INIT_ALPHA_SCALE = 10
    node.EPS = 1e-4  # AdamW epsilon
    # True: the reference's adapter handling (shared weights in the alpha search, final training a no-op).
    node.REFERENCE_OPTIMIZER_BUG = False
    return node


def search_grid(scale: float, steps: int) -> list[float]:
    return [0.1 + i * (scale - 0.1) / steps for i in range(steps)]


def cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(-beta * (1 - affinity)) @ values: the cache's vote for each class."""
    return torch.exp(-beta * (1 - affinity)) @ values


def search_beta_alpha(
    affinity: torch.Tensor, values: torch.Tensor, clip_logits: torch.Tensor, labels: torch.Tensor,
    betas: list[float], alphas: list[float],
) -> tuple[float, float, float]:
    """(beta, alpha, val accuracy) of the grid's best pair: beta-major order, first strict improvement
    over accuracy 0 wins, and (0, 0) when nothing beats 0, exactly as the reference searches."""
    alpha_t = torch.tensor(alphas, dtype=clip_logits.dtype, device=clip_logits.device)
    best_beta, best_alpha, best_correct = 0.0, 0.0, 0
    for beta in betas:
        logits = clip_logits + alpha_t[:, None, None] * cache_logits(affinity, values, beta)  # (A, M, C)
        correct = (logits.argmax(dim=-1) == labels).sum(dim=-1)
        i = int(correct.argmax())  # the first alpha with the row's best count
        if int(correct[i]) > best_correct:
            best_beta, best_alpha, best_correct = beta, alphas[i], int(correct[i])
    return best_beta, best_alpha, 100.0 * best_correct / max(len(labels), 1)


class TipCache(nn.Module):
    """What Tip-Adapter keeps: keys (learned in -F), one-hot values and the chosen beta and alpha."""

    def __init__(self, n_items: int, dim: int, n_classes: int, learn_keys: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_items, dim), requires_grad=learn_keys)
        self.register_buffer("values", torch.zeros(n_items, n_classes))
        self.register_buffer("beta", torch.tensor(0.0))
        self.register_buffer("alpha", torch.tensor(0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.alpha * cache_logits(features @ self.weight.t(), self.values, float(self.beta))


@TRAINER_REGISTRY.register()
class TipAdapter(FeatureMethod):
    cfg_key = "TIPADAPTER"
    learn_keys = False

    @property
    def method_cfg(self) -> CN:
        return self.cfg.TRAINER[self.cfg_key]

    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER[self.cfg_key]
        if len(mcfg.SEARCH_SCALE) != 2 or len(mcfg.SEARCH_STEP) != 2 or min(mcfg.SEARCH_STEP) < 1:
            raise UserError(f"TRAINER.{self.cfg_key}.SEARCH_SCALE and SEARCH_STEP need two values (beta, alpha), "
                            f"steps >= 1; got {list(mcfg.SEARCH_SCALE)} and {list(mcfg.SEARCH_STEP)}.")
        if mcfg.AUGMENT_EPOCH < 1:
            raise UserError(f"TRAINER.{self.cfg_key}.AUGMENT_EPOCH must be >= 1; got {mcfg.AUGMENT_EPOCH}.")

    def build_head(self) -> None:
        n_items = len(self.dm.dataset.train_x)
        self.cache = TipCache(n_items, self.backbone.embed_dim, self.num_classes, self.learn_keys).to(self.device)
        self.register_model("tip_cache", self.cache)
        self.clip_scale = float(self.method_cfg.CLIP_SCALE or self.backbone.logit_scale)

    def clip_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.clip_scale * features @ self.text_weights.t()

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        return self.clip_logits(features) + self.cache(features)

    def build_cache(self, views: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys: unit features averaged over the first AUGMENT_EPOCH views, renormalised; values: one-hot."""
        keys = F.normalize(views[: self.method_cfg.AUGMENT_EPOCH].mean(dim=0), dim=-1)
        return keys, F.one_hot(labels, self.num_classes).float()

    def search(self, weight: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor) -> None:
        """Grid-search (beta, alpha) on val for keys `weight`; store all of it in the cache module."""
        mcfg = self.method_cfg
        with torch.no_grad():
            beta, alpha, acc = search_beta_alpha(
                val @ weight.t(), self.cache.values, self.clip_logits(val), val_labels,
                search_grid(mcfg.SEARCH_SCALE[0], mcfg.SEARCH_STEP[0]),
                search_grid(mcfg.SEARCH_SCALE[1], mcfg.SEARCH_STEP[1]),
            )
            self.cache.weight.copy_(weight)
            self.cache.beta.fill_(beta)
            self.cache.alpha.fill_(alpha)
        where = getattr(self, "validation_source", "val")
        self.logger.info(f"Searched on {where}: beta {beta:.4f}, alpha {alpha:.4f}, {where} accuracy {acc:.2f}%")

    def train_view_count(self) -> int:
        return self.method_cfg.AUGMENT_EPOCH

    def fit(self) -> None:
        views, labels = self.train_views(self.train_view_count())
        keys, values = self.build_cache(views, labels)
        self.cache.values.copy_(values)
        self.search(keys, *self.val_features())


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapter):
    cfg_key = "TIPADAPTERF"
    learn_keys = True

    def tip_logits(self, features: torch.Tensor, weight: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
        return self.clip_logits(features) + alpha * cache_logits(features @ weight.t(), self.cache.values, beta)

    def val_accuracy(self, weight: torch.Tensor, beta: float, alpha: float) -> float:
        with torch.no_grad():
            return self.accuracy(self.tip_logits(self.val, weight, beta, alpha), self.val_labels)

    def train_adapter(self, weight: nn.Parameter, beta: float, alpha: float, keep_best: bool = False) -> None:
        """MAX_EPOCH epochs of AdamW on `weight`, cosine over every batch; `keep_best` ends on the
        best-val epoch (first of equals)."""
        cfg, mcfg = self.cfg, self.method_cfg
        batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        n = len(self.train_labels)
        optim = torch.optim.AdamW([weight], lr=cfg.OPTIM.LR, eps=mcfg.EPS, weight_decay=cfg.OPTIM.WEIGHT_DECAY,
                                  betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, self.max_epoch * math.ceil(n / batch_size))
        best_acc, best_weight, best_epoch = -1.0, None, 0
        for epoch in range(self.max_epoch):
            feats = self.views[epoch % len(self.views)]
            for idx in shuffled_batches(n, batch_size):
                loss = F.cross_entropy(self.tip_logits(feats[idx], weight, beta, alpha), self.train_labels[idx])
                optim.zero_grad()
                loss.backward()
                optim.step()
                sched.step()
            if keep_best:
                acc = self.val_accuracy(weight, beta, alpha)
                self.logger.info(f"epoch [{epoch + 1}/{self.max_epoch}] loss {loss.item():.4f} "
                                 f"lr {sched.get_last_lr()[0]:.4e} val acc {acc:.2f}%")
                self.track({"train/loss": loss.item(), "val/acc": acc}, step=epoch + 1)  # the adapter tested
                if acc > best_acc:
                    best_acc, best_weight, best_epoch = acc, weight.detach().clone(), epoch + 1
        if keep_best:
            weight.data.copy_(best_weight)
            self.logger.info(f"Kept the adapter of epoch {best_epoch} (val accuracy {best_acc:.2f}%)")

    def train_view_count(self) -> int:
        return max(self.method_cfg.AUGMENT_EPOCH, self.epoch_views(self.max_epoch))

    def fit(self) -> None:
        mcfg = self.method_cfg
        self.views, self.train_labels = self.train_views(self.train_view_count())
        keys, values = self.build_cache(self.views, self.train_labels)
        self.cache.values.copy_(values)
        self.val, self.val_labels = self.val_features()
        beta, alpha = mcfg.INIT_BETA, mcfg.INIT_ALPHA
        bug = mcfg.REFERENCE_OPTIMIZER_BUG
        shared = nn.Parameter(keys.clone()) if bug else None  # bug mode: the one tensor behind every adapter
        adapter = shared if bug else nn.Parameter(keys.clone())
        searched = False
        if mcfg.GRID_SEARCH:
            best_acc = 0.0
            for init_alpha in range(mcfg.INIT_ALPHA_SCALE):
                candidate = shared if bug else nn.Parameter(keys.clone())
                self.train_adapter(candidate, beta, init_alpha)
                acc = self.val_accuracy(candidate, beta, init_alpha)
                self.logger.info(f"initial alpha {init_alpha}: val accuracy {acc:.2f}%")
                if acc > best_acc:
                    best_acc, alpha, adapter, searched = acc, init_alpha, candidate, True
            self.logger.info(f"Initial alpha {alpha} (val accuracy {best_acc:.2f}%)")
        if bug and searched:
            # The reference's optimiser holds the adapter made before the search, so the selected one
            # never moves: every epoch scores the same and epoch 1 is kept, i.e. the weights as they are.
            self.logger.info("REFERENCE_OPTIMIZER_BUG: the final training leaves the adapter unchanged")
        else:
            self.train_adapter(adapter, beta, alpha, keep_best=True)
        self.search(adapter.detach(), self.val, self.val_labels)
