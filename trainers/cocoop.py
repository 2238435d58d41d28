"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a small meta-network.

For an image with normalised feature v, meta_net(v) (Linear D -> D/16, ReLU, Linear -> token width)
is added to all context vectors, the prompts of every class are rebuilt from the shifted context
and encoded, and the image is scored against its own text features. The per-image text pass is
the cost: every (image, class) prompt of a batch goes through the text tower in one call, trimmed
to the longest real prompt, in chunks that bound memory at test time.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import prompt_cfg, register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.coop import PromptTrainer
from trainers.prompt_learner import PromptLearner

# Upper bound on (image, class) prompts encoded in one text-tower call at test time.
MAX_PROMPTS_PER_PASS = 512


register_method_cfg("COCOOP")(prompt_cfg)


class ConditionalPromptLearner(PromptLearner):
    """Context vectors plus the meta-network; state dict keys match the reference's prompt learner."""

    def __init__(self, backbone, classnames: list[str], n_ctx: int = 4, ctx_init: str = ""):
        super().__init__(backbone, classnames, n_ctx=n_ctx, ctx_init=ctx_init)
        vis_dim, hidden = backbone.embed_dim, max(backbone.embed_dim // 16, 1)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, backbone.token_width)),
        ])).to(backbone.device)

    def shifted_ctx(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, n_ctx, width): the shared context plus each image's bias (the same for every token)."""
        return self.ctx.unsqueeze(0) + self.meta_net(image_features).unsqueeze(1)

    def conditional_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, n_cls, D) normalised text features of every class, built from each image's context."""
        return F.normalize(self.text_features(self.shifted_ctx(image_features)), dim=-1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        super().load_state_dict(state_dict)  # the context, from either checkpoint layout
        meta = {k.split("meta_net.", 1)[1]: v for k, v in state_dict.items() if "meta_net." in k}
        if not meta:
            raise UserError(f"Checkpoint has no meta-network ('meta_net.*'); keys: {list(state_dict)[:8]}. "
                            "Was it trained with CoOp rather than CoCoOp?")
        try:
            self.meta_net.load_state_dict(meta)
        except RuntimeError as err:
            raise UserError(f"Checkpoint meta-network does not fit this backbone: {err}") from err
        return nn.modules.module._IncompatibleKeys([], [])


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    cfg_key = "COCOOP"
    prompt_learner_class = ConditionalPromptLearner

    def student_logits(self, image_features):
        image = F.normalize(image_features, dim=-1)
        text = self.prompt_learner.conditional_text_features(image)
        return self.backbone.logit_scale * torch.einsum("bd,bcd->bc", image, text), text

    def model_inference(self, features):
        step = max(MAX_PROMPTS_PER_PASS // self.num_classes, 1)
        return torch.cat([self.student_logits(features[i : i + step])[0] for i in range(0, len(features), step)])

    def forward_backward(self, batch: dict) -> dict:
        features, label = self.parse_batch_train(batch)
        logits, _ = self.student_logits(features)
        return self.finish_step(F.cross_entropy(logits, label), logits, label)
