"""BiomedDPT (Peng et al., arXiv 2505.05189, IEEE JBHI 2026): dual text prompt plus zero-vector visual prompts.

Text: a template-driven clinical prompt per class ("a MR photo of a {} in the brain.") whose leading
words ("a MR photo of a") are learned context vectors initialised from those words, pulled toward the
LLM-written prompts of clip_prompts/ (the second, domain-adapted prompt) by two terms: an L1
constraint between the learned and the LLM-ensemble text features and a KL divergence from the
LLM-ensemble zero-shot logits to the learned logits.
Image: VISUAL_TOKENS zero vectors inserted after the class token of every image block (replaced at
each block, dropped before pooling). Zero tokens carry no content, but they are keys and values of
every attention: their (LayerNorm bias) keys take a share of each softmax, so the weights of the other
tokens are re-weighted. They stay zero by default, as in the code the authors released; VISUAL_LEARNED
True trains them from zero instead.

Loss = CE + L1_LAMBDA x mean|t - p| + KL_LAMBDA x KL(p_zs || p) / (B x C), with t the learned text
features, p the normalised mean of the LLM prompts' features, p_zs the softmax of scale x cos(image,
p) and p the learned softmax. docs/two_tower.md lists every choice the paper leaves open.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from trainers.prompt_learner import PromptLearner


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
