"""Cost of one OGKD training step at full BiomedCLIP size (random weights), beside BiomedCoOp's.

    python benchmarks/bench_ogkd_step.py [--repeats 3] [--batch 4] [--classes 4] [--top-k 0.4]

Both steps read cached image features and trimmed prompts (this toolkit's way). OGKD also reads the
cached patch tokens (196 x 512 per image), scores the TOP_K_RATIO share of them against the learned
text and adds GAD and LGD; BiomedCoOp adds KDSP. A third line times OGKD the authors' way (image
tower per batch, patch tokens projected on the fly, prompts padded to 256 tokens). The last line
times the one-off extraction per image: global feature alone, and with patch tokens.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_biomedcoop_step import CLASSES, full_size_biomedclip, step_functions, trimmed_and_padded  # noqa: E402
from timing import median_time  # noqa: E402

from trainers.biomedcoop import sccm_loss  # noqa: E402
from trainers.ogkd import class_graph, gad_loss, lgd_loss, top_patches  # noqa: E402
from trainers.prompt_bank import prompt_scores, select_prompts  # noqa: E402


def ogkd_step_functions(bb, classes: list[str], batch: int = 4, top_k: float = 0.4) -> dict:
    """Callables "ours" (cached global features and patch tokens) and "reference" (image tower per batch,
    padded prompts) for one OGKD step with the same losses, and the two extraction passes."""
    trimmed, padded = trimmed_and_padded(bb, classes)
    bank = F.normalize(torch.randn(len(classes), 50, bb.embed_dim), dim=-1)
    mean = F.normalize(bank.mean(1), dim=-1)
    graph = class_graph(mean, 4.0)
    images = torch.randn(batch, 3, 224, 224)
    labels = torch.arange(batch) % len(classes)
    with torch.no_grad():
        cached = bb.encode_image_tokens(images)

    def tower():
        with torch.no_grad():
            return bb.encode_image_tokens(images)

    def step(learner, tokens_fn):
        bb.text_train(True)
        features, patches = tokens_fn()
        image, tokens = F.normalize(features, dim=-1), F.normalize(patches, dim=-1)
        text = F.normalize(learner.text_features(), dim=-1)
        scale = bb.logit_scale.detach()
        logits = scale * image @ text.t()
        with torch.no_grad():
            keep = select_prompts(prompt_scores(image, bank, scale), 1.5)
            teacher_text = F.normalize(bank[:, keep].mean(1), dim=-1)
            teacher = scale * image @ teacher_text.t()
            patch_teacher = scale * tokens @ teacher_text.t()
            index = top_patches(patch_teacher, labels, top_k)
        expand = index.unsqueeze(-1)
        kept = tokens.gather(1, expand.expand(-1, -1, tokens.shape[-1]))
        kept_teacher = patch_teacher.gather(1, expand.expand(-1, -1, patch_teacher.shape[-1]))
        loss = (F.cross_entropy(logits, labels) + 0.5 * sccm_loss(text, mean)
                + 1.75 * gad_loss(logits, teacher, graph, 0.5)
                + 0.05 * lgd_loss(scale * kept @ text.t(), kept_teacher, graph, labels, 0.5))
        learner.ctx.grad = None
        loss.backward()

    def extract_global():
        with torch.no_grad():
            bb.encode_image(images)

    return {"ours": lambda: step(trimmed, lambda: cached), "reference": lambda: step(padded, tower),
            "extract_global": extract_global, "extract_tokens": tower, "patches": cached[1].shape[1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--top-k", type=float, default=0.4, help="TOP_K_RATIO (0.4: the authors' BTMRI value)")
    args = p.parse_args(argv)
    bb = full_size_biomedclip()
    classes = CLASSES[: args.classes]
    biomedcoop = median_time(step_functions(bb, classes, args.batch)["ours"], args.repeats)
    fns = ogkd_step_functions(bb, classes, args.batch, args.top_k)
    ours = median_time(fns["ours"], args.repeats)
    reference = median_time(fns["reference"], args.repeats)
    per_image = args.batch
    extract_global = median_time(fns["extract_global"], args.repeats) / per_image
    extract_tokens = median_time(fns["extract_tokens"], args.repeats) / per_image
    print(f"threads={torch.get_num_threads()} batch={args.batch} classes={len(classes)} "
          f"patches={fns['patches']} top_k={args.top_k}")
    print(f"training step  BiomedCoOp (cached) {biomedcoop:.3f}s  OGKD (cached, patch tokens) {ours:.3f}s  "
          f"ratio {ours / biomedcoop:.2f}x")
    print(f"OGKD step      authors' way (image tower per batch, 256-token prompts) {reference:.3f}s  "
          f"ratio to ours {reference / ours:.1f}x")
    print(f"extraction     per image: global only {extract_global:.3f}s  with patch tokens {extract_tokens:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
