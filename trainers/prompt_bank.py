"""The LLM prompt bank that BiomedCoOp, zero-shot ensembles and the prompt tools share.

A bank is (classes, prompts, width) unit text features of the frozen tower. Each prompt gets one
score on a batch of images (mean over the images of the best class similarity), and the reference's
outlier test keeps the prompts whose standardised MAD z-score stays within tau. BiomedCoOp's teacher
uses the kept prompts, the zero-shot ensemble the whole bank, and the prompt tools (prompts/) report
both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.text_cache import encode_prompts_cached


def select_prompts(scores: torch.Tensor, tau: float, absolute: bool = False) -> torch.Tensor:
    """Boolean mask of the prompts kept by the reference's MAD z-score then z-score test.

    The second standardisation makes the MAD step irrelevant unless MAD is 0, where dividing by it
    gave the reference an all-False mask and a NaN teacher; that case uses MAD = 1 instead.
    `absolute=True` is the reference's PMC-CLIP variant, |score - median| / MAD, which can also
    drop prompts that sit unusually close to the median.
    """
    if scores.numel() < 2:
        return torch.ones_like(scores, dtype=torch.bool)  # one description: nothing to compare it with
    med = scores.median()
    mad = (scores - med).abs().median()
    deviation = (scores - med).abs() if absolute else scores - med
    z = deviation / (mad if mad > 0 else torch.ones_like(mad))
    std = z.std()
    if not torch.isfinite(std) or std == 0:
        return torch.ones_like(scores, dtype=torch.bool)  # all prompts score alike: none is an outlier
    keep = ((z - z.mean()) / std).abs() <= tau
    return keep if keep.any() else torch.ones_like(keep)


@torch.no_grad()
def encode_prompt_bank(backbone, ensemble: list[list[str]], cache_dir: str | None = None) -> torch.Tensor:
    """(C, N, D) unit vectors: prompt i of every class, encoded once by the frozen text tower in eval mode
    (and kept in `cache_dir` for the next run)."""
    flat = [sentence for sentences in ensemble for sentence in sentences]
    feats = encode_prompts_cached(backbone, flat, cache_dir)
    return F.normalize(feats.view(len(ensemble), len(ensemble[0]), -1), dim=-1)


def prompt_scores(image_feats: torch.Tensor, bank: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """score_i = mean over images of max over classes of scale * cos(image, prompt i of that class).

    image_feats: (B, D) normalised; bank: (C, N, D) normalised; returns (N,).
    """
    sims = scale * torch.einsum("bd,cnd->bnc", image_feats, bank)
    return sims.max(dim=2).values.mean(dim=0)
