"""MaPLe (Khattak et al., CVPR 2023): coupled deep prompts in both towers.

As the authors' code does it (muzairkhattak/multimodal-prompt-learning, trainers/maple.py and its
MaPLe config), in this toolkit's terms:
- Text, layer 0: the prompt is "a photo of a {class}." and its first N_CTX word tokens ("a photo"
  for N_CTX 2) are the learned context, initialised from their token embeddings; the rest of the
  template stays fixed. More context than the template has words starts from N(0, 0.02) "X" slots.
- Text, layers 1..PROMPT_DEPTH-1: the context slots are replaced at each block's input by that
  layer's own learned tokens (N(0, 0.02)).
- Image: the layer-0 image prompts are a linear projection (text width -> image width) of the
  layer-0 context, appended after the patch tokens; each deeper layer's image prompts are its own
  linear projection of that layer's text tokens. The projections of the deeper layers are copies
  of one initial layer, as the authors' `_get_clones` makes them.
- Cross-entropy on logit_scale * cos(image, text); every learned tensor sits in one module, so a
  checkpoint holds those and nothing of the towers. Both towers run in train mode while training
  (the authors put the whole model in train mode: BiomedCLIP's BERT dropout is on), frozen.

The towers are reached only through the tower hook contract (backbones/tower_hooks.py), so MaPLe
runs on every family whose two towers are transformers; PMC-CLIP's ResNet image tower refuses.
Training reads pixels (the engine's own pixel loader: no image-feature cache, the image tower is
prompted), with Dassl's epoch loop, warm-up and cosine schedule as PromptTrainer runs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbones.tower_hooks import TowerHooks, require
from engine.config import register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.coop import PromptTrainer


@register_method_cfg("MAPLE")
def maple_cfg():
    from yacs.config import CfgNode as CN

    node = CN()
    node.N_CTX = 2
    node.CTX_INIT = "a photo of a"
    node.PROMPT_DEPTH = 9  # layers 0..8 of both towers carry prompts
    node.PREC = "amp"  # engine precision: bf16/fp16 autocast on CUDA, fp32 on a CPU
    return node


class MultiModalPrompts(nn.Module):
    """All of MaPLe's learned tensors, and the prompts and hooks they make for both towers."""

    def __init__(self, backbone, classnames: list[str], n_ctx: int, ctx_init: str, depth: int, image_width: int):
        super().__init__()
        if n_ctx < 1:
            raise UserError(f"TRAINER.MAPLE.N_CTX must be at least 1; got {n_ctx}.")
        names = [c.replace("_", " ") for c in classnames]
        start = backbone.start_tokens
        ctx_init = ctx_init.replace("_", " ").strip()
        with torch.no_grad():
            words = 0
            if ctx_init:
                init_ids = backbone.tokenize([ctx_init])
                words = int(backbone.real_lengths(init_ids)[0]) - start - backbone.end_tokens
            if ctx_init and n_ctx <= words:
                # The first N_CTX tokens of the template are learned, its other words stay fixed.
                ctx = backbone.embed_tokens(init_ids.to(backbone.device))[0, start : start + n_ctx].clone()
                template = ctx_init
            else:
                ctx = torch.empty(n_ctx, backbone.token_width, device=backbone.device).normal_(std=0.02)
                template = " ".join(["X"] * n_ctx)
            ids = backbone.trim(backbone.tokenize([f"{template} {name}." for name in names])).to(backbone.device)
            embedding = backbone.embed_tokens(ids)
        self.backbone = [backbone]  # a list keeps the frozen backbone out of the state_dict
        self.n_ctx, self.depth, self.template = n_ctx, depth, template
        width = backbone.token_width
        self.ctx = nn.Parameter(ctx.float())
        self.proj = nn.Linear(width, image_width)  # layer-0 image prompts from the text context
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02)) for _ in range(depth - 1)])
        first = nn.Linear(width, image_width)
        self.deep_proj = nn.ModuleList([_copy_linear(first) for _ in range(depth - 1)])
        self.register_buffer("token_prefix", embedding[:, :start].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, start + n_ctx :].clone(), persistent=False)
        self.register_buffer("token_ids", ids, persistent=False)

    def text_features(self) -> torch.Tensor:
        """Unnormalised class text features through the prompted text tower."""
        n_cls = self.token_prefix.shape[0]
        ctx = self.ctx.unsqueeze(0).expand(n_cls, -1, -1).to(self.token_prefix.dtype)
        embeds = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        hooks = TowerHooks(prompts={i + 1: p for i, p in enumerate(self.deep_text)}, context_slots=True)
        return self.backbone[0].encode_text_hooked(embeds, self.token_ids, hooks)

    def image_hooks(self) -> TowerHooks:
        prompts = {0: self.proj(self.ctx)}
        for i, (tokens, proj) in enumerate(zip(self.deep_text, self.deep_proj, strict=True)):
            prompts[i + 1] = proj(tokens)
        return TowerHooks(prompts=prompts)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone[0].encode_image_hooked(images, self.image_hooks())


def _copy_linear(layer: nn.Linear) -> nn.Linear:
    copy = nn.Linear(layer.in_features, layer.out_features)
    copy.load_state_dict(layer.state_dict())
    return copy


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    cfg_key = "MAPLE"
    uses_frozen_image_features = False  # the image tower is prompted: it reads pixels

    def check_cfg(self, cfg) -> None:
        if cfg.TRAINER.MAPLE.PROMPT_DEPTH < 1:
            raise UserError(f"TRAINER.MAPLE.PROMPT_DEPTH must be at least 1 (1 = prompts at the input only); "
                            f"got {cfg.TRAINER.MAPLE.PROMPT_DEPTH}.")

    def build_model(self) -> None:
        mcfg = self.method_cfg
        layers = require(self.backbone, "MaPLe", {"image": "deep prompts", "text": "deep prompts"})
        depth = mcfg.PROMPT_DEPTH
        deepest = min(layers["image"].depth, layers["text"].depth)
        if depth > deepest:
            self.logger.info(f"note: TRAINER.MAPLE.PROMPT_DEPTH {depth} is more than {self.backbone.name}'s "
                             f"{deepest} layers; prompting all {deepest}")
            depth = deepest
        self.prompt_depth = depth
        self.prompt_learner = MultiModalPrompts(self.backbone, self.classnames, mcfg.N_CTX, mcfg.CTX_INIT, depth,
                                                layers["image"].width).to(self.device)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)
        count = sum(p.numel() for p in self.prompt_learner.parameters())
        self.logger.info(f"MaPLe: {count:,} learned values; prompt depth {depth}, {mcfg.N_CTX} context tokens, "
                         f"template '{self.prompt_learner.template} {{}}.'")
        self._text: torch.Tensor | None = None

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        super().set_model_mode(mode, names)
        self.backbone.train(mode == "train")

    def image_features(self, batch: dict) -> torch.Tensor:
        return self.prompt_learner.image_features(batch["img"].to(self.device))

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(image_features.float(), dim=-1)
        return self.backbone.logit_scale * image @ F.normalize(text_features.float(), dim=-1).t()

    def forward_backward(self, batch: dict) -> dict:
        image_features, label = self.parse_batch_train(batch)
        logits = self.logits(image_features, self.prompt_learner.text_features())
        return self.finish_step(F.cross_entropy(logits, label), logits, label)

    @torch.no_grad()
    def test(self, split: str | None = None) -> dict:
        """The prompted class features are computed once, then every test batch is scored."""
        self.set_model_mode("eval")
        self._text = self.prompt_learner.text_features()
        try:
            return super().test(split)
        finally:
            self._text = None

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features, self._text if self._text is not None else self.prompt_learner.text_features())

    def result_fields(self) -> dict:
        return {**super().result_fields(), "prompt_depth": self.prompt_depth}
