"""The tower hook contract: deep prompts and activation steering inside a tower's transformer blocks.

What two-tower methods (MaPLe, EviSteer, Biomed-DPT) ask of a tower, for one forward pass:

(a) deep prompts, `TowerHooks.prompts = {layer: tokens}` with tokens (n, width) or (batch, n, width):
    - image tower: the layer-0 tokens are appended after the patch tokens, after the positional
      embedding and before the tower's pre-norm where it has one (CLIP's ln_pre), as MaPLe does;
      a later listed layer replaces them, at the input of that block, with its own tokens; a layer
      not listed lets through what the previous block made of them. After the last block they are
      removed, so pooling (class token, mean, attention pool) sees the image tokens only.
    - text tower: the layer-0 tokens are spliced in right after the start tokens as token
      embeddings, like learned context (they get the positional embedding of their slots), and the
      token ids get as many filler ids there, so the attention mask (BERT-style towers), the causal
      mask and the end-token index (CLIP text transformers) cover them; later listed layers replace
      those slots. With `context_slots=True` the slots already exist (a prompt learner spliced its
      context into the embeddings), so layer 0 is not listed and layers from 1 on replace them
      (MaPLe's text side). Text prompts are part of the prompt and are never removed.
(b) activation steering, `TowerHooks.steer = {layer: module}`: after block `layer`, the stream
    becomes tokens + module(tokens), tokens batch-first (batch, length, width) whatever the
    family's own layout. Prompt tokens are in the stream the module sees.

With no prompts and zero steering updates a tower gives exactly the frozen model's outputs (the
model's own forward runs; the hooks only add). Families implement `Backbone.tower_layers(tower)`;
a tower without transformer blocks (PMC-CLIP's ResNet image tower) raises `TowerUnsupported`, and
`require` turns that into one line naming the method and what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.errors import UserError

TOWERS = ("image", "text")
# Families that can take deep prompts and steering in both towers (named in refusals).
CAPABLE = "BiomedCLIP, CLIP, PubMedCLIP, OpenCLIP with a ViT, HFCLIP or HFSigLIP"


class TowerUnsupported(Exception):
    """A tower that has no token stream to put prompts in or steer; the message says why."""


@dataclass
class TowerLayers:
    """Where a family's hooks go: its blocks in order, their token layout and width, and (image
    towers) the module whose input receives the layer-0 prompts (the pre-norm; None = block 0)."""

    blocks: list[nn.Module]
    batch_first: bool
    width: int
    entry: nn.Module | None = None

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass
class TowerHooks:
    """Deep prompts and steering modules for one tower (see the module docstring)."""

    prompts: Mapping[int, torch.Tensor] = field(default_factory=dict)
    steer: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    context_slots: bool = False  # text: the prompt slots already exist right after the start tokens

    def __bool__(self) -> bool:
        return bool(self.prompts) or bool(self.steer)

    def prompt_length(self) -> int:
        lengths = {int(p.shape[-2]) for p in self.prompts.values()}
        if len(lengths) > 1:
            raise ValueError(f"every layer's deep prompts must have the same number of tokens; got {sorted(lengths)}")
        return lengths.pop() if lengths else 0


def require(backbone, method: str, needs: Mapping[str, str]) -> dict[str, TowerLayers]:
    """The towers' layers, or one UserError line: `needs` maps a tower to what `method` needs in it,
    e.g. {"image": "deep prompts", "text": "deep prompts"}."""
    found = {}
    for tower, what in needs.items():
        try:
            found[tower] = backbone.tower_layers(tower)
        except TowerUnsupported as err:
            raise UserError(f"{method} needs {what} in the {tower} tower, but {backbone.name}'s {tower} tower {err}; "
                            f"use a backbone whose towers are transformers ({CAPABLE}).") from None
    return found


def pooled_positions(backbone, method: str, ids: torch.Tensor) -> torch.Tensor:
    """`backbone.text_pool_positions(ids)`, or one UserError line naming `method` when the text tower
    pools over many tokens instead of one."""
    try:
        return backbone.text_pool_positions(ids)
    except TowerUnsupported as err:
        raise UserError(f"{method} reads the text tower's state at its pooled token, but {backbone.name}'s text "
                        f"tower {err}; use a backbone whose text tower pools one token (BiomedCLIP, CLIP, PubMedCLIP, "
                        "HFCLIP, HFSigLIP, or OpenCLIP with a class-token or end-token pooled text tower).") from None


def check_layers(hooks: TowerHooks, layers: TowerLayers, tower: str) -> None:
    """Programming errors in a method's hooks: layers out of range, prompts without a layer 0."""
    for kind, table in (("prompts", hooks.prompts), ("steer", hooks.steer)):
        bad = [i for i in table if not 0 <= i < layers.depth]
        if bad:
            raise ValueError(f"{tower} tower {kind} at layers {bad}: the tower has layers 0-{layers.depth - 1}")
    if hooks.prompts and hooks.context_slots and 0 in hooks.prompts:
        raise ValueError("context_slots=True: layer 0's prompts are the spliced context; list layers from 1 on")
    if hooks.prompts and not hooks.context_slots and 0 not in hooks.prompts:
        raise ValueError(f"{tower} tower deep prompts must start at layer 0 (inserted there, replaced later)")


def _batched(tokens: torch.Tensor, like: torch.Tensor, batch: int) -> torch.Tensor:
    """(n, w) or (batch, n, w) prompts as (batch, n, w) in the stream's dtype and device."""
    tokens = tokens.to(device=like.device, dtype=like.dtype)
    return tokens.expand(batch, -1, -1) if tokens.dim() == 2 else tokens


def splice(x: torch.Tensor, tokens: torch.Tensor, at: int, replace: int = 0) -> torch.Tensor:
    """x (batch, L, w) with `replace` tokens from position `at` on swapped for `tokens`."""
    return torch.cat([x[:, :at], _batched(tokens, x, x.shape[0]), x[:, at + replace :]], dim=1)


class _Stream:
    """Reads and writes a block's hidden states in its own layout as (batch, L, w)."""

    def __init__(self, batch_first: bool):
        self.batch_first = batch_first

    def get(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.batch_first else x.transpose(0, 1)

    def put(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.batch_first else x.transpose(0, 1)


def _map_input(args: tuple, kwargs: dict, fn) -> tuple[tuple, dict]:
    """Apply fn to a module call's hidden states (first positional argument, else the usual keyword)."""
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    for key in ("hidden_states", "x", "q_x", "input"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return args, {**kwargs, key: fn(kwargs[key])}
    raise TypeError("tower hook: the block was called without hidden states")


def _map_output(output, fn):
    """Apply fn to a block's hidden states output (a tensor, or the first item of a tuple/list)."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return type(output)([fn(output[0]), *output[1:]])
    raise TypeError(f"tower hook: cannot read the hidden states of a block output of type {type(output).__name__}")


@contextmanager
def applied(layers: TowerLayers, hooks: TowerHooks, slot: int | None):
    """Register `hooks` on `layers` for the calls made inside the block, then remove them.

    `slot`: where the prompt tokens sit, an index (text: after the start tokens) or None for the end
    of the sequence (image: appended at layer 0 through the entry module, removed after the last block).
    """
    stream = _Stream(layers.batch_first)
    n = hooks.prompt_length()
    handles = []

    def place(tokens: torch.Tensor, insert: bool):
        def fn(x: torch.Tensor) -> torch.Tensor:
            seq = stream.get(x)
            at = seq.shape[1] - (0 if insert else n) if slot is None else slot
            return stream.put(splice(seq, tokens, at, replace=0 if insert else n))
        return fn

    def pre_hook(fn):
        return lambda module, args, kwargs: _map_input(args, kwargs, fn)

    try:
        last = layers.depth - 1
        for i, tokens in hooks.prompts.items():
            insert = slot is None and i == 0
            target = (layers.entry or layers.blocks[0]) if insert else layers.blocks[i]
            handles.append(target.register_forward_pre_hook(pre_hook(place(tokens, insert)), with_kwargs=True,
                                                            prepend=True))
        for i in sorted(set(hooks.steer) | ({last} if slot is None and n else set())):
            module = hooks.steer.get(i)
            drop = slot is None and n > 0 and i == last

            def after(x, module=module, drop=drop):
                seq = stream.get(x)
                if module is not None:
                    seq = seq + module(seq).to(seq.dtype)
                if drop:
                    seq = seq[:, : seq.shape[1] - n]
                return stream.put(seq)

            handles.append(layers.blocks[i].register_forward_hook(
                lambda m, args, out, after=after: _map_output(out, after), prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
