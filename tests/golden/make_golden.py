"""Stored outputs of the tiny twins on fixed inputs, checked by tests/test_backbones.py.

A twin's weights come from a fixed seed, so its features on fixed inputs only change when the
code path changes: our backbone code, or open_clip / timm / transformers / torch initialisation.
When such a change is intended, regenerate and commit the JSON files:

    python tests/golden/make_golden.py            # every twin
    python tests/golden/make_golden.py TinyCLIP   # one twin
"""

from __future__ import annotations

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

TWINS = ("TinyBiomedCLIP", "TinyCLIP", "TinyPubMedCLIP", "TinyPMCCLIP")
TEXTS = ("a photo of a glioma tumor.", "normal brain mri scan showing no mass", "covid lungs")
N_VALUES = 8  # leading feature values stored per row
DIGITS = 6


def golden_images() -> torch.Tensor:
    """Two smooth 224x224 RGB patterns in roughly the range of normalised pixels (no RNG involved)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    first = torch.stack([torch.sin(3 * x), torch.cos(2 * y), x * y])
    second = torch.stack([torch.cos(5 * x * y), torch.sin(4 * y), x - y])
    return torch.stack([first, second]) * 1.5


def _round(t: torch.Tensor) -> list:
    return [[round(float(v), DIGITS) for v in row] for row in t]


def compute(name: str) -> dict:
    """Everything stored for one twin; the test recomputes it and compares."""
    import backbones  # noqa: F401  (registers the twins)
    from engine.registry import BACKBONE_REGISTRY

    model = BACKBONE_REGISTRY.get(name)()
    with torch.no_grad():
        ids = model.tokenize(list(TEXTS))
        image = model.encode_image(golden_images())
        text = model.encode_text(model.trim(ids))
    return {
        "name": name,
        "texts": list(TEXTS),
        "token_ids": ids[:, :12].tolist(),
        "real_lengths": model.real_lengths(ids).tolist(),
        "image_features": _round(image[:, :N_VALUES]),
        "image_norms": [round(float(v), DIGITS) for v in image.norm(dim=-1)],
        "text_features": _round(text[:, :N_VALUES]),
        "text_norms": [round(float(v), DIGITS) for v in text.norm(dim=-1)],
        "logit_scale": round(float(model.logit_scale.detach()), DIGITS),
    }


def path_of(name: str) -> str:
    return os.path.join(HERE, f"{name}.json")


def main(names: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in names or TWINS:
        record = compute(name)
        body = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in record.items())
        with open(path_of(name), "w", encoding="utf-8") as f:
            f.write("{\n" + body + "\n}\n")
        print(f"wrote {path_of(name)}")


if __name__ == "__main__":
    main(sys.argv[1:])
