"""How a BiomedCoOp run's cost grows with the shot count K and the number of classes C.

    python benchmarks/bench_scaling.py [--quick] [--repeats 2]

Full BiomedCLIP size with random weights. For each K in 1, 4, 16 and C in 2, 4, 9 it times the
image-tower pass over the K*C training images (one augmented view, what the feature cache pays per
view) and one training step on cached features over C classes (batch 4; fastest of --repeats
calls), and gives the steps per epoch (floor(K*C / 4), at least 1, as Dassl's loader with
drop_last). --quick times the extraction only where K*C <= 8 (run_all: <= 36) and projects the
other cells from the measured per-image rate (marked ~).
What is linear in what is printed under the table, checked against the measured times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
import torch  # noqa: E402
from bench_biomedcoop_step import CLASSES, full_size_biomedclip, step_functions  # noqa: E402
from timing import fastest_time  # noqa: E402

SHOTS = (1, 4, 16)
CLASS_COUNTS = (2, 4, 9)
BATCH = 4
EPOCHS = 100
NINE_CLASSES = [*CLASSES, "benign breast mass"]


def extraction_seconds(bb, n_images: int, batch: int = 8, dtype: torch.dtype | None = None) -> float:
    """Wall time of one image-tower pass over `n_images` random 224 x 224 images, `batch` at a time."""
    images = torch.randn(min(n_images, batch), 3, 224, 224)
    start = time.perf_counter()
    done = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        while done < n_images:
            n = min(batch, n_images - done)
            bb.encode_image(images[:n])
            done += n
    return time.perf_counter() - start


def steps_per_epoch(n_images: int, batch: int = BATCH) -> int:
    return n_images // batch if n_images >= batch else 1


def scaling_table(bb, quick: bool = False, repeats: int = 2, max_measured: int = 144) -> dict:
    """Measure and print the table; returns the per-unit costs it found."""
    step = {c: fastest_time(step_functions(bb, NINE_CLASSES[:c], BATCH)["ours"], repeats) for c in CLASS_COUNTS}
    measured: dict[tuple[int, int], float] = {}
    for k in SHOTS:
        for c in CLASS_COUNTS:
            if k * c <= (8 if quick else max_measured):
                measured[(k, c)] = extraction_seconds(bb, k * c)
    largest = max(measured, key=lambda kc: kc[0] * kc[1])
    per_image = measured[largest] / (largest[0] * largest[1])
    print(f"{'K':>3} {'C':>3} {'images':>7} {'extract 1 view':>15} {'steps/epoch':>12} {'step':>8} "
          f"{'train 100 ep':>13} {'extract 100 views':>18}")
    for k in SHOTS:
        for c in CLASS_COUNTS:
            n = k * c
            ext = measured.get((k, c))
            ext_txt = f"{ext:13.2f} s" if ext is not None else f"~{n * per_image:12.2f} s"
            ext = ext if ext is not None else n * per_image
            spe = steps_per_epoch(n)
            print(f"{k:>3} {c:>3} {n:>7} {ext_txt:>15} {spe:>12} {step[c]:>6.3f} s "
                  f"{EPOCHS * spe * step[c]:>11.1f} s {EPOCHS * ext:>16.1f} s")
    big = [(kc, t / (kc[0] * kc[1])) for kc, t in measured.items() if kc[0] * kc[1] >= 4]
    spread = (max(r for _, r in big) / min(r for _, r in big)) if len(big) > 1 else 1.0
    print(f"extraction is linear in K x C x views: {per_image:.3f} s per image per view "
          f"(per-image times of the cells with >= 4 images within {spread:.2f}x of each other)")
    print(f"one step should grow linearly with C (the text tower encodes every class's prompt each step): "
          f"measured step(C=9) / step(C=2) = {step[9] / step[2]:.2f} (at most 4.5, the loss, teacher and "
          f"optimiser being a fixed part; fastest of {repeats} calls each, so a ratio below 1 means load noise)")
    print("steps per epoch = floor(K x C / 4), so training time grows as K x C x step(C), about K x C^2; "
          "extraction (one pass per image per view) grows as K x C x views")
    return {"per_image": per_image, "step": step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="time the extraction only where K*C <= 8")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    print(f"{torch.get_num_threads()} CPU threads, full BiomedCLIP size, random weights")
    scaling_table(full_size_biomedclip(), args.quick, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
