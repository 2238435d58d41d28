"""Cost of one BiomedCoOp training step at full BiomedCLIP size (random weights), reference-style vs ours.

    python benchmarks/bench_biomedcoop_step.py [--repeats 3] [--batch 4] [--classes 4]

Reference style: the image tower runs twice per batch (student and teacher paths) and the text
tower runs on prompts padded to 256 tokens. Ours: image features come from the cache and prompts
are trimmed to the longest real one. Both steps compute the same losses. Prints medians and the
ratios, measured in one run on the same machine (absolute times vary between machines).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timing import median_time  # noqa: E402

import backbones  # noqa: E402,F401
from engine.config import get_cfg_default  # noqa: E402
from engine.registry import BACKBONE_REGISTRY  # noqa: E402
from trainers.biomedcoop import kdsp_loss, sccm_loss  # noqa: E402
from trainers.prompt_bank import prompt_scores, select_prompts  # noqa: E402
from trainers.prompt_learner import PromptLearner  # noqa: E402

CLASSES = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain", "normal OCT scan",
           "lung squamous cell carcinoma", "diabetic macular edema", "dyed resection margins"]


def full_size_biomedclip():
    """BiomedCLIP's full architecture with random weights (no download), frozen, in eval mode."""
    torch.manual_seed(0)
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PRETRAINED = False
    return BACKBONE_REGISTRY.get("BiomedCLIP")(cfg).eval().requires_grad_(False)


def trimmed_and_padded(bb, classes: list[str], learner_class=PromptLearner):
    """Two prompt learners with the same learned state: ours (trimmed to the longest real prompt)
    and the reference's (padded to the model's context length, 256 tokens for BiomedCLIP)."""
    trimmed = learner_class(bb, classes, ctx_init="a photo of a")
    padded = learner_class(bb, classes, ctx_init="a photo of a")
    padded.load_state_dict(trimmed.state_dict())
    full_ids = bb.tokenize([f"a photo of a {c}." for c in classes])
    emb = bb.embed_tokens(full_ids)
    padded.token_ids, padded.token_prefix, padded.token_suffix = full_ids, emb[:, :1], emb[:, 5:]
    return trimmed, padded


def step_functions(bb, classes: list[str], batch: int = 4) -> dict:
    """Callables for one BiomedCoOp step, reference-style and ours, plus the text tower alone.

    Keys: "reference", "ours", "text_padded", "text_trimmed" (callables), "tokens_padded",
    "tokens_trimmed" (ints). Both steps compute the same losses on the same batch.
    """
    trimmed, padded = trimmed_and_padded(bb, classes)
    bank = F.normalize(torch.randn(len(classes), 50, bb.embed_dim), dim=-1)
    mean = F.normalize(bank.mean(1), dim=-1)
    images = torch.randn(batch, 3, 224, 224)
    labels = torch.arange(batch) % len(classes)
    with torch.no_grad():
        cached = bb.encode_image(images)

    def encode_fn():
        with torch.no_grad():
            return bb.encode_image(images)

    def cache_fn():
        return cached

    def step(learner, features_fn):
        bb.text_train(True)
        feats = F.normalize(features_fn(), dim=-1)
        text = F.normalize(learner.text_features(), dim=-1)
        scale = bb.logit_scale.detach()
        logits = scale * feats @ text.t()
        with torch.no_grad():
            teacher_feats = F.normalize(features_fn(), dim=-1) if features_fn is not cache_fn else feats
            keep = select_prompts(prompt_scores(teacher_feats, bank, scale), 1.5)
            teacher = scale * teacher_feats @ F.normalize(bank[:, keep].mean(1), dim=-1).t()
        loss = F.cross_entropy(logits, labels) + sccm_loss(text, mean) + kdsp_loss(logits, teacher)
        learner.ctx.grad = None
        loss.backward()

    return {
        "reference": lambda: step(padded, encode_fn),
        "ours": lambda: step(trimmed, cache_fn),
        "text_padded": lambda: padded.text_features().sum().backward(),
        "text_trimmed": lambda: trimmed.text_features().sum().backward(),
        "tokens_padded": padded.token_ids.shape[1],
        "tokens_trimmed": trimmed.token_ids.shape[1],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--classes", type=int, default=4)
    args = p.parse_args(argv)
    bb = full_size_biomedclip()
    classes = CLASSES[: args.classes]
    fns = step_functions(bb, classes, args.batch)
    ref = median_time(fns["reference"], args.repeats)
    ours = median_time(fns["ours"], args.repeats)
    text_ref = median_time(fns["text_padded"], args.repeats)
    text_ours = median_time(fns["text_trimmed"], args.repeats)
    print(f"threads={torch.get_num_threads()} batch={args.batch} classes={len(classes)} "
          f"tokens: padded={fns['tokens_padded']} trimmed={fns['tokens_trimmed']}")
    print(f"text fwd+bwd   padded {text_ref:.3f}s  trimmed {text_ours:.3f}s  ratio {text_ref / text_ours:.1f}x")
    print(f"training step  reference-style {ref:.3f}s  ours {ours:.3f}s  ratio {ref / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
