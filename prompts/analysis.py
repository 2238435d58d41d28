"""How good is a prompt ensemble, measured through a frozen model (tools/analyze_prompts.py): per class
diversity, alignment with the images, margin and the share the outlier test keeps.

torch is imported inside the functions, so the command answers --help at once.
"""

from __future__ import annotations

import os

from engine.errors import UserError
from prompts.inspection import backbone_cache_dir, frozen_backbone, test_view_features


def class_metrics(bank, feats, labels, tau: float) -> list[dict]:
    """bank: (C, N, D) unit sentence features; feats: (M, D) unit image features with labels (M,)."""
    import torch
    import torch.nn.functional as F

    from trainers.prompt_bank import prompt_scores, select_prompts

    n_cls, n = bank.shape[:2]
    means = F.normalize(bank.mean(dim=1), dim=-1)
    rows = []
    for c in range(n_cls):
        gram = bank[c] @ bank[c].t()
        own = feats[labels == c]
        sims = own @ means.t()  # (images of c, C)
        others = torch.cat([sims[:, :c], sims[:, c + 1 :]], dim=1)
        rows.append({
            "diversity": float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))),
            "alignment": float((bank[c] @ own.t()).mean()) if len(own) else float("nan"),
            "margin": float((sims[:, c] - others.max(dim=1).values).mean()) if len(own) and n_cls > 1
            else float("nan"),
            "kept": float(select_prompts(prompt_scores(own, bank, 1.0), tau).float().mean()) if len(own)
            else float("nan"),
        })
    rows.append({
        "diversity": sum(r["diversity"] for r in rows) / n_cls,
        "alignment": sum(r["alignment"] for r in rows) / n_cls,
        "margin": sum(r["margin"] for r in rows) / n_cls,
        "kept": float(select_prompts(prompt_scores(feats, bank, 1.0), tau).float().mean()),
    })
    return rows


def analyze(cfg, prompt_paths: list[str]) -> dict:
    import torch

    from engine.prompts import load_ensemble, prompt_file
    from engine.registry import DATASET_REGISTRY
    from engine.utils import set_random_seed
    from trainers.prompt_bank import encode_prompt_bank

    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)  # the few-shot draw train.py makes for this seed
    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    items = dataset.train_x
    if not items:
        raise UserError(f"The training split of {cfg.DATASET.NAME} is empty; nothing to measure.")
    backbone = frozen_backbone(cfg)
    feats = test_view_features(cfg, dataset, backbone, items)
    labels = torch.tensor([d.label for d in items], device=feats.device)
    n_prompts, tau = cfg.TRAINER.BIOMEDCOOP.N_PROMPTS, cfg.TRAINER.BIOMEDCOOP.TAU
    ensembles = {}
    for path in prompt_paths:
        path = path or prompt_file(cfg.DATASET.NAME)
        sentences = load_ensemble(cfg.DATASET.NAME, dataset.classnames, n_prompts, path=path)
        bank = encode_prompt_bank(backbone, sentences, backbone_cache_dir(cfg, dataset, backbone)).to(feats.device)
        ensembles[path] = class_metrics(bank, feats, labels, tau)
    return {"dataset": cfg.DATASET.NAME, "model": cfg.MODEL.BACKBONE.NAME, "shots": cfg.DATASET.NUM_SHOTS,
            "seed": cfg.SEED, "tau": tau, "n_prompts": n_prompts, "images": len(items),
            "classnames": list(dataset.classnames), "ensembles": ensembles}


def format_table(result: dict) -> str:
    from tabulate import tabulate

    paths = list(result["ensembles"])
    names = [p if os.path.relpath(p).startswith("..") else os.path.relpath(p) for p in paths]
    headers = ["class"] + [f"{m}\n{chr(65 + i)}" for m in ("diversity", "alignment", "margin", "kept")
                           for i in range(len(paths))]
    rows = []
    for k, name in enumerate([*result["classnames"], "all"]):
        row = [name]
        for metric in ("diversity", "alignment", "margin", "kept"):
            for path in paths:
                value = result["ensembles"][path][k][metric]
                row.append(f"{100 * value:.0f}%" if metric == "kept" else f"{value:.3f}")
        rows.append(row)
    legend = "  ".join(f"{chr(65 + i)} = {n}" for i, n in enumerate(names))
    return (f"{result['dataset']} / {result['model']}: {result['images']} training image(s) of the "
            f"{result['shots']}-shot seed-{result['seed']} subset, {result['n_prompts']} sentences per class, "
            f"tau {result['tau']}\n{legend}\n\n" + tabulate(rows, headers=headers, stralign="right"))
