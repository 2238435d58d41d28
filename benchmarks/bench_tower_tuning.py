"""One training step of CLIP-LoRA, CLIP-SVD, MaPLe, EviSteer and BiomedDPT at full BiomedCLIP size
(random weights) beside BiomedCoOp's cached step, with each one's peak memory, measured in one run on this machine.

    python benchmarks/bench_tower_tuning.py [--batch 8] [--repeats 2] [--device cpu] [--methods MaPLe ...]

Each method runs in its own child process, so its peak resident memory (VmHWM on Linux; peak
allocated CUDA memory with --device cuda) is its own: the full-size model, the method's additions
and one step. CLIP-LoRA and CLIP-SVD are built through their real trainers (on a synthetic BTMRI,
4 classes) and timed on `forward_backward` with a random batch of pixels: image tower forward and
backward, the class prompts through the adapted text tower, AdamW. CLIP-SVD's one-off factorisation
of its 144 weights is timed separately. MaPLe (its real trainer too) prompts both towers at depth 9;
its learned-value count is also given on full-size CLIP ViT-B/16, where the paper states 3.55 M.
EviSteer steers blocks 1-11 of both towers (its share of all values is printed beside the public
code's count, which includes a block-0 module it never calls: the paper's 0.11%); BiomedDPT trains
the clinical context on cached features of the image tower with zero visual prompts in every block
(its step is timed on features of a random batch made by that prompted tower).
BiomedCoOp's step is the toolkit's: cached image features and trimmed prompts
(benchmarks/bench_biomedcoop_step.py). The papers train at batch 32 (BiomedCoOp and MaPLe at 4);
the default batch of 8 keeps a CPU run to minutes. Prints medians and ratios.

--whole (MaPLe, EviSteer, BiomedDPT and BiomedCoOp) also projects a whole 16-shot BTMRI-size run
(4 classes x 16 shots = 64 training images, 1,717 test images) from measured parts, each method's
step then timed at its own config's batch size:

    steps (the config's epochs x 64 // batch, the last short batch dropped) x one step
    + 1,717 x seconds per test image (the method's image pass, eval mode, no grad, --test-batch images)
    [BiomedCoOp and BiomedDPT (cached): + (64 x epochs views + 1,717) x seconds per image-tower pass
     (BiomedDPT's through its prompted tower), the one-off feature extraction, instead of the test
     images; test logits on cached features are left out (a matrix product per batch)]

Not counted: building the model, data loading and augmentation, checkpoints, and the once-per-test
class-prompt pass. CLIP-LoRA (500 iterations per shot at batch 32) and CLIP-SVD (batch 32) are
not projected: one of their steps at batch 32 takes minutes on 2 CPU cores.

    python benchmarks/bench_tower_tuning.py --whole --methods MaPLe EviSteer BiomedDPT --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _bootstrap  # noqa: E402,F401
from timing import median_time  # noqa: E402

CLASSES = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]
METHODS = ("BiomedCoOp", "CLIPLoRA", "CLIPSVD", "MaPLe", "EviSteer", "BiomedDPT")
WHOLE = ("BiomedCoOp", "MaPLe", "EviSteer", "BiomedDPT")  # the methods --whole projects
TRAIN_IMAGES = 16 * len(CLASSES)  # 16 shots of BTMRI's 4 classes
TEST_IMAGES = 1717  # BTMRI's test split
CONFIGS = {"BiomedCoOp": "configs/trainers/BiomedCoOp/few_shot/btmri.yaml",
           "CLIPLoRA": "configs/trainers/CLIPLoRA/default.yaml",
           "CLIPSVD": "configs/trainers/CLIPSVD/few_shot/btmri.yaml",
           "MaPLe": "configs/trainers/MaPLe/default.yaml",
           "EviSteer": "configs/trainers/EviSteer/default.yaml",
           "BiomedDPT": "configs/trainers/BiomedDPT/few_shot/btmri.yaml"}


def method_cfg(method: str, root: str, device: str):
    """The method's config as its few-shot script builds it (BTMRI, 16 shots), with random weights."""
    import train

    repo = _bootstrap.REPO
    return train.setup_cfg(train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"{method}_BiomedCLIP", "--output-dir", os.path.join(root, "out"),
        "--dataset-config-file", os.path.join(repo, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(repo, CONFIGS[method]),
        "MODEL.BACKBONE.PRETRAINED", "False", "DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0",
        "USE_CUDA", str(device == "cuda"),
    ]))


def run_plan(cfg) -> dict:
    """Epochs, batch size and training steps of a 16-shot BTMRI run under this config."""
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    epochs = cfg.OPTIM.MAX_EPOCH
    return {"epochs": epochs, "run_batch": batch, "steps": epochs * (TRAIN_IMAGES // batch)}


def per_image(fn, images, repeats: int, device: str) -> float:
    """Seconds per image of fn(images), eval mode and no grad, median of `repeats` calls after a warm-up."""
    import torch

    def call():
        with torch.no_grad():
            fn(images)
        if device == "cuda":
            torch.cuda.synchronize()

    return median_time(call, repeats) / len(images)


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tower_method(method: str, args) -> dict:
    import torch
    from make_synthetic_dataset import write_dataset

    import backbones  # noqa: F401
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from engine.trainer import build_trainer

    root = tempfile.mkdtemp(prefix="bench_tower_")
    write_dataset(root, "BTMRI", per_class=8, size=32)
    cfg = method_cfg(method, root, args.device)
    plan = run_plan(cfg) if args.whole else {}
    size = plan.get("run_batch", args.batch)  # --whole: the step at the config's own batch size
    start = time.perf_counter()
    trainer = build_trainer(cfg)
    build_s = time.perf_counter() - start
    torch.manual_seed(0)
    batch = {"img": torch.randn(size, 3, 224, 224), "label": torch.arange(size) % len(CLASSES)}
    # BiomedDPT with fixed zero prompts trains on cached features of its prompted tower: its step reads them
    variant = trainer.feature_cache.variant if trainer.use_feature_cache else None
    if variant is not None:
        with torch.no_grad():
            batch = {"feat": variant.encode(batch["img"]), "label": batch["label"]}
    after_build = rss_mib("VmRSS")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2  # mid-epoch: an epoch-scheduled method (MaPLe) steps no LR

    def step():
        trainer.forward_backward(batch)
        if args.device == "cuda":
            torch.cuda.synchronize()

    learned = trainer.prompt_learner if method in ("MaPLe", "BiomedDPT") else trainer.learned
    out = {"step_s": median_time(step, args.repeats), "build_s": build_s, "rss_after_build": after_build,
           "learned": sum(p.numel() for p in learned.parameters()), "batch": size, "cached": variant is not None,
           **plan}
    if args.whole:
        trainer.set_model_mode("eval")
        with torch.no_grad():
            if method == "EviSteer":
                trainer.class_text_features()  # once per test: the image gates read the text's confidence
        images = torch.randn(args.test_batch, 3, 224, 224)
        # cached: one extraction pass (training view or test image) through the prompted tower
        encode = variant.encode if variant is not None else lambda x: trainer.image_features({"img": x})
        out["test_s"] = per_image(encode, images, args.repeats, args.device)
    if method == "EviSteer":
        # share of all values (frozen model + steering); the public code also builds and counts a module
        # for block 0 that it never calls: one more block's worth
        out["model_values"] = sum(p.numel() for p in trainer.backbone.parameters())
        out["code_count"] = out["learned"] // len(trainer.steered) * (len(trainer.steered) + 1)
    if method == "MaPLe":
        out["learned_clip"] = maple_values_on_clip(cfg)
    if method == "CLIPSVD":
        from trainers.clip_svd import factorise

        weight = torch.randn(768, 768)
        threads = torch.get_num_threads()
        out["svd_1thread_s"] = median_time(lambda: factorise(weight), 1)
        start = time.perf_counter()
        torch.linalg.svd(weight, full_matrices=False)  # LAPACK with torch's default threads
        out["svd_threads"] = threads
        out["svd_default_s"] = time.perf_counter() - start
    if args.device == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(root, ignore_errors=True)
    return out


def maple_values_on_clip(cfg) -> int:
    """MaPLe's learned values on full-size CLIP ViT-B/16 (random weights), at the config's depth."""
    from backbones.tower_hooks import require
    from engine.registry import BACKBONE_REGISTRY
    from trainers.maple import MultiModalPrompts

    clip = BACKBONE_REGISTRY.get("CLIP")(cfg)
    mcfg = cfg.TRAINER.MAPLE
    width = require(clip, "MaPLe", {"image": "deep prompts"})["image"].width
    prompts = MultiModalPrompts(clip, CLASSES, mcfg.N_CTX, mcfg.CTX_INIT, mcfg.PROMPT_DEPTH, width)
    return sum(p.numel() for p in prompts.parameters())


def biomedcoop_cached(args) -> dict:
    import torch
    import torch.nn.functional as F

    import backbones  # noqa: F401
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from engine.config import get_cfg_default
    from engine.registry import BACKBONE_REGISTRY
    from trainers.biomedcoop import kdsp_loss, sccm_loss
    from trainers.prompt_bank import prompt_scores, select_prompts
    from trainers.prompt_learner import PromptLearner

    plan = {}
    if args.whole:
        root = tempfile.mkdtemp(prefix="bench_tower_")
        plan = run_plan(method_cfg("BiomedCoOp", root, args.device))
        shutil.rmtree(root, ignore_errors=True)
    size = plan.get("run_batch", args.batch)
    torch.manual_seed(0)
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PRETRAINED = False
    start = time.perf_counter()
    bb = BACKBONE_REGISTRY.get("BiomedCLIP")(cfg).eval().requires_grad_(False).to(args.device)
    learner = PromptLearner(bb, CLASSES, ctx_init="a photo of a").to(args.device)
    build_s = time.perf_counter() - start
    bank = F.normalize(torch.randn(len(CLASSES), 50, bb.embed_dim, device=args.device), dim=-1)
    mean = F.normalize(bank.mean(1), dim=-1)
    labels = torch.arange(size, device=args.device) % len(CLASSES)
    with torch.no_grad():
        cached = bb.encode_image(torch.randn(size, 3, 224, 224, device=args.device))
    after_build = rss_mib("VmRSS")
    optim = torch.optim.SGD([learner.ctx], lr=0.0025, momentum=0.9)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        bb.text_train(True)
        feats = F.normalize(cached, dim=-1)
        text = F.normalize(learner.text_features(), dim=-1)
        scale = bb.logit_scale.detach()
        logits = scale * feats @ text.t()
        with torch.no_grad():
            keep = select_prompts(prompt_scores(feats, bank, scale), 1.5)
            teacher = scale * feats @ F.normalize(bank[:, keep].mean(1), dim=-1).t()
        loss = F.cross_entropy(logits, labels) + sccm_loss(text, mean) + kdsp_loss(logits, teacher)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if args.device == "cuda":
            torch.cuda.synchronize()

    out = {"step_s": median_time(step, args.repeats), "build_s": build_s, "rss_after_build": after_build,
           "learned": learner.ctx.numel(), "batch": size, **plan}
    if args.whole:  # one image-tower pass: the feature extraction's unit, also what a test image costs
        images = torch.randn(args.test_batch, 3, 224, 224, device=args.device)
        out["test_s"] = per_image(bb.encode_image, images, args.repeats, args.device)
    if args.device == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def child(args) -> int:
    import torch

    result = biomedcoop_cached(args) if args.child == "BiomedCoOp" else tower_method(args.child, args)
    result["peak_rss"] = rss_mib("VmHWM")
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--methods", nargs="+", choices=METHODS[1:], default=list(METHODS[1:]),
                   help="the pixel-path methods to time (BiomedCoOp's cached step is always the baseline)")
    p.add_argument("--whole", action="store_true",
                   help="also project a whole 16-shot BTMRI-size run of MaPLe, EviSteer, BiomedDPT and BiomedCoOp "
                        "(each step then at its config's batch size)")
    p.add_argument("--test-batch", type=int, default=4, help="images per timed test pass (--whole)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    with open("/proc/loadavg", encoding="utf-8") as f:
        load_start = f.read().split()[:3]
    wall = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = {}
    for method in ("BiomedCoOp", *args.methods):
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", method, "--batch", str(args.batch),
             "--repeats", str(args.repeats), "--device", args.device, "--test-batch", str(args.test_batch),
             *(["--whole"] if args.whole else [])],
            capture_output=True, text=True, env=env,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{method} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[method] = json.loads(line[len("RESULT "):])
    base = results["BiomedCoOp"]
    batch = "each config's own batch" if args.whole else f"batch={args.batch}"
    print(f"full-size BiomedCLIP (random weights), device={args.device}, threads={base['threads']}, "
          f"{batch}, {len(CLASSES)} classes, median of {args.repeats} steps after one warm-up")
    mem = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB (after build)"
    print(f"{'method':<26}{'learned':>10}{'batch':>6}{'step s':>10}{'x cached':>10}   {mem}")
    labels = {"BiomedCoOp": "BiomedCoOp (cached step)", "CLIPLoRA": "CLIP-LoRA", "CLIPSVD": "CLIP-SVD",
              "MaPLe": "MaPLe (depth 9)", "EviSteer": "EviSteer (pixels)", "BiomedDPT": "BiomedDPT (pixels)"}
    if results.get("BiomedDPT", {}).get("cached"):
        labels["BiomedDPT"] = "BiomedDPT (cached step)"
    for method, r in results.items():
        if args.device == "cuda":
            memory = f"{r['peak_cuda_mib']:.0f}"
        else:
            memory = f"{r['peak_rss']:.0f} ({r['rss_after_build']:.0f})"
        ratio = r["step_s"] / base["step_s"]
        print(f"{labels[method]:<26}{r['learned']:>10,}{r['batch']:>6}{r['step_s']:>10.3f}{ratio:>10.1f}   {memory}")
    svd = results.get("CLIPSVD")
    if svd and "CLIPLoRA" in results:
        print(f"CLIP-SVD set-up (factorising 144 matrices once, within the trainer build): {svd['build_s']:.1f}s "
              f"vs {results['CLIPLoRA']['build_s']:.1f}s for CLIP-LoRA's build")
    if svd:
        print(f"one 768x768 SVD: single-threaded {svd['svd_1thread_s']:.3f}s, {svd['svd_threads']} threads "
              f"{svd['svd_default_s']:.3f}s (ratio {svd['svd_default_s'] / svd['svd_1thread_s']:.1f}x)")
    if "MaPLe" in results:
        print(f"MaPLe learned values on full-size CLIP ViT-B/16: {results['MaPLe']['learned_clip']:,}")
    evi = results.get("EviSteer")
    if evi:
        def share(n: int) -> str:
            return f"{n:,} of {evi['model_values'] + n:,} values = {100 * n / (evi['model_values'] + n):.3f}%"

        print(f"EviSteer share of trainable values: {share(evi['learned'])} (blocks 1-11 of both towers); "
              f"counting the public code's never-called block-0 module: {share(evi['code_count'])}")
    if args.whole:
        print_whole(results, labels, args)
    with open("/proc/loadavg", encoding="utf-8") as f:
        load_end = f.read().split()[:3]
    print(f"benchmark wall time {time.perf_counter() - wall:.0f} s; load average (1/5/15 min) "
          f"{' '.join(load_start)} at the start, {' '.join(load_end)} at the end")
    return 0


def print_whole(results: dict, labels: dict, args) -> None:
    """The whole-run projection of each --whole method, its formula written out with the measured parts."""
    print(f"\nwhole 16-shot BTMRI-size run, projected: {TRAIN_IMAGES} training images, {TEST_IMAGES:,} test images "
          f"(per-image test time measured on {args.test_batch} images; build, data loading and checkpoints "
          f"not counted)")
    for method, r in results.items():
        if method not in WHOLE:
            print(f"{labels[method]:<26}not projected (its batch-32 step takes minutes on a CPU)")
            continue
        train_s = r["steps"] * r["step_s"]
        steps = (f"{r['steps']:,} steps ({r['epochs']} epochs x {TRAIN_IMAGES // r['run_batch']} of batch "
                 f"{r['run_batch']}) x {r['step_s']:.3f} s")
        if method == "BiomedCoOp" or r.get("cached"):
            passes = TRAIN_IMAGES * r["epochs"] + TEST_IMAGES  # one cached view per image per epoch
            total = train_s + passes * r["test_s"]
            formula = (f"{steps} + ({TRAIN_IMAGES} x {r['epochs']} views + {TEST_IMAGES:,}) = {passes:,} "
                       f"image passes x {r['test_s']:.3f} s")
        else:
            total = train_s + TEST_IMAGES * r["test_s"]
            formula = f"{steps} + {TEST_IMAGES:,} test images x {r['test_s']:.3f} s"
        print(f"{labels[method]:<26}{total:>9,.0f} s = {total / 3600:.2f} h   = {formula}")


if __name__ == "__main__":
    sys.exit(main())
