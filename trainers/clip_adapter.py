"""CLIP-Adapter (Gao et al., IJCV 2024): a bottleneck MLP on the image feature, mixed back residually.

f' = ratio * adapter(f) + (1 - ratio) * f with ratio 0.5 (not renormalised), logits = scale * f' . t_c
with the single-template text classifier. As in the reference: Linear(D, D/4) -> ReLU ->
Linear(D/4, D) -> ReLU without biases, plain SGD (lr 0.01, no momentum, no weight decay), a cosine
schedule with T_max = the number of epochs stepped after every batch (so it restarts when an epoch
has more than one batch) behind one warm-up step at 1e-5, and the last-epoch adapter evaluated.
The reference hard-codes D = 512; here D is the backbone's embed_dim, so PMC-CLIP (768) runs too.
Only the adapter reads the class names through the text classifier, so it transfers to new classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from engine.config import register_method_cfg
from engine.errors import UserError
from engine.optim import build_lr_scheduler, build_optimizer
from engine.registry import TRAINER_REGISTRY
from trainers.feature_methods import FeatureMethod, shuffled_batches


@register_method_cfg("CLIPADAPTER")
def clipadapter_cfg() -> CN:
    node = CN()
    node.RATIO = 0.5  # weight of the adapted feature in the residual mix (the reference's alpha_ca)
    node.REDUCTION = 4  # bottleneck width = embed_dim // REDUCTION
    return node


class Adapter(nn.Module):
    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
            nn.Linear(dim // reduction, dim, bias=False), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def residual_mix(features: torch.Tensor, adapted: torch.Tensor, ratio: float) -> torch.Tensor:
    """ratio * adapted + (1 - ratio) * features, left unnormalised as in the reference."""
    return ratio * adapted + (1 - ratio) * features


@TRAINER_REGISTRY.register()
class ClipAdapter(FeatureMethod):
    def build_head(self) -> None:
        mcfg = self.cfg.TRAINER.CLIPADAPTER
        if not 1 <= mcfg.REDUCTION <= self.backbone.embed_dim:
            raise UserError(f"TRAINER.CLIPADAPTER.REDUCTION must be between 1 and the feature width "
                            f"{self.backbone.embed_dim}; got {mcfg.REDUCTION}.")
        self.adapter = Adapter(self.backbone.embed_dim, mcfg.REDUCTION).to(self.device)
        # The schedule counts batches, not epochs (see the module docstring).
        self.optim = build_optimizer(self.adapter, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("adapter", self.adapter, self.optim, self.sched)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        mixed = residual_mix(features, self.adapter(features), self.cfg.TRAINER.CLIPADAPTER.RATIO)
        return self.backbone.logit_scale * mixed @ self.text_weights.t()

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def train_view_count(self) -> int:
        return self.epoch_views(self.max_epoch)

    def fit(self) -> None:
        views, labels = self.train_views(self.train_view_count())
        batch_size = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        self.adapter.train()
        for epoch in range(self.max_epoch):
            feats = views[epoch % len(views)]
            total, steps = 0.0, 0
            for idx in shuffled_batches(len(labels), batch_size):
                loss = F.cross_entropy(self.logits(feats[idx]), labels[idx])
                self.model_backward_and_update(loss, "adapter")
                self.sched.step()
                total, steps = total + loss.item(), steps + 1
            self.logger.info(f"epoch [{epoch + 1}/{self.max_epoch}] loss {total / steps:.4f} "
                             f"lr {self.get_current_lr():.4e}")
            self.track({"train/loss": total / steps}, step=epoch + 1)
        self.adapter.eval()
