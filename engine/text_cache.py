"""Frozen text-tower features of plain prompts, cached on disk beside the image features.

BiomedCoOp encodes a bank of 50 sentences per class at every start, and KgCoOp, ProGrad, zero-shot
and the feature baselines encode the hand-crafted prompts. With the tower frozen, these features
depend only on the weights and the exact strings, so they are computed once per (backbone weights,
prompt list) and read back by every later seed, shot count and method. The folder is the image
feature cache's backbone folder (its name already identifies the weights); the file name is a
hash of the prompt strings and of their token ids, so an edited prompt file, or the same weights
behind another tokenizer (a vocabulary changed in a folder), gets new features.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from engine.utils import eval_mode, get_logger, torch_save_atomic


def prompts_digest(prompts: list[str], token_ids: torch.Tensor | None = None) -> str:
    digest = hashlib.sha1(json.dumps(prompts, ensure_ascii=False).encode("utf-8"))
    if token_ids is not None:
        digest.update(token_ids.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_prompts_cached(backbone, prompts: list[str], cache_dir: str | None = None) -> torch.Tensor:
    """(N, D) unnormalised eval-mode features of `prompts`; read from / written to `cache_dir` when given."""
    path = None
    if cache_dir:  # tokenizing is milliseconds; it keys the file to what the text tower would read
        path = os.path.join(cache_dir, f"text-{prompts_digest(prompts, backbone.tokenize(prompts))}.pt")
    if path and os.path.isfile(path):
        try:
            saved = torch.load(path, map_location="cpu")
        except (OSError, RuntimeError, EOFError) as err:
            get_logger().info(f"Ignoring an unreadable text-feature cache {path} ({err}); encoding again")
        else:
            if saved.get("prompts") == prompts:  # a hash collision or a stale file never passes
                return saved["features"].to(backbone.device)
    with eval_mode(backbone):
        feats = backbone.encode_prompts(prompts).float()
    if path:
        try:
            torch_save_atomic({"prompts": prompts, "features": feats.cpu()}, path)
        except OSError as err:  # a read-only cache folder only costs the re-encoding next time
            get_logger().info(f"Could not cache text features in {cache_dir} ({err.strerror or err})")
    return feats
