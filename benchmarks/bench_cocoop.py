"""Cost of CoCoOp at full BiomedCLIP size (random weights): one training step, one epoch, one test pass.

    python benchmarks/bench_cocoop.py [--repeats 3] [--classes 4] [--test-images 8]

CoCoOp rebuilds every class prompt for every image, so the text tower runs once per image.
Reference style: each image's features come from the image tower, and the text tower encodes that
image's C prompts padded to 256 tokens, image after image. Ours: features come from the cache and
all (image, class) prompts of a batch go through the text tower in one call, trimmed to the longest
real prompt. Both compute the same logits. An epoch of 16-shot BTMRI is 64 steps (batch 1, 4
classes); its test split has 1,717 images. The epoch and test figures are projections from the
measured step and the measured pass over --test-images images, and are printed as such. All
numbers come from one run on one machine; the ratios are what carries over.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_biomedcoop_step import CLASSES, full_size_biomedclip, trimmed_and_padded  # noqa: E402
from timing import median_time  # noqa: E402

from trainers.cocoop import ConditionalPromptLearner  # noqa: E402

STEPS_PER_EPOCH = 64  # 16 shots x 4 classes at batch 1
TEST_IMAGES = 1717  # BTMRI's test split


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--test-images", type=int, default=8, help="images in the measured test pass (projected to 1,717)")
    args = p.parse_args(argv)
    bb = full_size_biomedclip()
    classes = CLASSES[: args.classes]
    trimmed, padded = trimmed_and_padded(bb, classes, ConditionalPromptLearner)
    full_ids = padded.token_ids
    image = torch.randn(1, 3, 224, 224)
    test_images = torch.randn(args.test_images, 3, 224, 224)
    label = torch.tensor([1])
    with torch.no_grad():
        cached, cached_test = bb.encode_image(image), bb.encode_image(test_images)
    scale = bb.logit_scale.detach()

    def logits_of(learner, feats):
        v = F.normalize(feats, dim=-1)
        return scale * torch.einsum("bd,bcd->bc", v, learner.conditional_text_features(v))

    def train_step(learner, features):
        loss = F.cross_entropy(logits_of(learner, features()), label)
        learner.zero_grad()
        loss.backward()

    def encoded():
        with torch.no_grad():
            return bb.encode_image(image)

    @torch.no_grad()
    def test_reference():  # image tower per batch, then one padded text pass per image
        feats = bb.encode_image(test_images)
        return torch.cat([logits_of(padded, feats[i : i + 1]) for i in range(len(feats))])

    @torch.no_grad()
    def test_ours():
        return logits_of(trimmed, cached_test)

    assert torch.allclose(test_reference(), test_ours(), atol=1e-3), "the two paths must give the same logits"
    step_ref = median_time(lambda: train_step(padded, encoded), args.repeats)
    step_ours = median_time(lambda: train_step(trimmed, lambda: cached), args.repeats)
    test_ref = median_time(test_reference, args.repeats)
    test_ours_t = median_time(test_ours, args.repeats)
    per_image = TEST_IMAGES / args.test_images
    print(f"threads={torch.get_num_threads()} classes={len(classes)} "
          f"tokens: padded={full_ids.shape[1]} trimmed={trimmed.token_ids.shape[1]}")
    print(f"training step (batch 1)      reference-style {step_ref:.3f}s  ours {step_ours:.3f}s  "
          f"ratio {step_ref / step_ours:.1f}x")
    print(f"one epoch, 64 steps (proj.)  reference-style {step_ref * STEPS_PER_EPOCH:.1f}s  "
          f"ours {step_ours * STEPS_PER_EPOCH:.1f}s")
    print(f"test pass, {args.test_images} images      reference-style {test_ref:.3f}s  ours {test_ours_t:.3f}s  "
          f"ratio {test_ref / test_ours_t:.1f}x")
    print(f"test set of 1,717 (proj.)    reference-style {test_ref * per_image:.0f}s  "
          f"ours {test_ours_t * per_image:.0f}s (ours excludes the one-off feature extraction, shared by every method)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
