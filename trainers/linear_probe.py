"""Linear probe (Radford et al., ICML 2021) and LP++ (Huang et al., CVPR 2024) on frozen image features.

LinearProbe: scikit-learn's L2 logistic regression (lbfgs, 1000 iterations) on one augmented view of
the unit train features. C is chosen on the few-shot val split as the reference does: a coarse
grid 1e6 ... 1e-6, then 8 halvings in log10 space of [C*/10, 10 C*] (fit both ends, keep the
better one, the left on a tie) and the classifier of the last step is the one tested.

LPPlusPlus: logits = W f + b + alpha * (f . t_c) with the single-template text features t_c, full
batch, 300 epochs. As in the reference: W starts as the per-class *sum* of the train features
(rounded to half precision), b at PyTorch's default init, alpha (one per class) at
250 x the mean over classes of the mean text affinity of a class's own images; W and b take SGD
steps (momentum 0.9) of lr 4N / lambda_max(F^T F); alpha moves every 10 epochs by
lr_alpha = N / (4 max_c sum_i (f_i . t_c)^2) times its gradient, which is never zeroed and so sums
over all epochs so far; the model tested is the one of the last epoch whose val accuracy is >= the
best so far.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from engine.config import register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.feature_methods import FeatureMethod

if TYPE_CHECKING:  # scikit-learn loads in fit(), so registering this method costs nothing
    from sklearn.linear_model import LogisticRegression


@register_method_cfg("LINEARPROBE")
def linearprobe_cfg() -> CN:
    node = CN()
    node.C_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]  # coarse search over the inverse L2 strength
    node.SEARCH_STEPS = 8  # log-space halvings around the best grid value (0 = take that value)
    node.MAX_ITER = 1000
    return node


@register_method_cfg("LPPLUSPLUS")
def lpplusplus_cfg() -> CN:
    node = CN()
    node.ALPHA_INIT_SCALE = 250.0
    node.ALPHA_UPDATE_EVERY = 10  # epochs between the alpha steps
    return node


# ----- linear probe -------------------------------------------------------------------------------
def search_c(val_accuracy: Callable[[float], float], grid: list[float], steps: int) -> float:
    """The reference's C search: best of `grid` (first of equals), then `steps` halvings of
    [C/10, 10 C] in log10 space, each keeping the better end (the left one on a tie)."""
    scores = [val_accuracy(c) for c in grid]
    peak = grid[int(np.argmax(scores))]
    if steps < 1:
        return peak
    left, right = math.log10(peak) - 1, math.log10(peak) + 1
    chosen = peak
    for _ in range(steps):
        mid = (left + right) / 2
        if val_accuracy(10**left) < val_accuracy(10**right):
            chosen, left = 10**right, mid
        else:
            chosen, right = 10**left, mid
    return chosen


class Probe(nn.Module):
    """A linear classifier on unit features, with the regularisation it was fitted with."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)
        self.register_buffer("c", torch.tensor(0.0, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    @torch.no_grad()
    def load_sklearn(self, clf: LogisticRegression, c: float) -> None:
        """Copy a fitted classifier: same argmax as clf.predict (binary: logits (0, w.f + b))."""
        # Assembled on the CPU, where sklearn's arrays are, then copied to the layer's device.
        weight = torch.zeros(self.linear.weight.shape)
        bias = torch.full(self.linear.bias.shape, -math.inf)  # a class absent from train is never predicted
        classes = torch.as_tensor(clf.classes_, dtype=torch.long)
        coef = torch.as_tensor(clf.coef_, dtype=weight.dtype)
        intercept = torch.as_tensor(clf.intercept_, dtype=bias.dtype)
        if len(classes) == 2:
            bias[classes[0]] = 0.0
            weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
        else:
            weight[classes], bias[classes] = coef, intercept
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)
        self.c.fill_(c)


@TRAINER_REGISTRY.register()
class LinearProbe(FeatureMethod):
    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER.LINEARPROBE
        if not mcfg.C_GRID or min(mcfg.C_GRID) <= 0 or mcfg.SEARCH_STEPS < 0:
            raise UserError("TRAINER.LINEARPROBE.C_GRID needs positive values and SEARCH_STEPS must be >= 0; "
                            f"got {list(mcfg.C_GRID)} and {mcfg.SEARCH_STEPS}.")

    def build_head(self) -> None:
        self.probe = Probe(self.backbone.embed_dim, self.num_classes).to(self.device)
        self.register_model("probe", self.probe)

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.probe(F.normalize(features, dim=-1))

    def fit(self) -> None:
        mcfg = self.cfg.TRAINER.LINEARPROBE
        views, labels = self.train_views(self.train_view_count())
        x, y = views[0].cpu().numpy(), labels.cpu().numpy()
        val, val_labels = self.val_features()
        xv, yv = val.cpu().numpy(), val_labels.cpu().numpy()
        fitted: dict[float, tuple[LogisticRegression, float]] = {}  # lbfgs is deterministic: fit each C once

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        def fit_c(c: float) -> tuple[LogisticRegression, float]:
            if c not in fitted:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf = LogisticRegression(solver="lbfgs", max_iter=mcfg.MAX_ITER, C=c).fit(x, y)
                fitted[c] = clf, float((clf.predict(xv) == yv).mean())
            return fitted[c]

        chosen = search_c(lambda c: fit_c(c)[1], list(mcfg.C_GRID), mcfg.SEARCH_STEPS)
        clf, acc = fit_c(chosen)
        self.probe.load_sklearn(clf, chosen)
        where = getattr(self, "validation_source", "val")
        self.logger.info(f"Chose C = {chosen:.4g} on {where} ({where} accuracy {100 * acc:.2f}%, {len(fitted)} fits)")


# ----- LP++ -------------------------------------------------------------------------------------------
def lpp_init_weight(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, D) per-class sums of the features, in half precision as the reference computes them."""
    one_hot = F.one_hot(labels, n_classes).to(features.dtype)
    return (one_hot.t() @ features.half().to(features.dtype)).half().to(features.dtype)


def lpp_init_alpha(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, n_classes: int,
                   scale: float = 250.0) -> float:
    """scale x mean over classes c of the mean over class-c images of f . t_c."""
    affinity = features @ text.t()  # (N, C)
    own = torch.stack([affinity[labels == c, c].mean() for c in range(n_classes)])
    return float(scale * own.mean())


def lpp_lr_w(features: torch.Tensor) -> float:
    """4N / lambda_max(F^T F), the step size LP++ derives from the data's curvature."""
    gram = features.double().t() @ features.double()
    return float(4 * features.shape[0] / torch.linalg.eigvalsh(gram).max())


def lpp_lr_alpha(features: torch.Tensor, text: torch.Tensor) -> float:
    """N / (4 max_c sum_i (f_i . t_c)^2)."""
    return float(features.shape[0] / (4 * (features @ text.t()).pow(2).sum(dim=0).max()))


class LPPHead(nn.Module):
    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)  # its bias keeps PyTorch's default init
        self.alpha = nn.Parameter(torch.zeros(1, n_classes))

    def forward(self, features: torch.Tensor, text_logits: torch.Tensor) -> torch.Tensor:
        return self.linear(features) + self.alpha * text_logits


@TRAINER_REGISTRY.register()
class LPPlusPlus(FeatureMethod):
    def build_head(self) -> None:
        self.head = LPPHead(self.backbone.embed_dim, self.num_classes).to(self.device)
        self.register_model("lpp_head", self.head)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features, features @ self.text_weights.t())

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(F.normalize(features, dim=-1))

    def fit(self) -> None:
        mcfg, n_classes, text = self.cfg.TRAINER.LPPLUSPLUS, self.num_classes, self.text_weights
        views, labels = self.train_views(self.train_view_count())
        feats = views[0]
        val, val_labels = self.val_features()
        lr_w, lr_alpha = lpp_lr_w(feats), lpp_lr_alpha(feats, text)
        alpha0 = lpp_init_alpha(feats, labels, text, n_classes, mcfg.ALPHA_INIT_SCALE)
        with torch.no_grad():
            self.head.linear.weight.copy_(lpp_init_weight(feats, labels, n_classes))
            self.head.alpha.fill_(alpha0)
        self.logger.info(f"LP++: lr_w {lr_w:.4g}, lr_alpha {lr_alpha:.4g}, initial alpha {alpha0:.4g}")
        if alpha0 < 0:  # trained CLIP-style models give positive image-text cosines; random twins need not
            self.logger.info(
                f"note: LP++'s initial alpha is negative: this model's images are on average anti-aligned with "
                f"their own class's text ({alpha0 / mcfg.ALPHA_INIT_SCALE:.3f} cosine), as random weights (a Tiny "
                "twin) can be, so the text term first ranks classes backwards and the early epochs score near 0%; "
                "W outweighs it after a few epochs (docs/offline.md, tiny twins)"
            )
        optim = torch.optim.SGD(self.head.linear.parameters(), lr=lr_w, momentum=self.cfg.OPTIM.MOMENTUM)
        best_acc, best_state, best_epoch = 0.0, None, 0
        for epoch in range(self.max_epoch):
            loss = F.cross_entropy(self.logits(feats), labels)
            optim.zero_grad()  # W and b only: alpha's gradient keeps summing, as in the reference
            loss.backward()
            optim.step()
            if (epoch + 1) % mcfg.ALPHA_UPDATE_EVERY == 0:
                with torch.no_grad():
                    self.head.alpha -= lr_alpha * self.head.alpha.grad
            with torch.no_grad():
                acc = self.accuracy(self.logits(val), val_labels)
            if acc >= best_acc:
                best_acc, best_epoch = acc, epoch + 1
                best_state = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
            freq = self.cfg.TRAIN.PRINT_FREQ
            if freq > 0 and ((epoch + 1) % freq == 0 or epoch + 1 == self.max_epoch):
                self.logger.info(f"epoch [{epoch + 1}/{self.max_epoch}] loss {loss.item():.4f} val acc {acc:.2f}%")
            self.track({"train/loss": loss.item(), "val/acc": acc}, step=epoch + 1)
        self.head.load_state_dict(best_state)
        self.head.alpha.grad = None
        self.logger.info(f"Kept the model of epoch {best_epoch} (val accuracy {best_acc:.2f}%)")
