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

Base-to-novel, as the authors do it: a novel class has no images, so its mean is the average of
the NOVEL_TOPK (64) pooled base features most similar to its text feature together with that text
feature counted NOVEL_TEXT_WEIGHT (16) times; its precision is the same shrinkage estimate from
those 64 features centred on the text feature, and the novel classes share the mean of their
precisions. The checkpoint therefore keeps the pooled base features; a DATASET.SUBSAMPLE_CLASSES
new run that loads it builds the novel classifier this way and keeps the base run's alpha.
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
    node.NOVEL_TOPK = 64  # base-to-novel: base features nearest a novel class's text feature
    node.NOVEL_TEXT_WEIGHT = 16  # base-to-novel: times the text feature enters the novel mean
    return node


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, D) mean feature of each class."""
    missing = [c for c in range(n_classes) if not bool((labels == c).any())]
    if missing:
        raise UserError(f"GDA needs training images of every class; classes {missing} have none.")
    return torch.stack([features[labels == c].mean(dim=0) for c in range(n_classes)])


def shrinkage_precision(centred: torch.Tensor) -> torch.Tensor:
    """(D, D) D * pinv((N-1) S + tr(S) I) for S the (N-1)-normalised scatter of the already centred
    rows, the authors' estimate (the trace term keeps it invertible when N < D, the few-shot case)."""
    n, dim = centred.shape
    if n < 2:
        raise UserError("GDA needs at least two training features to estimate a covariance.")
    cov = centred.t() @ centred / (n - 1)
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    return dim * torch.linalg.pinv((n - 1) * cov + cov.trace() * eye)


def shrunk_precision(features: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The shared precision of the features minus their class mean (torch.cov's centring included)."""
    centred = features - means[labels]
    return shrinkage_precision(centred - centred.mean(dim=0))  # the mean is zero already, up to rounding


def discriminant(means: torch.Tensor, precision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (D, C), b (C,)) of Gaussians with these means, one precision and equal priors, as float32."""
    n_classes = means.shape[0]
    weight = precision @ means.t()
    prior = torch.full((n_classes,), 1.0 / n_classes, dtype=means.dtype, device=means.device)
    bias = prior.log() - 0.5 * ((means @ precision) * means).sum(dim=1)
    return weight.float(), bias.float()


def gda_classifier(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (D, C), b (C,)) of the linear discriminant with equal class priors, computed in float64."""
    feats = features.double()
    means = class_means(feats, labels, n_classes)
    return discriminant(means, shrunk_precision(feats, labels, means))


def novel_classifier(bank: torch.Tensor, text: torch.Tensor, topk: int, text_weight: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) for classes known only by their unit text features `text` (C, D), from the pooled base
    features `bank` (M, D), as the authors' base-to-novel code builds them (float64)."""
    bank, text = bank.double(), text.double()
    k = min(topk, len(bank))
    means, precisions = [], []
    for w in text:
        near = bank[torch.topk(bank @ w, k).indices]
        means.append(torch.cat([near, w.expand(text_weight, -1)]).mean(dim=0))
        precisions.append(shrinkage_precision(near - w))  # centred on the text feature, not the mean
    return discriminant(torch.stack(means), torch.stack(precisions).mean(dim=0))


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
    """What GDA keeps: the discriminant's weights and biases, the chosen ensembling weight, and the
    pooled training features (what a base-to-novel run builds its novel classes from)."""

    def __init__(self, dim: int, n_classes: int, n_features: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(dim, n_classes))
        self.register_buffer("bias", torch.zeros(n_classes))
        self.register_buffer("alpha", torch.tensor(0.0))
        self.register_buffer("bank", torch.zeros(n_features, dim))

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
        if mcfg.NOVEL_TOPK < 2 or mcfg.NOVEL_TEXT_WEIGHT < 0:
            raise UserError(f"TRAINER.GDA.NOVEL_TOPK must be >= 2 and NOVEL_TEXT_WEIGHT >= 0; got "
                            f"{mcfg.NOVEL_TOPK} and {mcfg.NOVEL_TEXT_WEIGHT}.")

    def build_head(self) -> None:
        n_features = self.train_view_count() * len(self.dm.dataset.train_x)
        self.head = GDAHead(self.backbone.embed_dim, self.num_classes, n_features).to(self.device)
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
        self.head.bank.copy_(features)
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

    def load_state(self, name: str, model, state: dict) -> None:
        """A base-to-novel new-class run builds its classifier from the base run's pooled features and
        this run's class texts (the authors' synthesis) and keeps the base run's alpha."""
        if str(self.cfg.DATASET.SUBSAMPLE_CLASSES).lower() != "new":
            return super().load_state(name, model, state)
        if "bank" not in state:
            raise UserError(f"The '{name}' checkpoint holds no training features to build novel classes from; "
                            "rerun the base-class GDA run with this version.")
        mcfg = self.cfg.TRAINER.GDA
        weight, bias = novel_classifier(state["bank"].to(self.device), self.text_weights, mcfg.NOVEL_TOPK,
                                        mcfg.NOVEL_TEXT_WEIGHT)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
            self.head.alpha.copy_(state["alpha"])
        self.logger.info(f"GDA: {self.num_classes} novel class(es) built from their text and the "
                         f"{min(mcfg.NOVEL_TOPK, len(state['bank']))} nearest of {len(state['bank'])} base features; "
                         f"alpha {float(state['alpha']):g} from the base run")
