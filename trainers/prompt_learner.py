"""Learnable context vectors spliced into "<ctx> <classname>." prompts (CoOp's construction).

Prompts are tokenized once and trimmed to the longest real prompt; the token embeddings are split
into a prefix ([CLS]/SOT), the n_ctx context slots and a suffix (class tokens, '.', end, padding).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError


class PromptLearner(nn.Module):
    def __init__(self, backbone, classnames: list[str], n_ctx: int = 4, ctx_init: str = ""):
        super().__init__()
        names = [c.replace("_", " ") for c in classnames]
        with torch.no_grad():
            if ctx_init:
                ctx_init = ctx_init.replace("_", " ")
                init_ids = backbone.tokenize([ctx_init])
                n_ctx = int(backbone.real_lengths(init_ids)[0]) - 2  # minus start and end tokens
                if n_ctx < 1:
                    raise UserError(f"CTX_INIT '{ctx_init}' produced no tokens.")
                ctx = backbone.embed_tokens(init_ids.to(backbone.device))[0, 1 : 1 + n_ctx].clone()
                prefix_text = ctx_init
            else:
                ctx = torch.empty(n_ctx, backbone.token_width, device=backbone.device).normal_(std=0.02)
                prefix_text = " ".join(["X"] * n_ctx)
            ids = backbone.trim(backbone.tokenize([f"{prefix_text} {name}." for name in names]))
            ids = ids.to(backbone.device)
            embedding = backbone.embed_tokens(ids)
        self.backbone = [backbone]  # a list keeps the frozen backbone out of this module's state_dict
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx.float())
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :].clone(), persistent=False)
        self.register_buffer("token_ids", ids, persistent=False)

    def forward(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt token embeddings (n_cls, L, width); `ctx` may carry a per-image batch dimension."""
        ctx = self.ctx if ctx is None else ctx
        n_cls = self.token_prefix.shape[0]
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)

    def text_features(self) -> torch.Tensor:
        """Unnormalised text features of the current prompts, (n_cls, embed_dim)."""
        return self.backbone[0].encode_text_embeddings(self(), self.token_ids)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Reference checkpoints store the whole model ("prompt_learner.ctx") or the prompt learner
        # with its token buffers; only the context is learned, so that is what is read.
        ctx = next((v for k, v in state_dict.items() if k == "ctx" or k.endswith(".ctx")), None)
        if ctx is None:
            raise UserError(f"Checkpoint has no context vectors ('ctx'); keys: {list(state_dict)[:8]}")
        if ctx.shape != self.ctx.shape:
            raise UserError(
                f"Checkpoint context has shape {tuple(ctx.shape)} but this model needs {tuple(self.ctx.shape)}; "
                "was it trained with another backbone or N_CTX?"
            )
        with torch.no_grad():
            self.ctx.copy_(ctx)
        return nn.modules.module._IncompatibleKeys([], [])
