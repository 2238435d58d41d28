"""Reading learned context vectors as words (tools/interpret_prompt.py): the nearest vocabulary tokens
to each vector, by Euclidean distance as the reference's interpret_prompt measures it.

torch and the model families are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import re

from engine.run_weights import checkpoint_epochs, evaluated_model

TRAINER_DIR = re.compile(r"^[A-Za-z0-9]+_([A-Za-z0-9]+?)(-random)?$")


class InterpretError(Exception):
    pass


def find_checkpoint(path: str, epoch: int | None = None) -> str:
    """`path` itself when it is a file; else the run's prompt_learner checkpoint of `epoch` (default: the
    one an eval-only run tested, else the newest)."""
    if os.path.isfile(path):
        return path
    path, tested = evaluated_model(path, _record(path))
    epoch = epoch if epoch is not None else tested
    folder = os.path.join(path, "prompt_learner")
    found = checkpoint_epochs(folder)
    if epoch is not None:
        found = [e for e in found if e == epoch]
    if not found:
        want = f"model.pth.tar-{epoch}" if epoch is not None else "model.pth.tar-<epoch>"
        raise InterpretError(f"no {want} in {folder}: give a prompt-learning run's seed folder or a checkpoint file")
    return os.path.join(folder, f"model.pth.tar-{found[-1]}")


def _record(run_dir: str) -> dict:
    path = os.path.join(run_dir, "results.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}
    return {}


def backbone_name(path: str, given: str | None) -> str:
    if given:
        return given
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.dirname(path))
    name = (_record(folder).get("config") or {}).get("MODEL.BACKBONE.NAME")
    if name:
        return name
    for part in reversed(os.path.normpath(os.path.abspath(folder)).split(os.sep)):
        match = TRAINER_DIR.match(part)
        if match and "_" in part:
            return match.group(1)
    raise InterpretError(f"cannot tell which backbone {path} was trained with: pass --model (e.g. BiomedCLIP)")


def load_ctx(checkpoint: str):
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    ctx = next((v for k, v in state.items() if k == "ctx" or k.endswith("prompt_learner.ctx")), None)
    if ctx is None:
        raise InterpretError(f"{checkpoint} holds no learned context ('ctx' or 'prompt_learner.ctx'); "
                             f"keys: {list(state)[:6]}")
    return ctx.float().reshape(-1, ctx.shape[-1])  # class-specific contexts flatten to one row per vector


def vocabulary(backbone) -> list[str]:
    """Token strings indexed by token id, for the tokenizers the backbones use."""
    tokenizer = getattr(backbone, "tokenizer", None)
    hf = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a Hugging Face tokenizer
    if hf is None and getattr(backbone, "tokenizer_dir", None):
        from backbones.pmcclip import bert_tokenizer

        hf = bert_tokenizer(backbone.tokenizer_dir)
    if hf is not None:
        vocab = hf.get_vocab()
        names = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            names[index] = token
        return names
    from backbones.clip import clip_tokenizer

    simple = clip_tokenizer(backbone.context_length)  # byte-level BPE: decode each id to readable text
    names = [""] * (max(simple.encoder.values()) + 1)
    for token, index in simple.encoder.items():
        names[index] = simple.decode([index]).strip() or token
    return names


def nearest_tokens(ctx, backbone, topk: int = 3) -> list[list[tuple[str, float]]]:
    """For each context vector, the `topk` nearest (token, Euclidean distance), nearest first."""
    import torch

    names = vocabulary(backbone)
    ids = torch.arange(len(names), device=backbone.device)
    with torch.no_grad():
        table = torch.cat([backbone.embed_tokens(chunk[None])[0] for chunk in ids.split(4096)]).float().cpu()
    if table.shape[1] != ctx.shape[1]:
        raise InterpretError(f"context vectors are {ctx.shape[1]}-d but this backbone's tokens are "
                             f"{table.shape[1]}-d: pass the --model the run was trained with")
    dist = torch.cdist(ctx, table)
    values, index = dist.topk(min(topk, len(names)), dim=1, largest=False)
    return [[(names[int(i)], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, index)]
