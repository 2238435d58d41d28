"""CLIP-LoRA (Zanella and Ben Ayed, CVPRW 2024): low-rank updates of the attention projections.

As published: rank 2, alpha 1, scaling alpha / sqrt(rank), dropout 0.25 on the input of the
low-rank branch only, A Kaiming-uniform and B zero (so the model starts exactly as the frozen one),
q, k and v of every block of both towers, AdamW (lr 2e-4, weight decay 0.01), 500 x shots
iterations at batch 32 with a cosine schedule to 1e-6 stepped every iteration, cross-entropy on
scale * cos(image, text) with the class prompts re-encoded every step.

Where each update goes:
- HF BERT's query/key/value (and the attention output when "o" is asked for) and timm's attention
  output `proj` are nn.Linear modules called as modules: peft's LoRA layers wrap them.
- timm's fused `qkv` Linear: peft would put one rank-r update on the whole 3d-wide output, not one
  per projection, so `FusedLinearLoRA` adds a separate update to each q/k/v slice.
- nn.MultiheadAttention (OpenAI CLIP, PubMedCLIP) and a ResNet's attention pool (PMC-CLIP) read
  their weights inside a functional kernel, so wrapping their Linears would be silently ignored
  (peft's own MultiheadAttention support merges one update into the packed weight, which leaves no
  room for input dropout or separate q/k/v updates). `LoRAMultiheadAttention` and
  `LoRAAttentionPool` run the same attention steps with the updates added.

The update is never merged into the weights (the reference merges it in eval mode): the frozen
weights stay bit-identical and evaluation differs from a merged model only by float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import register_method_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.tower_tuning import TowerTuningTrainer, TowerWeight, select_weights, tower_cfg, trainable_parameters


@register_method_cfg("CLIPLORA")
def clip_lora_cfg():
    node = tower_cfg(params=("q", "k", "v"), iters_per_shot=500, cosine_period="iterations")
    node.RANK = 2
    node.ALPHA = 1.0
    node.DROPOUT = 0.25
    return node


class LowRankUpdate(nn.Module):
    """scaling * B A dropout(x) for one projection, with A (rank x in) and B (out x rank) learned."""

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, dropout: float, device=None):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, d_in, device=device))
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / math.sqrt(rank)  # CLIP-LoRA's code scales by alpha / sqrt(r), not alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling


class FusedLinearLoRA(nn.Module):
    """A fused q/k/v Linear whose q, k and v output slices each get their own low-rank update."""

    def __init__(self, base: nn.Linear, updates: dict[str, LowRankUpdate]):
        super().__init__()
        self.base = base
        self.updates = nn.ModuleDict({f"lora_{r}": u for r, u in updates.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        parts = list(out.chunk(3, dim=-1))
        for i, role in enumerate("qkv"):
            if f"lora_{role}" in self.updates:
                parts[i] = parts[i] + self.updates[f"lora_{role}"](x).to(out.dtype)
        return torch.cat(parts, dim=-1)


def _heads(t: torch.Tensor, batch: int, length: int, heads: int) -> torch.Tensor:
    """(batch, length, width) -> (batch, heads, length, width / heads)."""
    return t.reshape(batch, length, heads, -1).transpose(1, 2)


class LoRAMultiheadAttention(nn.Module):
    """Self-attention of an nn.MultiheadAttention with low-rank updates on q, k, v and/or out.

    Same steps as torch's module: packed in-projection, scaled dot-product attention, output
    projection; the frozen module keeps its own parameters.
    """

    def __init__(self, base: nn.MultiheadAttention, updates: dict[str, LowRankUpdate]):
        super().__init__()
        self.base = base
        self.updates = nn.ModuleDict({f"lora_{r}": u for r, u in updates.items()})

    def _add(self, role: str, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        update = self.updates[f"lora_{role}"] if f"lora_{role}" in self.updates else None
        return value if update is None else value + update(x).to(value.dtype)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **unused):
        base = self.base
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise NotImplementedError("LoRAMultiheadAttention supports self-attention only")
        x = query if base.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        q, k, v = F.linear(x, base.in_proj_weight, base.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (self._add(r, t, x) for r, t in zip("qkv", (q, k, v)))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:  # nn.MultiheadAttention: True = may not attend
                attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            _heads(q, batch, length, base.num_heads), _heads(k, batch, length, base.num_heads),
            _heads(v, batch, length, base.num_heads), attn_mask=attn_mask,
            dropout_p=base.dropout if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(batch, length, width)
        y = self._add("o", F.linear(out, base.out_proj.weight, base.out_proj.bias), out)
        return (y if base.batch_first else y.transpose(0, 1)), None


class LoRAAttentionPool(nn.Module):
    """open_clip ModifiedResNet's attention pool with low-rank updates on q, k, v and/or c_proj."""

    def __init__(self, base: nn.Module, updates: dict[str, LowRankUpdate]):
        super().__init__()
        self.base = base
        self.updates = nn.ModuleDict({f"lora_{r}": u for r, u in updates.items()})

    def _proj(self, role: str, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, linear.weight, linear.bias)
        update = self.updates[f"lora_{role}"] if f"lora_{role}" in self.updates else None
        return y if update is None else y + update(x).to(y.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        x = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + base.positional_embedding[None].to(x.dtype)
        batch, length, _ = x.shape
        q, k, v = (self._proj(r, lin, x) for r, lin in zip("qkv", (base.q_proj, base.k_proj, base.v_proj)))
        out = F.scaled_dot_product_attention(*(_heads(t, batch, length, base.num_heads) for t in (q, k, v)))
        pooled = out[:, :, 0].reshape(batch, -1)  # only the mean token's output is the image feature
        return self._proj("o", base.c_proj, pooled)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def attach_lora(backbone: nn.Module, weights: list[TowerWeight], rank: int, alpha: float, dropout: float) -> None:
    """Put a low-rank update on each chosen projection (see the module docstring for which wrapper)."""
    plain, grouped = [], {}
    for w in weights:
        parent_name = w.name.rpartition(".")[0]
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        if isinstance(w.owner, nn.MultiheadAttention) or (w.role == "o" and isinstance(parent, nn.MultiheadAttention)):
            key = w.name if isinstance(w.owner, nn.MultiheadAttention) else parent_name
            grouped.setdefault(("mha", key), []).append(w)
        elif w.blocks == 3:
            grouped.setdefault(("fused", w.name), []).append(w)
        elif w.layer is None and w.tower == "image" and hasattr(parent, "positional_embedding"):
            grouped.setdefault(("pool", parent_name), []).append(w)
        else:
            plain.append(w.name)
    if plain:
        from peft import LoraConfig, inject_adapter_in_model  # imported here: it takes seconds

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, use_rslora=True, bias="none",
                            init_lora_weights=True, target_modules=plain)
        inject_adapter_in_model(config, backbone)
    device = next(backbone.parameters()).device
    for (kind, name), group in grouped.items():
        base = backbone.get_submodule(name)
        updates = {}
        for w in group:
            d_out, d_in = w.shape
            updates[w.role] = LowRankUpdate(d_in, d_out, rank, alpha, dropout, device)
        wrapper = {"mha": LoRAMultiheadAttention, "fused": FusedLinearLoRA, "pool": LoRAAttentionPool}[kind]
        _set_submodule(backbone, name, wrapper(base, updates))


@TRAINER_REGISTRY.register()
class CLIPLoRA(TowerTuningTrainer):
    cfg_key = "CLIPLORA"
    model_name = "lora"

    def adapt(self, backbone) -> dict[str, nn.Parameter]:
        mcfg = self.method_cfg
        attach_lora(backbone, select_weights(backbone, mcfg, self.cfg_key), mcfg.RANK, mcfg.ALPHA, mcfg.DROPOUT)
        backbone.requires_grad_(False)
        for name, param in backbone.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
        return trainable_parameters(backbone)
