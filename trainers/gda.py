"""GDA (Wang et al., ICLR 2024, "A hard-to-beat baseline for training-free CLIP-based adaptation").

Gaussian discriminant analysis on the cached image features: each class is a Gaussian with its own
mean and one covariance shared by all classes, which makes the Bayes classifier linear,

    W = Sigma^-1 mu_c,   b_c = log p_c - mu_c^T Sigma^-1 mu_c / 2,   p_c = 1 / C,

and its scores are added to the zero-shot logits: logits = s * f . t_c + alpha * (f W + b).
Following the authors' code: the features are the unit features of AUGMENT_EPOCH (10) augmented
views of every training image, pooled (not averaged per image); Sigma^-1 is their shrinkage
estimate D * pinv((N - 1) S + tr(S) I), where S is the covariance of the features minus their class
mean and N the number of pooled features; alpha is the first value of [1e-4, 1e-3, ..., 100] that
strictly improves the few-shot val accuracy (0.1 when none scores above 0). Training-free: one
solve of a D x D system per run.

Base-to-novel is not offered: W needs a mean per class, and a novel class has no images. (The
authors build novel means from the base features nearest each novel class's text feature; that
synthesis is not implemented here.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from engine.config import register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.feature_methods import FeatureMethod


@register_method_cfg("GDA")
def gda_cfg() -> CN:
    node = CN()
    node.AUGMENT_EPOCH = 10  # augmented views of each training image pooled into the estimate
    node.ALPHA_GRID = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]  # ensembling weights tried on val
    node.DEFAULT_ALPHA = 0.1  # kept when no grid value scores above 0 on val (the authors' start value)
    # Multiplier of the zero-shot logits; 0 = the backbone's logit scale (the authors used CLIP's 100).
    node.CLIP_SCALE = 0.0
    return node


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, D) mean feature of each class."""
    missing = [c for c in range(n_classes) if not bool((labels == c).any())]
    if missing:
        raise UserError(f"GDA needs training images of every class; classes {missing} have none.")
    return torch.stack([features[labels == c].mean(dim=0) for c in range(n_classes)])


def shrunk_precision(features: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(D, D) inverse of the shared covariance, as the authors estimate it: D * pinv((N-1) S + tr(S) I),
    S the (N-1)-normalised covariance of the features minus their class mean (the trace term keeps
    the matrix invertible when N < D, the few-shot case)."""
    centred = features - means[labels]
    n, dim = centred.shape
    if n < 2:
        raise UserError("GDA needs at least two training features to estimate a covariance.")
    centred = centred - centred.mean(dim=0)  # zero already up to rounding; torch.cov subtracts it too
    cov = centred.t() @ centred / (n - 1)
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    return dim * torch.linalg.pinv((n - 1) * cov + cov.trace() * eye)


def gda_classifier(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (D, C), b (C,)) of the linear discriminant with equal class priors, computed in float64."""
    feats = features.double()
    means = class_means(feats, labels, n_classes)
    precision = shrunk_precision(feats, labels, means)
    weight = precision @ means.t()
    prior = torch.full((n_classes,), 1.0 / n_classes, dtype=feats.dtype, device=feats.device)
    bias = prior.log() - 0.5 * ((means @ precision) * means).sum(dim=1)
    return weight.float(), bias.float()


def search_alpha(clip_logits: torch.Tensor, gda_logits: torch.Tensor, labels: torch.Tensor,
                 grid: list[float], default: float) -> tuple[float, float]:
    """(alpha, val accuracy): the first grid value with a strictly better accuracy than all before it
    (starting from 0), or `default` when none is above 0."""
    best_alpha, best_acc = default, 0.0
    for alpha in grid:
        acc = FeatureMethod.accuracy(clip_logits + alpha * gda_logits, labels)
        if acc > best_acc:
            best_alpha, best_acc = alpha, acc
    return best_alpha, best_acc


class GDAHead(nn.Module):
    """What GDA keeps: the discriminant's weights and biases and the chosen ensembling weight."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(dim, n_classes))
        self.register_buffer("bias", torch.zeros(n_classes))
        self.register_buffer("alpha", torch.tensor(0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.alpha * (features @ self.weight + self.bias)


@TRAINER_REGISTRY.register()
class GDA(FeatureMethod):
    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER.GDA
        if mcfg.AUGMENT_EPOCH < 1:
            raise UserError(f"TRAINER.GDA.AUGMENT_EPOCH must be >= 1; got {mcfg.AUGMENT_EPOCH}.")
        if not mcfg.ALPHA_GRID:
            raise UserError("TRAINER.GDA.ALPHA_GRID is empty; give the ensembling weights to try, e.g. [0.1, 1.0].")

    def build_head(self) -> None:
        self.head = GDAHead(self.backbone.embed_dim, self.num_classes).to(self.device)
        self.register_model("gda", self.head)
        self.clip_scale = float(self.cfg.TRAINER.GDA.CLIP_SCALE or self.backbone.logit_scale)

    def clip_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.clip_scale * features @ self.text_weights.t()

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        return self.clip_logits(features) + self.head(features)

    def train_view_count(self) -> int:
        return self.cfg.TRAINER.GDA.AUGMENT_EPOCH

    def fit(self) -> None:
        mcfg = self.cfg.TRAINER.GDA
        views, labels = self.train_views(self.train_view_count())
        features = views.reshape(-1, views.shape[-1])  # every view of every image, pooled
        weight, bias = gda_classifier(features, labels.repeat(views.shape[0]), self.num_classes)
        val, val_labels = self.val_features()
        with torch.no_grad():
            alpha, acc = search_alpha(self.clip_logits(val), val @ weight + bias, val_labels,
                                      list(mcfg.ALPHA_GRID), mcfg.DEFAULT_ALPHA)
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
            self.head.alpha.fill_(alpha)
        where = getattr(self, "validation_source", "val")
        self.logger.info(f"GDA on {features.shape[0]} features ({views.shape[0]} view(s) per image); "
                         f"searched on {where}: alpha {alpha:g}, {where} accuracy {acc:.2f}%")
