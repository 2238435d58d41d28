"""EviSteer (Koleilat et al., MICCAI 2026, arXiv 2605.26292): evidential activation steering of both towers.

Before each steered block of both towers a small module adds an update to every token:
down-project the tokens (width -> 2 x DIM, no bias), split the result into a steering code z_mu and
an evidence code z_unc, and add  sigmoid(g) x gate x up(z_mu)  with `up` (DIM -> width, no bias)
zero-initialised and g a learned scalar starting at 0. The evidence is alpha = softplus(z_unc^2) +
1e-6 + 1 per code dimension and the uncertainty 1 / alpha.

- Text gate: sigmoid(w . (1 - u_text)) per token (w: DIM -> 1, no bias).
- Image gate: the image token's belief (1 - u_img, u_img) and the text's, u_t = mean over classes
  of the pooled text token's uncertainty, are combined by Dempster's rule per code dimension:
  fused = (1 - u_t)(1 - u_img) / (1 - [(1 - u_t) u_img + u_t (1 - u_img)] + 1e-6); the gate is
  sigmoid(w . fused). So the image update is conditioned on how confident the text is, and the
  gradient reaches the text module through u_t too.
- Loss: CE + KL_WEIGHT x (KL_img + KL_txt), each the mean over steered blocks of the element mean of
  KL(Gamma(alpha, 1) || Gamma(1, 1)) = (alpha - 1) digamma(alpha) - lgamma(alpha); the image term
  over every token, the text term over the pooled token of each class prompt.

Settings of the public code (configs/EviSteer.yaml and trainers/): DIM 4, depth 12 (blocks 1-11 are
steered: its block 0 has no steering and the module it builds for it is never called), AdamW lr
7.5e-4 without weight decay, batch 16, 100 epochs, a cosine with T_max = 400 iterations stepped every
iteration down to 1e-6, KL weight 1e-4, one prompt "a photo of a {}." per class re-encoded every step.
docs/two_tower.md lists what was taken from where and the choices made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EVIDENCE_EPS = 1e-6  # the public code's floor on the evidence (keeps alpha > 1)
DS_EPS = 1e-6  # the public code's guard on Dempster's normalisation


# ----- pure functions -------------------------------------------------------------------------------
def evidential_alpha(z_unc: torch.Tensor) -> torch.Tensor:
    """Dirichlet-style concentration per code dimension: softplus(z^2) + 1e-6 + 1 (always > 1)."""
    return F.softplus(z_unc.square()) + EVIDENCE_EPS + 1.0


def dempster_shafer_confidence(u_text: torch.Tensor, u_image: torch.Tensor) -> torch.Tensor:
    """Belief in 'apply the update' after fusing the text's and the image's evidence by Dempster's rule.

    Each source puts mass 1 - u on 'update' and u on the whole frame (ignorance); the fused mass on
    'update' is m_t m_v / (1 - K), K being the conflict m_t(update) m_v(ignorance) + m_t(ignorance)
    m_v(update) as the public code defines it. Shapes broadcast (u_text: (r,), u_image: (B, N, r)).
    """
    m_text, m_image = 1.0 - u_text, 1.0 - u_image
    conflict = m_text * u_image + u_text * m_image
    return m_text * m_image / (1.0 - conflict + DS_EPS)


def gamma_kl_to_unit_prior(alpha: torch.Tensor) -> torch.Tensor:
    """Element mean of KL(Gamma(alpha, 1) || Gamma(1, 1)) = (alpha - 1) digamma(alpha) - lgamma(alpha), in fp32.

    Zero at alpha = 1 (no evidence), growing with the evidence; alpha is floored at 1e-6 as in the code.
    """
    alpha = alpha.float().clamp_min(1e-6)
    return ((alpha - 1.0) * torch.digamma(alpha) - torch.lgamma(alpha)).mean()


def evisteer_kl(image_alphas: list[torch.Tensor], text_alphas: list[torch.Tensor]) -> torch.Tensor:
    """KL_img + KL_txt, each the mean over steered blocks of `gamma_kl_to_unit_prior`."""
    kl_img = torch.stack([gamma_kl_to_unit_prior(a) for a in image_alphas]).mean()
    kl_txt = torch.stack([gamma_kl_to_unit_prior(a) for a in text_alphas]).mean()
    return kl_img + kl_txt


# ----- the steering modules -------------------------------------------------------------------------------
class _EvidentialSteer(nn.Module):
    """down (width -> 2r), up (r -> width, zero), gate (r -> 1, sigmoid), global gate g (sigmoid(0) = 0.5)."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.down = nn.Linear(width, 2 * self.dim, bias=False)
        self.up = nn.Linear(self.dim, width, bias=False)
        nn.init.zeros_(self.up.weight)  # the steered model starts as the frozen one
        self.gate = nn.Linear(self.dim, 1, bias=False)
        self.global_gate = nn.Parameter(torch.zeros(1))

    def codes(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(steering code z_mu, concentration alpha), each (..., r)."""
        z_mu, z_unc = self.down(tokens).chunk(2, dim=-1)
        return z_mu, evidential_alpha(z_unc)

    def update(self, z_mu: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.global_gate) * torch.sigmoid(self.gate(confidence)) * self.up(z_mu)


class TextSteer(_EvidentialSteer):
    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (C, T, width) and the index of each prompt's pooled token (C,) ->
        (update (C, T, width), alpha of the pooled tokens (C, r))."""
        z_mu, alpha = self.codes(tokens)
        update = self.update(z_mu, 1.0 - 1.0 / alpha)
        return update, alpha[torch.arange(alpha.shape[0], device=alpha.device), pooled]


class ImageSteer(_EvidentialSteer):
    def forward(self, tokens: torch.Tensor, text_alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, width) and the text's pooled alphas of the same block (C, r) ->
        (update (B, N, width), alpha of every image token (B, N, r))."""
        z_mu, alpha = self.codes(tokens)
        u_text = (1.0 / text_alpha).mean(dim=0)  # (r,): the text's mean uncertainty over classes
        fused = dempster_shafer_confidence(u_text.to(alpha.dtype), 1.0 / alpha)
        return self.update(z_mu, fused), alpha
