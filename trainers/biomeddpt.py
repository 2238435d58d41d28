"""BiomedDPT (Peng et al., arXiv 2505.05189, IEEE JBHI 2026): dual text prompt plus zero-vector visual prompts.

Text: a template-driven clinical prompt per class ("a MR photo of a {} in the brain.") whose leading
words ("a MR photo of a") are learned context vectors initialised from those words, pulled toward the
LLM-written prompts of clip_prompts/ (the second, domain-adapted prompt) by two terms: an L1
constraint between the learned and the LLM-ensemble text features and a KL divergence from the
LLM-ensemble zero-shot logits to the learned logits.
Image: VISUAL_TOKENS zero vectors joined to the image tokens at every image block (replaced at each
block, dropped before pooling). Zero tokens carry no content, but they are keys and values of
every attention: their (LayerNorm bias) keys take a share of each softmax, so the weights of the other
tokens are re-weighted. They stay zero by default, as in the code the authors released; VISUAL_LEARNED
True trains them from zero instead.

Cost: with fixed zero prompts nothing in the image path trains (the tower is frozen and in eval mode,
the prompts are zeros, their dropout leaves zeros), so the image feature of an augmented view is a fixed
function of its pixels. The run then trains and tests on cached features of the zero-prompted tower,
like the other prompt learners: one view per image per epoch (FEATURES.TRAIN_VIEWS caps it), the test
set once, through the tower's own hooked forward (encode_image_hooked) with the same zeros, and the
image tower is released before the first step. The cache files carry the prompt setting (FeatureVariant
"dpt": VISUAL_TOKENS zeros at every block), so the plain tower's features are never read for them. A
cached step gives the pixel step's loss and gradients on the same view up to float rounding
(tests/test_biomeddpt.py). VISUAL_LEARNED True (or FEATURES.ENABLED False) trains on pixels, every step
through the prompted tower; only then may several processes train one run (torchrun).

Loss = CE + L1_LAMBDA x mean|t - p| + KL_LAMBDA x KL(q_zs || q) / (B x C), with t the learned text
features, p the normalised mean of the LLM prompts' features, q_zs the softmax of scale x cos(image,
p) and q the learned softmax. docs/two_tower.md lists every choice the paper leaves open.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbones.tower_hooks import TowerHooks, require
from engine.config import prompt_cfg, register_method_cfg
from engine.errors import UserError
from engine.features import FeatureVariant
from engine.prompts import load_ensemble
from engine.registry import TRAINER_REGISTRY
from trainers.biomedcoop import kdsp_loss
from trainers.coop import PromptTrainer
from trainers.prompt_bank import encode_prompt_bank
from trainers.prompt_learner import PromptLearner


@register_method_cfg("BIOMEDDPT")
def biomeddpt_cfg():
    node = prompt_cfg("a photo of a")
    node.PREC = "auto"  # bf16 autocast on CUDA, fp32 on CPU (the authors trained in fp32: PREC fp32)
    node.TEMPLATE = "a photo of a {}."  # the clinical template; it begins with CTX_INIT's words
    node.L1_LAMBDA = 18.75
    node.KL_LAMBDA = 0.5
    node.N_PROMPTS = 50  # LLM prompts per class (clip_prompts/<DATASET>.json) behind the distillation targets
    node.VISUAL_TOKENS = 4  # zero vectors inserted at every image block
    node.VISUAL_LEARNED = False  # True: train them (from zero) instead of keeping them zero
    node.VISUAL_DROPOUT = 0.5  # on the visual prompts in training (changes nothing while they are zero)
    return node


def semantic_l1_loss(text: torch.Tensor, ensemble_mean: torch.Tensor) -> torch.Tensor:
    """The L1 constraint: element mean of |learned - LLM-ensemble| over the C x D unit text features."""
    return F.l1_loss(text, ensemble_mean)


class ClinicalPromptLearner(PromptLearner):
    """Context vectors that replace the leading words of a clinical template, one sentence per class.

    With CTX_INIT the template must begin with those words (the run starts from the template
    itself); without it, N_CTX random vectors (std 0.02) replace the template's first N_CTX words.
    Forward, text features and checkpoint loading are PromptLearner's.
    """

    def __init__(self, backbone, classnames: list[str], template: str, n_ctx: int = 4, ctx_init: str = ""):
        nn.Module.__init__(self)
        names = [c.replace("_", " ") for c in classnames]
        start, end = backbone.start_tokens, backbone.end_tokens
        lead = template.split("{}")[0].strip()
        with torch.no_grad():
            ids = backbone.trim(backbone.tokenize([template.format(name) for name in names])).to(backbone.device)
            embedding = backbone.embed_tokens(ids)
            if ctx_init:
                ctx_init = ctx_init.replace("_", " ")
                init_ids = backbone.tokenize([ctx_init])
                n_ctx = int(backbone.real_lengths(init_ids)[0]) - start - end
                words = init_ids[0, start : start + n_ctx].to(ids.device)
                if n_ctx < 1 or ids.shape[1] < start + n_ctx or not (ids[:, start : start + n_ctx] == words).all():
                    raise UserError(f"TRAINER.BIOMEDDPT.TEMPLATE '{template}' must begin with the words of CTX_INIT "
                                    f"'{ctx_init}' (they become the learned context); make CTX_INIT the words "
                                    "before '{}' in the template.")
                ctx = embedding[0, start : start + n_ctx].clone()
            else:
                lead_words = int(backbone.real_lengths(backbone.tokenize([lead]))[0]) - start - end if lead else 0
                if lead_words < n_ctx:
                    raise UserError(f"TRAINER.BIOMEDDPT.N_CTX {n_ctx} is more than the {lead_words} token(s) before "
                                    f"'{{}}' in TEMPLATE '{template}'; the context would overwrite the class name.")
                ctx = torch.empty(n_ctx, backbone.token_width, device=backbone.device).normal_(std=0.02)
        self.backbone = [backbone]  # a list keeps the frozen backbone out of this module's state_dict
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx.float())
        self.register_buffer("token_prefix", embedding[:, :start].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, start + n_ctx :].clone(), persistent=False)
        self.register_buffer("token_ids", ids, persistent=False)


class VisualPrompts(nn.Module):
    """(depth, n, width) prompt tokens for the image blocks, zero at the start; a parameter only when learned
    (fixed zeros are a buffer, so checkpoints never hold them)."""

    def __init__(self, depth: int, n: int, width: int, learned: bool, dropout: float):
        super().__init__()
        zeros = torch.zeros(depth, n, width)
        if learned:
            self.tokens = nn.Parameter(zeros)
        else:
            self.register_buffer("tokens", zeros, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def hooks(self) -> TowerHooks:
        # Dropout leaves fixed zeros zero; skipping it keeps the random stream the same as on cached features.
        tokens = self.dropout(self.tokens) if isinstance(self.tokens, nn.Parameter) else self.tokens
        return TowerHooks(prompts={i: tokens[i] for i in range(tokens.shape[0])})


def zero_prompt_hooks(depth: int, n: int, width: int, device) -> TowerHooks:
    """n zero tokens at every one of the image tower's `depth` blocks: the fixed visual prompts."""
    zeros = torch.zeros(depth, n, width, device=device)
    return TowerHooks(prompts={i: zeros[i] for i in range(depth)})


@TRAINER_REGISTRY.register()
class BiomedDPT(PromptTrainer):
    """The clinical prompt's context trained on cached features of the zero-prompted image tower; with learned
    visual prompts, both trained on pixels through the prompted tower."""

    cfg_key = "BIOMEDDPT"

    @classmethod
    def frozen_image_path(cls, cfg) -> bool:
        return not cfg.TRAINER.BIOMEDDPT.VISUAL_LEARNED  # fixed zero prompts: nothing in the image path trains

    @classmethod
    def feature_variant_key(cls, cfg) -> dict:
        return {"zero_visual_prompts": int(cfg.TRAINER.BIOMEDDPT.VISUAL_TOKENS), "layers": "every image block"}

    @classmethod
    def feature_variant(cls, cfg, backbone) -> FeatureVariant:
        """Features of the tower with the zero prompts inserted: they take part in attention, so these are
        not the plain tower's features and are cached under their own key."""
        image = require(backbone, "BiomedDPT", {"image": "deep prompts (zero vectors at every block)"})["image"]
        hooks = zero_prompt_hooks(image.depth, int(cfg.TRAINER.BIOMEDDPT.VISUAL_TOKENS), image.width, backbone.device)
        return FeatureVariant("dpt", cls.feature_variant_key(cfg), lambda x: backbone.encode_image_hooked(x, hooks))

    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER.BIOMEDDPT
        if "{}" not in mcfg.TEMPLATE:
            raise UserError(f"TRAINER.BIOMEDDPT.TEMPLATE must contain '{{}}' where the class name goes; "
                            f"got '{mcfg.TEMPLATE}'.")
        if not isinstance(mcfg.VISUAL_TOKENS, int) or mcfg.VISUAL_TOKENS < 1:
            raise UserError(f"TRAINER.BIOMEDDPT.VISUAL_TOKENS must be a whole number of at least 1; "
                            f"got {mcfg.VISUAL_TOKENS}.")

    def build_model(self) -> None:
        mcfg = self.method_cfg
        image = require(self.backbone, "BiomedDPT", {"image": "deep prompts (zero vectors at every block)"})["image"]
        self.prompt_learner = ClinicalPromptLearner(
            self.backbone, self.classnames, mcfg.TEMPLATE, n_ctx=mcfg.N_CTX, ctx_init=mcfg.CTX_INIT).to(self.device)
        self.register_model("prompt_learner", self.prompt_learner, *self.build_optim_sched(self.prompt_learner))
        self.visual = VisualPrompts(image.depth, mcfg.VISUAL_TOKENS, image.width, mcfg.VISUAL_LEARNED,
                                    mcfg.VISUAL_DROPOUT).to(self.device)
        if mcfg.VISUAL_LEARNED:
            self.register_model("visual_prompts", self.visual, *self.build_optim_sched(self.visual))
        ensemble = load_ensemble(self.cfg.DATASET.NAME, self.classnames, mcfg.N_PROMPTS,
                                 n_prompts_key="TRAINER.BIOMEDDPT.N_PROMPTS")
        bank = encode_prompt_bank(self.backbone, ensemble, self.feature_cache.dir)
        self.ensemble_mean = F.normalize(bank.mean(dim=1), dim=-1)  # (C, D): the LLM prompts' mean direction

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        super().set_model_mode(mode, names)
        self.visual.train(mode == "train")
        self.backbone.text_train(mode == "train")  # the authors' whole model trains in train mode: BERT dropout on

    def image_features(self, batch: dict) -> torch.Tensor:
        """Cached features of the zero-prompted tower, or the prompted tower on pixels; without learned
        prompts nothing in it trains, so no graph is kept."""
        if "feat" in batch:
            return batch["feat"].to(self.device)
        images = batch["img"].to(self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.method_cfg.VISUAL_LEARNED):
            return self.backbone.encode_image_hooked(images, self.visual.hooks())

    def forward_backward(self, batch: dict) -> dict:
        mcfg = self.method_cfg
        features, label = self.parse_batch_train(batch)
        logits, text = self.student_logits(features)
        scale = self.backbone.logit_scale.detach()
        zero_shot = scale * F.normalize(features, dim=-1) @ self.ensemble_mean.t()
        loss_ce = F.cross_entropy(logits, label)
        loss_l1 = mcfg.L1_LAMBDA * semantic_l1_loss(text, self.ensemble_mean)
        loss_kl = mcfg.KL_LAMBDA * kdsp_loss(logits, zero_shot)
        summary = self.finish_step(loss_ce + loss_l1 + loss_kl, logits, label)
        summary.update(loss_ce=loss_ce.item(), loss_l1=loss_l1.item(), loss_kl=loss_kl.item())
        return summary
