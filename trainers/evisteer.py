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

One departure: the public code, written for BiomedCLIP alone, reads the text's evidence at token 0,
which on BiomedCLIP's BERT is [CLS], the token its text tower pools. Here it is read at whatever
token the backbone's own text tower pools (`Backbone.text_pool_positions`): still token 0 on
BERT-style towers, so BiomedCLIP's numbers are the code's, but the end-of-text token on CLIP-style
towers (CLIP, PubMedCLIP, HFCLIP), where token 0 is the start token that the causal mask keeps
blind to the prompt, and the last position on SigLIP's. A text tower that pools over every token
(mean or max pooling) is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from backbones.tower_hooks import TowerHooks, pooled_positions, require
from engine.config import register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.tower_tuning import TowerTuningTrainer

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


# ----- the trainer ----------------------------------------------------------------------------------------
@register_method_cfg("EVISTEER")
def evisteer_cfg():
    node = CN()
    node.TEMPLATE = "a photo of a {}."  # one prompt per class, re-encoded through the steered text tower each step
    node.DIM = 4  # r: the steering code's dimension (the down projection gives 2r: code and evidence)
    # The public code's adapter depth: blocks 1..DEPTH-1 of both towers are steered (capped at the
    # shallower tower's depth, so 12 = every block but the first on a ViT-B).
    node.DEPTH = 12
    node.KL_WEIGHT = 1e-4
    node.ITERS_PER_SHOT = 0  # 0: OPTIM.MAX_EPOCH epochs
    node.COSINE_PERIOD = "iterations"
    node.COSINE_T_MAX = 400  # > 0: the cosine's period in iterations, fixed as in the public code
    node.ETA_MIN = 1e-6
    node.LOGIT_SCALE = 0.0  # 0 = the backbone's own
    node.PREC = "auto"  # bf16 autocast on CUDA (fp16 + scaling where bf16 is unsupported), fp32 on CPU
    return node


@TRAINER_REGISTRY.register()
class EviSteer(TowerTuningTrainer):
    """Trains the steering modules on pixels; both towers stay frozen (tower hooks add the updates)."""

    cfg_key = "EVISTEER"
    model_name = "steering"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        mcfg = cfg.TRAINER.EVISTEER
        for key in ("DIM", "DEPTH"):
            if not isinstance(mcfg[key], int) or mcfg[key] < (1 if key == "DIM" else 2):
                least = 1 if key == "DIM" else 2
                raise UserError(f"TRAINER.EVISTEER.{key} must be a whole number of at least {least}; got {mcfg[key]}.")
        if mcfg.KL_WEIGHT < 0 or mcfg.COSINE_T_MAX < 0:
            raise UserError("TRAINER.EVISTEER.KL_WEIGHT and COSINE_T_MAX must be >= 0; "
                            f"got {mcfg.KL_WEIGHT} and {mcfg.COSINE_T_MAX}.")

    def adapt(self, backbone) -> dict[str, nn.Parameter]:
        mcfg = self.method_cfg
        towers = require(backbone, "EviSteer", {"image": "activation steering", "text": "activation steering"})
        depth = min(mcfg.DEPTH, towers["image"].depth, towers["text"].depth)
        if depth < mcfg.DEPTH:
            self.logger.info(f"note: TRAINER.EVISTEER.DEPTH {mcfg.DEPTH} is deeper than {backbone.name}'s towers "
                             f"({towers['image'].depth} image / {towers['text'].depth} text blocks); steering "
                             f"blocks 1-{depth - 1}")
        # The hooks add an update after block i; the public code adds it before block i + 1.
        self.steered = list(range(depth - 1))
        device = backbone.device
        self.steering = nn.ModuleDict({
            "image": nn.ModuleList(ImageSteer(towers["image"].width, mcfg.DIM) for _ in self.steered),
            "text": nn.ModuleList(TextSteer(towers["text"].width, mcfg.DIM) for _ in self.steered),
        }).to(device)
        self._text_alphas: dict[int, torch.Tensor] | None = None  # set by each text pass
        self._image_alphas: list[torch.Tensor] | None = None  # collected during a training step only
        return dict(self.steering.named_parameters())

    def build_model(self) -> None:
        super().build_model()
        mcfg = self.method_cfg
        if mcfg.COSINE_T_MAX > 0:  # the public code's fixed period, whatever the run's length
            optim = self._optims[self.model_name]
            self._scheds[self.model_name] = torch.optim.lr_scheduler.CosineAnnealingLR(
                optim, T_max=mcfg.COSINE_T_MAX, eta_min=mcfg.ETA_MIN)
        # Where each class prompt's text confidence is read: the token the backbone's text tower pools.
        self.text_pooled = pooled_positions(self.backbone, "EviSteer", self.text_ids).to(self.device)

    # ----- steered passes -----------------------------------------------------------------------------
    def _text_hooks(self) -> TowerHooks:
        def step(i: int, module: TextSteer):
            def update(tokens: torch.Tensor) -> torch.Tensor:
                delta, self._text_alphas[i] = module(tokens, self.text_pooled)
                return delta
            return update

        return TowerHooks(steer={i: step(i, m) for i, m in zip(self.steered, self.steering["text"])})

    def _image_hooks(self) -> TowerHooks:
        def step(i: int, module: ImageSteer):
            def update(tokens: torch.Tensor) -> torch.Tensor:
                delta, alpha = module(tokens, self._text_alphas[i])
                if self._image_alphas is not None:
                    self._image_alphas.append(alpha)
                return delta
            return update

        return TowerHooks(steer={i: step(i, m) for i, m in zip(self.steered, self.steering["image"])})

    def class_text_features(self) -> torch.Tensor:
        """The class prompts through the steered text tower; records each block's pooled-token alphas,
        which the image pass that follows reads."""
        self._text_alphas = {}
        embeds = self.backbone.embed_tokens(self.text_ids)
        return F.normalize(self.backbone.encode_text_hooked(embeds, self.text_ids, self._text_hooks()).float(), dim=-1)

    def image_features(self, batch: dict) -> torch.Tensor:
        if self._text_alphas is None:
            raise RuntimeError("EviSteer: the text pass must run before the image pass (it conditions the image gates)")
        return self.backbone.encode_image_hooked(batch["img"].to(self.device), self._image_hooks())

    def forward_backward(self, batch: dict) -> dict:
        labels = batch["label"].to(self.device)
        self._image_alphas = []
        with self.forward_context():
            text = self.class_text_features()
            logits = self.logits(self.image_features(batch), text)
            loss_ce = F.cross_entropy(logits, labels)
            image_alphas = self._image_alphas
            text_alphas = [self._text_alphas[i] for i in self.steered]
        # The regulariser in fp32 (digamma / lgamma), outside autocast, as the public code casts it.
        loss_kl = evisteer_kl(image_alphas, text_alphas) if self.steered else loss_ce.new_zeros(())
        loss = loss_ce + self.method_cfg.KL_WEIGHT * loss_kl
        self.step_on(loss)
        self._image_alphas = None
        return {"loss": loss.item(), "loss_ce": loss_ce.item(), "loss_kl": loss_kl.item(),
                "acc": (logits.argmax(1) == labels).float().mean().item() * 100}

    def load_state(self, name: str, model: nn.Module, state: dict) -> None:
        expected = model.state_dict()
        if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
            raise UserError(f"The checkpoint's {name} tensors do not fit this run ({len(state)} saved, {len(expected)} "
                            "expected): evaluate with the TRAINER.EVISTEER.DIM / DEPTH and model it was trained with.")
        model.load_state_dict(state, strict=True)
