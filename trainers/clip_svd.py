"""CLIP-SVD (Koleilat, Rivaz and Xiao, 2025): train only the singular values of the towers' weights.

Each targeted weight W is factorised once, W = U diag(s) V^T (full rank, fp32); U and V are frozen and
s, initialised to the pretrained singular values, is the only thing learned. As published: q, k, v,
the attention output and both MLP matrices of every block of both towers; AdamW, batch 32, the
per-dataset learning rates and epochs of configs/trainers/CLIPSVD/, weight decay 0 for the
biomedical benchmarks, cross-entropy on scale * cos(image, text) with one prompt per class
re-encoded every step. The cosine schedule has T_max = epochs but is stepped every iteration, as in
the reference, so with more than one batch per epoch the rate comes back up (COSINE_PERIOD epochs).

The weight is rebuilt as U diag(s) V^T once per forward pass (torch parametrisation, cached for
the pass) instead of running x through V^T, s and U: the same function, one matmul per layer at run
time. Fused weights (timm's qkv, nn.MultiheadAttention's in_proj) are factorised per q/k/v block, as
the reference does after splitting them. Weights the reference factorises but never trains (heads,
projections, pooler) are left as they are: the same function, without the factorisation's rounding.
A ResNet image tower (PMC-CLIP) has no blocks; its attention pool's projections are trained.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils import parametrize

from engine.config import register_method_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.tower_tuning import TowerTuningTrainer, TowerWeight, select_weights, tower_cfg


@register_method_cfg("CLIPSVD")
def clip_svd_cfg():
    return tower_cfg(params=("q", "k", "v", "o", "mlp"), iters_per_shot=0, cosine_period="epochs")


@contextlib.contextmanager
def single_threaded_on_cpu(device: torch.device):
    """CPU SVD runs single-threaded: with the threads busy it was measured 300x slower on 2 threads."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def factorise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in fp32; a wide matrix is factorised through its transpose (faster on CPU)."""
    w = weight.detach().float()
    with single_threaded_on_cpu(w.device):
        if w.shape[0] < w.shape[1]:
            v, s, ut = torch.linalg.svd(w.t(), full_matrices=False)
            return ut.t(), s, v.t()
        return torch.linalg.svd(w, full_matrices=False)


class SingularValues(nn.Module):
    """Parametrisation of a weight as U diag(s) V^T per row block; blocks not trained stay verbatim.

    The learned singular values are the parametrisation's `original0, original1, ...` (one per
    trained block, in block order); U, V and untouched rows are buffers left out of state_dict
    because they are recomputed from the pretrained weight.
    """

    def __init__(self, weight: torch.Tensor, blocks: int, trained: list[int]):
        super().__init__()
        self.blocks, self.trained, self.dtype = blocks, sorted(trained), weight.dtype
        self.initial: list[torch.Tensor] = []
        for i, rows in enumerate(weight.detach().chunk(blocks, dim=0)):
            if i in self.trained:
                u, s, vh = factorise(rows)
                self.register_buffer(f"U{i}", u, persistent=False)
                self.register_buffer(f"Vh{i}", vh, persistent=False)
                self.initial.append(s)
            else:
                self.register_buffer(f"W{i}", rows.clone(), persistent=False)

    def forward(self, *singular_values: torch.Tensor) -> torch.Tensor:
        values = dict(zip(self.trained, singular_values))
        with torch.autocast(self.U_any.device.type, enabled=False):  # rebuild in fp32 even under autocast
            rows = [
                (getattr(self, f"U{i}") * values[i].float()) @ getattr(self, f"Vh{i}") if i in values
                else getattr(self, f"W{i}")
                for i in range(self.blocks)
            ]
        return torch.cat(rows).to(self.dtype)

    @property
    def U_any(self) -> torch.Tensor:
        return getattr(self, f"U{self.trained[0]}")

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Called once, at registration: the learned tensors start at the pretrained singular values.
        return tuple(self.initial)


def attach_singular_values(weights: list[TowerWeight]) -> list[tuple[TowerWeight, nn.Parameter]]:
    """Factorise each chosen weight once; return (weight, its learned singular values) pairs."""
    by_tensor: dict[tuple[int, str], list[TowerWeight]] = {}
    for w in weights:
        by_tensor.setdefault((id(w.owner), w.param), []).append(w)
    out = []
    for group in by_tensor.values():
        owner, param = group[0].owner, group[0].param
        group.sort(key=lambda w: w.block)
        parametrisation = SingularValues(getattr(owner, param), group[0].blocks, [w.block for w in group])
        parametrize.register_parametrization(owner, param, parametrisation)
        originals = owner.parametrizations[param]
        for i, w in enumerate(group):
            s = getattr(originals, f"original{i}")
            out.append((w, s))
        del parametrisation.initial
    return out


@TRAINER_REGISTRY.register()
class CLIPSVD(TowerTuningTrainer):
    cfg_key = "CLIPSVD"
    model_name = "singular_values"

    def adapt(self, backbone) -> dict[str, nn.Parameter]:
        backbone.requires_grad_(False)
        learned = {}
        for w, s in attach_singular_values(select_weights(backbone, self.method_cfg, self.cfg_key)):
            s.requires_grad_(True)
            suffix = f".{w.role}" if w.blocks > 1 else ""
            learned[f"{w.name}.{w.param}{suffix}.singular_values"] = s
        return learned
