"""Which ensemble prompts BiomedCoOp's outlier test keeps on a few training images (tools/inspect_prompts.py),
and the pieces tools/analyze_prompts.py shares: the common options, the config, the frozen backbone and
the test-view image features.

torch and the model families are imported inside the functions, so both commands answer --help at once.
"""

from __future__ import annotations

import argparse
import os

from engine.errors import UserError
from engine.prompts import PROMPTS_DIR, prompt_file


def common_parser(doc: str) -> argparse.ArgumentParser:
    """Options shared with tools/analyze_prompts.py: which dataset, subset, model and threshold."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="DATASET.NAME, e.g. BTMRI (or its config name, btmri)")
    p.add_argument("--root", required=True, help="data root holding DATASET/")
    p.add_argument("--model", default="BiomedCLIP", help="backbone name, e.g. BiomedCLIP or TinyBiomedCLIP")
    p.add_argument("--weights", default="", help="local weights folder (MODEL.BACKBONE.PATH)")
    p.add_argument("--shots", type=int, default=16, help="few-shot K whose training subset is used (default 16)")
    p.add_argument("--seed", type=int, default=1, help="seed of the few-shot draw (default 1)")
    p.add_argument("--tau", type=float, default=None, help="threshold of the outlier test (default: the config's)")
    p.add_argument("--n-prompts", type=int, default=None, help="prompts per class (default: the config's)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--json", dest="json_out", help="also write the numbers to this JSON file")
    return p


def build_cfg(args):
    """A frozen config from the options of common_parser (plus --images, when the command has it)."""
    import backbones  # noqa: F401  (registers the model families)
    import datasets  # noqa: F401  (registers the benchmark readers)
    import trainers  # noqa: F401  (registers TRAINER.BIOMEDCOOP's defaults: TAU, N_PROMPTS)
    from datasets.benchmarks import spec_for
    from engine.config import get_cfg_default
    from engine.registry import BACKBONE_REGISTRY, DATASET_REGISTRY

    cfg = get_cfg_default()
    name = args.dataset
    try:
        name = spec_for(name).name
    except UserError:
        pass  # a registered non-benchmark reader keeps its own name
    DATASET_REGISTRY.get(name)  # unknown names fail here with the list of valid ones
    BACKBONE_REGISTRY.get(args.model)
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = args.root
    cfg.DATASET.NUM_SHOTS = args.shots
    cfg.SEED = args.seed
    cfg.MODEL.BACKBONE.NAME = args.model
    cfg.MODEL.BACKBONE.PATH = args.weights
    cfg.USE_CUDA = not args.cpu
    if args.tau is not None:
        cfg.TRAINER.BIOMEDCOOP.TAU = args.tau
    if args.n_prompts is not None:
        cfg.TRAINER.BIOMEDCOOP.N_PROMPTS = args.n_prompts
    if getattr(args, "images", 1) < 1 or cfg.TRAINER.BIOMEDCOOP.N_PROMPTS < 2:
        raise UserError("--images must be at least 1 and --n-prompts at least 2.")
    cfg.freeze()
    return cfg


def pick_images(items, count: int):
    """Up to `count` items, alternating over classes in label order so every class is represented."""
    groups: dict[int, list] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    order = [groups[k] for k in sorted(groups)]
    picked = []
    for i in range(max((len(g) for g in order), default=0)):
        picked += [g[i] for g in order if i < len(g)]
    return picked[:count]


def frozen_backbone(cfg):
    import torch

    from engine.registry import BACKBONE_REGISTRY

    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg).to(device).eval()
    return backbone.requires_grad_(False)


def backbone_cache_dir(cfg, dataset, backbone) -> str:
    """The folder where training keeps this backbone's image and prompt features for this dataset."""
    from engine.features import feature_cache_dir

    return os.path.join(feature_cache_dir(cfg, dataset.dataset_dir), backbone.cache_key())


def test_view_features(cfg, dataset, backbone, items, use_cache: bool = True):
    """(N, D) unit features of `items` under the test transform (no random crop: reproducible)."""
    import torch
    import torch.nn.functional as F

    from engine.data import build_transform, read_image, transform_spec
    from engine.features import FeatureCache, feature_cache_dir

    transform = build_transform(cfg, is_train=False)
    with torch.no_grad():
        if use_cache:
            cache = FeatureCache(feature_cache_dir(cfg, dataset.dataset_dir), backbone, backbone.device)
            feats = cache.get(items, transform, transform_spec(cfg, False), desc="images")[0]
        else:
            batch = torch.stack([transform(read_image(d.impath)) for d in items]).to(backbone.device)
            feats = backbone.encode_image(batch)
    return F.normalize(feats.float().to(backbone.device), dim=-1)


def inspect(cfg, prompts_dir: str = PROMPTS_DIR, images: int = 32, use_cache: bool = True) -> dict:
    """Scores and keep/drop decisions of every prompt index, from the trainer's own functions."""
    import torch

    from engine.prompts import load_ensemble
    from engine.registry import DATASET_REGISTRY
    from engine.utils import set_random_seed
    from trainers.prompt_bank import encode_prompt_bank, prompt_scores, select_prompts

    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)  # as train.py does before the few-shot draw
    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    classnames = dataset.classnames
    n_prompts, tau = cfg.TRAINER.BIOMEDCOOP.N_PROMPTS, cfg.TRAINER.BIOMEDCOOP.TAU
    ensemble = load_ensemble(cfg.DATASET.NAME, classnames, n_prompts, directory=prompts_dir)
    items = pick_images(dataset.train_x, images)
    if not items:
        raise UserError(f"The training split of {cfg.DATASET.NAME} is empty; nothing to score.")
    backbone = frozen_backbone(cfg)
    with torch.no_grad():
        image_feats = test_view_features(cfg, dataset, backbone, items, use_cache)
        # the trainer's own teacher bank, read from where training cached it
        bank = encode_prompt_bank(backbone, ensemble, backbone_cache_dir(cfg, dataset, backbone) if use_cache else None)
        scale = backbone.logit_scale.detach().float()
        scores = prompt_scores(image_feats, bank, scale).cpu()
        keep = select_prompts(scores, tau)
    std = scores.std()
    z = (scores - scores.mean()) / std if torch.isfinite(std) and std > 0 else torch.zeros_like(scores)
    return {
        "dataset": cfg.DATASET.NAME, "model": cfg.MODEL.BACKBONE.NAME, "shots": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED, "tau": tau, "images": [d.relpath or d.impath for d in items], "classnames": classnames,
        "prompts_file": prompt_file(cfg.DATASET.NAME, prompts_dir),
        "prompts": [
            {"index": i, "score": float(scores[i]), "z": float(z[i]), "kept": bool(keep[i]),
             "sentences": {c: ensemble[k][i] for k, c in enumerate(classnames)}}
            for i in range(n_prompts)
        ],
    }


def format_table(result: dict, show_class: str | None = None, width: int = 80) -> str:
    classnames = result["classnames"]
    show = show_class or classnames[0]
    if show not in classnames:
        raise UserError(f"--show-class '{show}' is not a class of {result['dataset']}: {classnames}.")
    prompts = result["prompts"]
    kept = sum(p["kept"] for p in prompts)
    lines = [
        f"{result['dataset']} / {result['model']}: {len(result['images'])} training image(s) of the "
        f"{result['shots']}-shot seed-{result['seed']} subset, tau {result['tau']}, prompts from "
        f"{os.path.relpath(result['prompts_file'])}",
        f"kept {kept} of {len(prompts)} prompt(s); score = mean over images of max over classes of "
        "scale*cos(image, prompt); z = (score - mean) / std",
        "",
        f"{'idx':>4}  {'score':>9}  {'z':>6}  {'status':<7}  sentence of '{show}'",
    ]
    for p in prompts:
        status = "keep" if p["kept"] else "DROP"
        text = p["sentences"][show]
        text = text if len(text) <= width else text[: width - 3] + "..."
        lines.append(f"{p['index']:>4}  {p['score']:>9.4f}  {p['z']:>6.2f}  {status:<7}  {text}")
    dropped = [p for p in prompts if not p["kept"]]
    if dropped:
        lines += ["", "Dropped prompts (index: the sentence of every class):"]
        for p in dropped:
            lines.append(f"  [{p['index']}] score {p['score']:.4f}, z {p['z']:+.2f}")
            lines += [f"      {c}: {s}" for c, s in p["sentences"].items()]
    return "\n".join(lines)
