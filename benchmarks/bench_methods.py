"""Every method's cost at full BiomedCLIP size: build, one step (or the fit), a whole 16-shot BTMRI-size
run projected from measured parts, and peak memory; then the paper grid's hours per method family.

    python benchmarks/bench_methods.py [--quick] [--only CoOp MaPLe ...]
    python benchmarks/run_all.py --methods [--quick]      # the same section

Every method with a script folder in scripts/ runs through its real trainer, with the config its
few-shot script gives BTMRI (epochs, batch size, iteration budget), full-size BiomedCLIP with random
weights (MODEL.BACKBONE.PRETRAINED False), on the synthetic BTMRI layout (4 classes), each in a child
process of its own so its peak resident memory (VmHWM) is its own. A child runs a shortened run:

- shots: enough for one training batch of the config's size (ceil(batch / 4), at most 16), so a step
  is timed at the run's own batch; the feature heads, which fit on all their features at once, use
  1 shot (2 without --quick), and their fit is scaled linearly to 64 training images;
- epochs: 1 (2 without --quick; the first pays one-off costs, the second gives the per-epoch cost);
  the prompt learners cache one training view (FEATURES.TRAIN_VIEWS 1): a step costs the same;
- test: 1 image per class (4 without --quick); TRAIN.THREADS 1, DATALOADER.NUM_WORKERS 0.

Every image-tower pass is counted where the trainer makes it (the backbone's encode_image and
encode_image_tokens), and timed with the phase that makes it. A whole 16-shot BTMRI-size run (64
training images, 16 val images, 1,717 test images) is projected as

    build + passes x seconds per pass (frozen-feature methods: training images x views + val + test)
    + steps x one step + epochs x what an epoch adds beyond its steps + the first epoch's one-off extra
    [feature heads: + the fit x 64 / its training images]
    + the test: pixel methods 1,717 x its seconds per image, frozen-feature methods once (a product of
      cached features; their test images are in the passes), + the first test call's one-off extra

with the config's steps and epochs (sweeps/plan.training_steps: epochs x batches, or CLIP-LoRA's
500 iterations per shot). Data loading, checkpoints and per-epoch work are inside the epoch figure.

The paper grid (scripts/reproduce_paper.sh, few-shot half, every method with scripts, recorded not
run): each run's hours = the same model at that run's K and dataset (each dataset's own class count
and test-set size; the step and build measured on BTMRI's 4 classes are used unchanged, so datasets
with more classes are under-counted), with the frozen-feature methods' image-tower passes counted
once for all of them as sweeps/cost.py counts them (shared feature cache) at the measured seconds per pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(REPO, "tools")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import _bootstrap  # noqa: E402,F401
from run_all import timed  # noqa: E402

PROMPT = "prompt learners on cached features"
HEADS = "zero-shot and feature heads on cached features"
TOWER = "tower tuning on pixels"
TWO = "two towers on pixels"
OGKD = "OGKD (cached features and patch tokens)"
FAMILY_ORDER = (PROMPT, HEADS, TOWER, TWO, OGKD)
# trainer -> (label, script folder, the config its few-shot script gives BTMRI, family)
METHODS = {
    "ZeroShot": ("zero-shot", "zeroshot", "configs/trainers/ZeroShot/vit_b16.yaml", HEADS),
    "ZeroShotEnsemble": ("zero-shot ensemble", "zeroshot", "configs/trainers/ZeroShot/vit_b16.yaml", HEADS),
    "ClipAdapter": ("CLIP-Adapter", "clip_adapter", "configs/trainers/ClipAdapter/few_shot.yaml", HEADS),
    "TipAdapter": ("Tip-Adapter", "tip_adapter", "configs/trainers/TipAdapter/few_shot.yaml", HEADS),
    "TipAdapterF": ("Tip-Adapter-F", "tip_adapter_f", "configs/trainers/TipAdapterF/few_shot.yaml", HEADS),
    "LinearProbe": ("linear probe", "linear_probe", "configs/trainers/LinearProbe/few_shot.yaml", HEADS),
    "LPPlusPlus": ("LP++", "lp_plus_plus", "configs/trainers/LPPlusPlus/few_shot.yaml", HEADS),
    "GDA": ("GDA", "gda", "configs/trainers/GDA/few_shot/default.yaml", HEADS),
    "CoOp": ("CoOp", "coop", "configs/trainers/CoOp/vit_b16.yaml", PROMPT),
    "CoCoOp": ("CoCoOp", "cocoop", "configs/trainers/CoCoOp/vit_b16.yaml", PROMPT),
    "KgCoOp": ("KgCoOp", "kgcoop", "configs/trainers/KgCoOp/few_shot/btmri.yaml", PROMPT),
    "ProGrad": ("ProGrad", "prograd", "configs/trainers/ProGrad/few_shot/btmri.yaml", PROMPT),
    "BiomedCoOp": ("BiomedCoOp", "biomedcoop", "configs/trainers/BiomedCoOp/few_shot/btmri.yaml", PROMPT),
    "CLIPLoRA": ("CLIP-LoRA", "clip_lora", "configs/trainers/CLIPLoRA/default.yaml", TOWER),
    "CLIPSVD": ("CLIP-SVD", "clip_svd", "configs/trainers/CLIPSVD/few_shot/btmri.yaml", TOWER),
    "MaPLe": ("MaPLe", "maple", "configs/trainers/MaPLe/default.yaml", TWO),
    "EviSteer": ("EviSteer", "evisteer", "configs/trainers/EviSteer/default.yaml", TWO),
    "BiomedDPT": ("BiomedDPT", "biomeddpt", "configs/trainers/BiomedDPT/few_shot/btmri.yaml", TWO),
    "OGKD": ("OGKD", "ogkd", "configs/trainers/OGKD/few_shot/btmri.yaml", OGKD),
}
FULL = {"shots": 16, "train": 64, "val": 16, "test": 1717}  # 16-shot BTMRI: 4 classes, min(K, 4) val per class


def count_passes(backbone) -> dict:
    """Count (and time) every image through the backbone's image tower from now on; a nested call (one
    encode calling the other) is counted once."""
    seen = {"images": 0, "depth": 0}

    def counting(fn):
        def wrapper(images, *args, **kwargs):
            if seen["depth"] == 0:
                seen["images"] += int(images.shape[0])
            seen["depth"] += 1
            try:
                return fn(images, *args, **kwargs)
            finally:
                seen["depth"] -= 1
        return wrapper

    for name in ("encode_image", "encode_image_tokens"):
        setattr(backbone, name, counting(getattr(backbone, name)))
    return seen


# ----- one method, in its own process ---------------------------------------------------------------
def kind_of(cls, cfg) -> str:
    from sweeps.plan import is_zero_shot
    from trainers.feature_methods import FeatureMethod

    if is_zero_shot(cls):
        return "zero-shot"
    if issubclass(cls, FeatureMethod):
        return "fit"
    return "cached" if cls.frozen_image_path(cfg) else "pixels"  # BiomedDPT: its config decides


def measure(trainer_name: str, config: str, root: str, tmp: str, quick: bool, backbone: str) -> dict:
    """A shortened run of one method through its real trainer; the parts of the whole-run projection."""
    import torch
    from bench_epoch_overhead import epoch_costs, summarize
    from run_all import method_cfg, peak_rss_gb

    from engine.config import epoch_budget
    from engine.trainer import build_trainer
    from sweeps.plan import trainer_class, training_steps
    from trainers.feature_methods import one_thread

    common = ("TRAIN.THREADS", "1", "DATALOADER.NUM_WORKERS", "0")
    full = method_cfg(root, os.path.join(tmp, "full"), os.path.join(tmp, "cache"), trainer_name, config, None,
                      FULL["shots"], backbone, common)
    cls = trainer_class(full)
    kind = kind_of(cls, full)
    batch = full.DATALOADER.TRAIN_X.BATCH_SIZE
    plan = {"kind": kind, "batch": batch, "steps": 0, "epochs": 0, "views": 0}
    if kind in ("cached", "pixels"):
        plan["steps"] = training_steps(full, cls, FULL["train"])
        per_epoch = (FULL["train"] // batch if FULL["train"] >= batch else 1) if kind == "cached" \
            else max(1, -(-FULL["train"] // batch))
        plan["epochs"] = epoch_budget(full) if kind == "cached" else math.ceil(plan["steps"] / per_epoch)
        plan["views"] = (full.FEATURES.TRAIN_VIEWS or epoch_budget(full)) if kind == "cached" else 0
    shots = {"fit": 1 if quick else 2, "zero-shot": 1}.get(kind, min(FULL["shots"], max(1, -(-batch // 4))))
    epochs = None if kind in ("fit", "zero-shot") else (1 if quick else 2)
    extra = (*common, *(("FEATURES.TRAIN_VIEWS", "1") if kind == "cached" else ()))
    cfg = method_cfg(root, os.path.join(tmp, "run"), os.path.join(tmp, "cache"), trainer_name, config, epochs,
                     shots, backbone, extra)
    torch.manual_seed(0)
    trainer, build = timed(lambda: build_trainer(cfg))
    passes = count_passes(trainer.backbone)
    n_train, n_test = len(trainer.dm.dataset.train_x), len(trainer.dm.dataset.test)
    out = {**plan, "shots": shots, "n_train": n_train, "n_test": n_test, "build_s": build, "step_s": 0.0,
           "per_epoch_s": 0.0, "first_extra_s": 0.0, "fit_s": 0.0, "extract_s": 0.0, "passes": 0,
           "train_passes": 0, "val_passes": 0, "short_epochs": 0, "short_steps": 0}
    if kind == "zero-shot":
        _, out["extract_s"] = timed(trainer.test_features)
        out["passes"] = passes["images"]
    elif kind == "fit":
        start = time.perf_counter()
        trainer.train_views(trainer.train_view_count())
        out["train_passes"] = passes["images"]
        trainer.val_features()
        out["val_passes"] = passes["images"] - out["train_passes"]
        trainer.test_features()
        out["extract_s"], out["passes"] = time.perf_counter() - start, passes["images"]
        with one_thread():  # as FeatureMethod.train runs it
            _, out["fit_s"] = timed(trainer.fit)
        out["fit_passes"] = passes["images"] - out["passes"]
    else:
        _, before = timed(trainer.before_train)
        if kind == "cached":  # the training views and the test images, extracted before the first step
            out["extract_s"], out["passes"] = before, passes["images"]
            out["train_passes"] = out["passes"] - n_test
        rows = epoch_costs(trainer, trainer.max_epoch if epochs is None else epochs)
        costs = summarize(rows)
        out.update(step_s=costs["per_step"], per_epoch_s=costs["per_epoch"], first_extra_s=costs["first_extra"],
                   short_epochs=len(rows), short_steps=sum(r["n_steps"] for r in rows))
    before_test = passes["images"]
    _, first_test = timed(trainer.test)
    out["test_passes"] = passes["images"] - before_test
    _, out["test_s"] = timed(trainer.test)  # again: the first call also pays one-off imports and warm-up
    out["test_once_s"] = max(first_test - out["test_s"], 0.0)
    out["peak_gb"] = peak_rss_gb()
    out["threads"] = torch.get_num_threads()
    return out


RATE = "image-tower pass"  # the child that measures the steady seconds per extraction pass


def pass_rate(root: str, tmp: str, quick: bool, backbone: str) -> dict:
    """Seconds per image-tower pass of a run's feature extraction (decoding, the tower, cache writes) at a
    steady rate: a warm-up job of 8 training images, then a job of 24 (56 without --quick) others, through
    the zero-shot trainer's feature cache. A method's shortened run extracts a few images in one job, whose
    one-off costs (first call, cache set-up) would weigh on every pass if divided by its few images."""
    import torch
    from run_all import method_cfg, peak_rss_gb

    from engine.data import transform_spec
    from engine.trainer import build_trainer

    cfg = method_cfg(root, os.path.join(tmp, "run"), os.path.join(tmp, "cache"), "ZeroShot",
                     METHODS["ZeroShot"][2], None, FULL["shots"], backbone,
                     ("TRAIN.THREADS", "1", "DATALOADER.NUM_WORKERS", "0"))
    torch.manual_seed(0)
    trainer = build_trainer(cfg)
    items = trainer.dm.dataset.train_x
    spec = transform_spec(cfg, False)

    def job(part):
        return timed(lambda: trainer.feature_cache.get(part, trainer.dm.tfm_test, spec, desc="pass rate"))[1]

    warm, rest = items[:8], items[8: 8 + (24 if quick else 56)]
    warm_s, steady_s = job(warm), job(rest)
    return {"kind": "rate", "per_pass": steady_s / len(rest), "n": len(rest), "warm_s": warm_s,
            "n_warm": len(warm), "peak_gb": peak_rss_gb()}


def project(r: dict, rate: float | None = None) -> tuple[float, str]:
    """Seconds of a whole 16-shot BTMRI-size run from a child's parts, and the formula with its numbers.
    `rate`: the steady seconds per pass (pass_rate); the child's own extraction beyond its passes at that
    rate is then a one-off of the run. Without it, the child's extraction divided by its passes."""
    parts, text = [r["build_s"]], [f"build {r['build_s']:.1f}"]
    per_pass = r["extract_s"] / r["passes"] if r["passes"] else 0.0
    once = 0.0
    if rate and r["passes"] and r["kind"] != "pixels":
        per_pass, once = rate, max(r["extract_s"] - r["passes"] * rate, 0.0)
    if r["kind"] != "pixels" and r["passes"]:
        if r["kind"] == "cached":  # measured with one view: the config's views per training image
            train = FULL["train"] * r["views"] * r["train_passes"] / r["n_train"]
        else:
            train = FULL["train"] * r["train_passes"] / r["n_train"] if r["n_train"] else 0
        val = FULL["val"] if r.get("val_passes") else 0
        n = train + val + FULL["test"]
        parts.append(n * per_pass + once)
        text.append(f"{n:,.0f} passes x {per_pass:.3f}" + (f" + extraction one-off {once:.1f}" if rate else ""))
    if r["steps"]:
        parts += [r["steps"] * r["step_s"], r["epochs"] * r["per_epoch_s"] + r["first_extra_s"]]
        text.append(f"{r['steps']:,} steps x {r['step_s']:.3f} + {r['epochs']:,} epochs x {r['per_epoch_s']:.3f} "
                    f"+ {r['first_extra_s']:.2f}")
    if r["kind"] == "fit":
        scale = FULL["train"] / r["n_train"]
        parts.append(r["fit_s"] * scale)
        text.append(f"fit {r['fit_s']:.2f} x {scale:.0f}")
    if r["kind"] == "pixels":  # every test image through the tower (the class-prompt pass spread over them)
        per_test = r["test_s"] / r["n_test"]
        parts.append(FULL["test"] * per_test + r["test_once_s"])
        text.append(f"1,717 x {per_test:.4f} + test one-off {r['test_once_s']:.2f}")
    else:  # cached features: the test's own work is once per run (its per-image product is negligible)
        parts.append(r["test_s"] + r["test_once_s"])
        text.append(f"test {r['test_s'] + r['test_once_s']:.2f}")
    return sum(parts), " + ".join(text)


def child_main(args) -> int:
    try:
        if args.child == RATE:
            result = pass_rate(args.root, args.tmp, args.quick, args.backbone)
        else:
            result = measure(args.child, args.config, args.root, args.tmp, args.quick, args.backbone)
    except Exception as err:  # one line for the parent's table; the rest go on
        first = (str(err).strip().splitlines() or [""])[0]
        print("RESULT " + json.dumps({"error": f"{type(err).__name__}: {first}"[:300]}))
        return 0
    print("RESULT " + json.dumps(result))
    return 0


def run_child(trainer_name: str, config: str, root: str, tmp: str, quick: bool, backbone: str,
              timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", trainer_name, "--config", config, "--root", root,
           "--tmp", os.path.join(tmp, trainer_name.replace(" ", "_")), "--backbone", backbone,
           *(["--quick"] if quick else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(line[len("RESULT "):])


# ----- the paper grid --------------------------------------------------------------------------------
def paper_grid_commands(tmp: str) -> list[list[str]]:
    """The few-shot grid's train.py commands (run_all.grid_commands: recorded, not run) for every
    method with scripts (zero-shot also as the ensemble), whatever METHODS the caller's environment sets."""
    from run_all import grid_commands

    from sweeps.cost import read_commands

    folders = sorted({folder for _, folder, _, _ in METHODS.values()} | {"zeroshot_ensemble"})
    saved = os.environ.get("METHODS")
    os.environ["METHODS"] = " ".join(folders)
    try:
        return read_commands(grid_commands(tmp))
    finally:
        if saved is None:
            os.environ.pop("METHODS", None)
        else:
            os.environ["METHODS"] = saved


def grid_hours(results: dict, commands: list[list[str]], rate: float | None = None) -> dict:
    """Hours of the grid per family: every train.py command priced by its method's measured model at its
    own K and dataset; the frozen-feature passes counted once (shared cache, sweeps/cost.py)."""
    import train
    from datasets.benchmarks import BENCHMARKS
    from engine.config import epoch_budget
    from engine.trainer import split_trainer_name
    from sweeps.cost import count_passes as cache_passes
    from sweeps.plan import trainer_class, training_steps

    families = {f: {"runs": 0, "seconds": 0.0, "unmeasured": 0} for f in FAMILY_ORDER}
    cached_commands = []
    for argv in commands:
        start = next((i for i, a in enumerate(argv[:2]) if a.endswith("train.py")), None)
        if start is None:
            continue
        args = train.parse_args([a for a in argv[start + 1:] if a != "--skip-finished"])
        cfg = train.setup_cfg(args)
        name = split_trainer_name(cfg.TRAINER.NAME)[0]
        family = METHODS[name][3]
        spec = BENCHMARKS[cfg.DATASET.NAME]
        fam = families[family]
        fam["runs"] += 1
        cls = trainer_class(cfg)
        if cls.frozen_image_path(cfg):  # its image-tower passes are shared (cache): counted once below
            cached_commands.append(argv)
        r = results.get(name)
        if r is None or "error" in r:
            fam["unmeasured"] += 1
            continue
        n_train, n_test = cfg.DATASET.NUM_SHOTS * len(spec.classnames), spec.counts["test"]
        if r["kind"] == "pixels":
            seconds = r["build_s"] + r["test_s"] / r["n_test"] * n_test + r["test_once_s"]
            steps = training_steps(cfg, cls, n_train)
            per_epoch = max(1, -(-n_train // cfg.DATALOADER.TRAIN_X.BATCH_SIZE))
            seconds += steps * r["step_s"] + math.ceil(steps / per_epoch) * r["per_epoch_s"] + r["first_extra_s"]
        else:
            seconds = r["build_s"] + r["test_s"] + r["test_once_s"]
            if r["kind"] == "cached":
                seconds += (training_steps(cfg, cls, n_train) * r["step_s"] + epoch_budget(cfg) * r["per_epoch_s"]
                            + r["first_extra_s"])
            elif r["kind"] == "fit":
                seconds += r["fit_s"] * n_train / r["n_train"]
        fam["seconds"] += seconds
    per_pass = [r["extract_s"] / r["passes"] for r in results.values() if "error" not in r and r.get("passes")]
    shared = cache_passes(cached_commands)["cached"] if cached_commands else 0
    return {"families": families, "runs": sum(f["runs"] for f in families.values()), "shared_passes": shared,
            "per_pass": rate or (statistics.median(per_pass) if per_pass else float("nan")),
            "rate_measured": bool(rate)}


# ----- the section ----------------------------------------------------------------------------------
def methods_section(quick: bool, only=None, methods: dict | None = None, backbone: str = "BiomedCLIP",
                    grid: bool = True, timeout: float | None = None) -> dict:
    """Measure every method (or `only`) in a child each, print the table by family, then the grid."""
    from run_all import write_btmri

    methods = methods or METHODS
    names = [n for n in methods if not only or n in only]
    timeout = timeout or (1200.0 if quick else 2400.0)
    load = [os.getloadavg()[0]]
    wall = time.perf_counter()
    print(f"\n== every method's cost{' (--quick)' if quick else ''}: {backbone} full size, random weights, "
          f"synthetic BTMRI (4 classes), each method's own 16-shot BTMRI config, one child process each, "
          f"1 thread (the cores are shared); load average {load[0]:.1f} at the start")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "data")
        write_btmri(root, test_per_class=1 if quick else 4)
        rates: list[float] = []
        frozen = any(methods[n][3] not in (TOWER, TWO) for n in names)

        def measure_rate(when: str) -> None:
            # a folder (and so a feature cache) of its own each time: a warm cache would read features back
            steady = run_child(RATE, "", root, os.path.join(tmp, when.replace(" ", "_")), quick, backbone, timeout)
            load.append(os.getloadavg()[0])
            if "error" in steady:
                print(f"  steady seconds per image-tower pass ({when}): not measured: {steady['error']}")
                return
            rates.append(steady["per_pass"])
            print(f"  steady seconds per image-tower pass ({when}; decode, tower, cache write; a job of "
                  f"{steady['n']} images after a warm-up job of {steady['n_warm']} that took {steady['warm_s']:.1f} "
                  f"s): {steady['per_pass']:.3f} s (load average {load[-1]:.1f})", flush=True)

        if frozen:
            measure_rate("at the start")
        for name in names:
            results[name] = r = run_child(name, methods[name][2], root, tmp, quick, backbone, timeout)
            rate = statistics.mean(rates) if rates else None
            status = r["error"] if "error" in r else f"{project(r, rate)[0] / 3600:.2f} h projected"
            print(f"  measured {methods[name][0]}: {status} (load average {os.getloadavg()[0]:.1f})", flush=True)
            load.append(os.getloadavg()[0])
        if frozen:  # the load moves during the section: the rate is measured at both ends, their mean used
            measure_rate("at the end")
        rate = statistics.mean(rates) if rates else None
        if frozen:
            use = (f"{rate:.3f} s per pass, the mean of the two" if rate else
                   "each method's own extraction divided by its passes (no steady rate measured)")
            print(f"  the projections below use {use}")
        print_table(results, methods, names, rate)
        out = {"results": results, "rate": rate, "rates": rates, "load": (min(load), max(load))}
        if grid:
            out["grid"] = g = grid_hours(results, paper_grid_commands(tmp), rate)
            print_grid(g)
    print(f"\n(the methods section took {(time.perf_counter() - wall) / 60:.1f} min; load average "
          f"{min(load):.1f}-{max(load):.1f} while it ran, {os.getloadavg()[0]:.1f} at the end)")
    return out


def print_table(results: dict, methods: dict, names: list[str], rate: float | None = None) -> None:
    print("\nmeasured: build, one step (the fit for a feature head: measured on its training images), test seconds "
          "per image, peak resident memory (VmHWM of the method's process); projected: the whole 16-shot "
          "BTMRI-size run (64 training images, 1,717 test images) by the formula shown")
    print(f"{'method':<20}{'build s':>9}{'step/fit s':>12}{'batch':>6}{'steps':>7}{'test s/img':>12}"
          f"{'whole run h':>13}{'peak GB':>9}")
    for family in FAMILY_ORDER:
        rows = [n for n in names if methods[n][3] == family]
        if not rows:
            continue
        print(f"-- {family}")
        for name in rows:
            r, label = results[name], methods[name][0]
            if "error" in r:
                print(f"{label:<20}not measured: {r['error']}")
                continue
            whole, formula = project(r, rate)
            if r["kind"] == "fit":
                step = f"{r['fit_s']:.2f} fit"
            else:
                step = f"{r['step_s']:.3f}" if r["steps"] else "-"
            per_test = r["test_s"] / r["n_test"] if r["kind"] == "pixels" else 0.0
            if r["passes"]:  # frozen features: a test image costs a pass, paid with the extraction
                per_test += rate or r["extract_s"] / r["passes"]
            print(f"{label:<20}{r['build_s']:>9.1f}{step:>12}{r['batch'] if r['steps'] else '-':>6}"
                  f"{r['steps'] or '-':>7}{per_test:>12.4f}{whole / 3600:>13.3f}{r['peak_gb']:>9.2f}")
            measured = (f"shortened run: {r['shots']} shot(s), {r['n_train']} training images, "
                        f"{r['short_steps']} step(s) in {r['short_epochs']} epoch(s), {r['n_test']} test images, "
                        f"{r['passes']} image-tower passes counted before the test ({r['train_passes']} training, "
                        f"{r.get('val_passes', 0)} val), {r['test_passes']} in the test"
                        + (f"; its own extraction {r['extract_s']:.1f} s = {r['extract_s'] / r['passes']:.3f} s per "
                           "pass" if r["passes"] else ""))
            print(f"{'':<20}{measured}")
            print(f"{'':<20}whole run = {formula} = {whole:,.0f} s")


def print_grid(g: dict) -> None:
    print(f"\n== the paper's few-shot grid (scripts/reproduce_paper.sh, every method with scripts, 11 datasets x "
          f"K 1 2 4 8 16 x 3 seeds): {g['runs']:,} runs, projected from the figures above")
    print("  each run: build + steps (its K, dataset and config) x the step + epochs x the per-epoch cost + its "
          "dataset's test images x the test cost [feature heads: + the fit scaled to its training images]; the step "
          "and build are BTMRI's (4 classes), so datasets with more classes are under-counted")
    total = 0.0
    for family in FAMILY_ORDER:
        f = g["families"][family]
        if not f["runs"]:
            continue
        total += f["seconds"]
        missing = f" ({f['unmeasured']} runs of unmeasured methods not counted)" if f["unmeasured"] else ""
        print(f"  {family:<52}{f['runs']:>6,} runs {f['seconds'] / 3600:>12,.1f} h{missing}")
    shared = g["shared_passes"] * g["per_pass"]
    total += shared
    print(f"  {'image-tower passes of the frozen-feature families':<52}{g['shared_passes']:>11,} passes "
          f"{shared / 3600:>7,.1f} h (shared feature cache, counted as sweeps/cost.py counts them, at "
          f"{g['per_pass']:.3f} s per pass: "
          + ("the steady rate measured above)" if g.get("rate_measured") else "the median of the children's)"))
    print(f"  {'whole grid':<52}{g['runs']:>6,} runs {total / 3600:>12,.1f} h (projection)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 epoch, 1 test image per class, feature heads at 1 shot")
    p.add_argument("--only", nargs="+", choices=list(METHODS), help="these trainers only")
    p.add_argument("--no-grid", action="store_true", help="skip the paper grid's hours")
    p.add_argument("--backbone", default="BiomedCLIP", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    methods_section(args.quick, args.only, backbone=args.backbone, grid=not args.no_grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
