"""Learnable context vectors spliced into "<ctx> <classname>." prompts (CoOp's construction).

Prompts are tokenized once and trimmed to the longest real prompt; the token embeddings are split
into a prefix (the backbone's `start_tokens`: [CLS]/SOT, or nothing for SigLIP), the n_ctx context
slots and a suffix (class tokens, '.', end, padding).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError


class PromptLearner(nn.Module):
    def __init__(self, backbone, classnames: list[str], n_ctx: int = 4, ctx_init: str = ""):
        super().__init__()
        names = [c.replace("_", " ") for c in classnames]
        start = backbone.start_tokens
        with torch.no_grad():
            if ctx_init:
                ctx_init = ctx_init.replace("_", " ")
                init_ids = backbone.tokenize([ctx_init])
                n_ctx = int(backbone.real_lengths(init_ids)[0]) - start - backbone.end_tokens  # the words only
                if n_ctx < 1:
                    raise UserError(f"CTX_INIT '{ctx_init}' produced no tokens.")
                ctx = backbone.embed_tokens(init_ids.to(backbone.device))[0, start : start + n_ctx].clone()
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
        self.register_buffer("token_prefix", embedding[:, :start].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, start + n_ctx :].clone(), persistent=False)
        self.register_buffer("token_ids", ids, persistent=False)

    def forward(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt token embeddings: (n_cls, L, width), or (B, n_cls, L, width) for a per-image ctx (B, n_ctx, width)."""
        ctx = self.ctx if ctx is None else ctx
        n_cls = self.token_prefix.shape[0]
        lead = ctx.shape[:-2]  # () or (B,)
        prefix = self.token_prefix.expand(*lead, -1, -1, -1)
        suffix = self.token_suffix.expand(*lead, -1, -1, -1)
        ctx = ctx.unsqueeze(-3).expand(*lead, n_cls, -1, -1).to(prefix.dtype)
        return torch.cat([prefix, ctx, suffix], dim=-2)

    def text_features(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised text features: (n_cls, embed_dim), or (B, n_cls, embed_dim) for a per-image ctx."""
        embeds = self(ctx)
        if embeds.dim() == 3:
            return self.backbone[0].encode_text_embeddings(embeds, self.token_ids)
        batch, n_cls = embeds.shape[:2]
        # One text pass over every (image, class) prompt, trimmed to the longest real prompt.
        flat = self.backbone[0].encode_text_embeddings(embeds.flatten(0, 1), self.token_ids.repeat(batch, 1))
        return flat.view(batch, n_cls, -1)

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
