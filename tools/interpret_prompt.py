"""Read learned context vectors as words: the nearest vocabulary tokens to each one.

    python tools/interpret_prompt.py output/btmri/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1
    python tools/interpret_prompt.py released/few_shot/btmri/.../seed1 --model BiomedCLIP --topk 5

RUN_DIR is a seed folder (its newest prompt_learner/model.pth.tar-<E>, or --epoch) or a checkpoint file.
This toolkit's checkpoints ({"ctx": ...}) and the reference's full-model ones ("prompt_learner.ctx")
both work. Distances are Euclidean between a context vector and each token embedding of the
backbone's vocabulary, as the reference's interpret_prompt does; the last line reads the nearest
token of every slot as a phrase. Learned vectors usually sit far from every token, so read the
distances too: a phrase made of distant tokens is a loose reading, not what the model "says".
The backbone comes from --model, else from the run's results.json, else from the folder name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import _bootstrap  # noqa: F401

TRAINER_DIR = re.compile(r"^[A-Za-z0-9]+_([A-Za-z0-9]+?)(-random)?$")


class InterpretError(Exception):
    pass


def find_checkpoint(path: str, epoch: int | None = None) -> str:
    if os.path.isfile(path):
        return path
    from results_io import evaluated_model

    path, tested = evaluated_model(path, _record(path))  # an eval-only run: the checkpoint it tested
    epoch = epoch if epoch is not None else tested
    folder = os.path.join(path, "prompt_learner")
    found = sorted((int(f.rsplit("-", 1)[1]), f) for f in os.listdir(folder)
                   if re.fullmatch(r"model\.pth\.tar-\d+", f)) if os.path.isdir(folder) else []
    if epoch is not None:
        found = [item for item in found if item[0] == epoch]
    if not found:
        want = f"model.pth.tar-{epoch}" if epoch is not None else "model.pth.tar-<epoch>"
        raise InterpretError(f"no {want} in {folder}: give a prompt-learning run's seed folder or a checkpoint file")
    return os.path.join(folder, found[-1][1])


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run's seed folder, or a checkpoint file")
    p.add_argument("--topk", type=int, default=3, help="tokens to show per context vector (default 3)")
    p.add_argument("--model", help="backbone, e.g. BiomedCLIP (default: from the run)")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the newest)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import backbones  # noqa: F401  (registers the model families)
    from engine.config import get_cfg_default
    from engine.errors import UserError
    from engine.registry import BACKBONE_REGISTRY

    try:
        checkpoint = find_checkpoint(args.run_dir, args.epoch)
        name = backbone_name(args.run_dir, args.model).removesuffix("-random")
        ctx = load_ctx(checkpoint)
        cfg = get_cfg_default()
        cfg.MODEL.BACKBONE.NAME = name
        backbone = BACKBONE_REGISTRY.get(name)(cfg)
        rows = nearest_tokens(ctx, backbone, args.topk)
    except (InterpretError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{checkpoint} ({len(rows)} context vectors, {name} vocabulary)")
    for i, row in enumerate(rows, start=1):
        print(f"ctx {i}: " + ", ".join(f"{token} ({dist:.4f})" for token, dist in row))
    print("nearest reading: " + " ".join(row[0][0] for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
