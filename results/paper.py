"""The BiomedCoOp paper's published numbers (CVPR 2025: README table and overview figure), and the
names and order its tables use."""

from __future__ import annotations

# Display order of the methods: the paper's table order, then anything else alphabetically.
METHOD_ORDER = [
    "ZeroShot", "ZeroShotEnsemble", "ClipAdapter", "TipAdapter", "TipAdapterF", "LinearProbe",
    "LPPlusPlus", "CoOp", "CoCoOp", "KgCoOp", "ProGrad", "CLIPLoRA", "CLIPSVD", "BiomedCoOp",
    # The 2026 peers, after the paper's own methods: training-free, then prompt distillation, then two-tower.
    "GDA", "OGKD", "MaPLe", "BiomedDPT", "EviSteer",
]
# This toolkit's method names -> the names the BiomedCoOp paper prints.
PAPER_NAMES = {
    "ZeroShot": "BiomedCLIP (zero-shot)",
    "ZeroShotEnsemble": "Zero-shot BiomedCLIP++ (LLM prompt ensemble)",
    "ClipAdapter": "CLIP-Adapter",
    "TipAdapter": "Tip-Adapter",
    "TipAdapterF": "Tip-Adapter-F",
    "LinearProbe": "Standard LP",
    "LPPlusPlus": "LP++",
    "CoOp": "CoOp",
    "CoCoOp": "CoCoOp",
    "KgCoOp": "KgCoOp",
    "ProGrad": "ProGrad",
    "BiomedCoOp": "BiomedCoOp",
}
ZERO_SHOT_METHODS = {"ZeroShot", "ZeroShotEnsemble"}

# The paper's published averages (BiomedCoOp, CVPR 2025: README table and overview figure).
# Few-shot: mean over the 11 benchmarks, 3 seeds; key (method, backbone) -> {K: accuracy}.
# Zero-shot numbers do not depend on K and are stored under K = 0.
PAPER_FEWSHOT: dict[tuple[str, str], dict[int, float]] = {
    ("ClipAdapter", "BiomedCLIP"): {1: 44.66, 2: 43.91, 4: 44.36, 8: 45.42, 16: 46.69},
    ("TipAdapter", "BiomedCLIP"): {1: 49.19, 2: 52.36, 4: 57.33, 8: 61.98, 16: 67.15},
    ("TipAdapterF", "BiomedCLIP"): {1: 51.17, 2: 52.74, 4: 61.23, 8: 65.91, 16: 70.91},
    ("LinearProbe", "BiomedCLIP"): {1: 47.25, 2: 54.21, 4: 61.00, 8: 65.85, 16: 69.40},
    ("LPPlusPlus", "BiomedCLIP"): {1: 47.24, 2: 53.18, 4: 59.02, 8: 63.69, 16: 68.35},
    ("CoOp", "BiomedCLIP"): {1: 50.16, 2: 54.18, 4: 59.75, 8: 65.84, 16: 69.62},
    ("CoCoOp", "BiomedCLIP"): {1: 48.49, 2: 51.28, 4: 54.69, 8: 61.08, 16: 65.09},
    ("KgCoOp", "BiomedCLIP"): {1: 50.85, 2: 53.18, 4: 57.82, 8: 62.08, 16: 62.84},
    ("ProGrad", "BiomedCLIP"): {1: 51.88, 2: 54.71, 4: 60.42, 8: 65.61, 16: 67.13},
    ("BiomedCoOp", "BiomedCLIP"): {1: 57.03, 2: 59.13, 4: 63.95, 8: 68.32, 16: 72.42},
    ("BiomedCoOp", "CLIP"): {1: 42.11, 2: 44.52, 4: 53.48, 8: 56.36, 16: 62.37},
    ("BiomedCoOp", "PubMedCLIP"): {1: 44.54, 2: 47.76, 4: 55.68, 8: 61.78, 16: 67.30},
    ("BiomedCoOp", "PMCCLIP"): {1: 35.30, 2: 39.77, 4: 44.46, 8: 47.21, 16: 52.42},
    ("ZeroShot", "BiomedCLIP"): {0: 42.05},
    ("ZeroShotEnsemble", "BiomedCLIP"): {0: 52.3},
}
PAPER_FEWSHOT_DATASETS = 11
# Base-to-novel: mean over the 10 benchmarks with a class split, 16 shots, 3 seeds.
# "hm_convention" says how the paper's HM appears to have been aggregated: its BiomedCoOp HM is the
# HM of the averaged base and novel accuracies; every baseline's HM is lower than that, which only
# an average of per-dataset HMs explains.
PAPER_BASE2NEW: dict[tuple[str, str], dict] = {
    ("ZeroShot", "BiomedCLIP"): {"base": 47.84, "novel": 65.42, "hm": 53.81, "hm_convention": "mean_of_hms"},
    ("CoOp", "BiomedCLIP"): {"base": 73.85, "novel": 64.75, "hm": 67.23, "hm_convention": "mean_of_hms"},
    ("CoCoOp", "BiomedCLIP"): {"base": 72.26, "novel": 67.03, "hm": 67.22, "hm_convention": "mean_of_hms"},
    ("KgCoOp", "BiomedCLIP"): {"base": 68.36, "novel": 64.08, "hm": 64.61, "hm_convention": "mean_of_hms"},
    ("ProGrad", "BiomedCLIP"): {"base": 71.67, "novel": 66.93, "hm": 67.43, "hm_convention": "mean_of_hms"},
    ("BiomedCoOp", "BiomedCLIP"): {"base": 76.26, "novel": 73.92, "hm": 75.07, "hm_convention": "hm_of_means"},
}
PAPER_BASE2NEW_DATASETS = 10


def paper_backbone(backbone: str) -> tuple[str, bool]:
    """The backbone whose published numbers apply: a Tiny twin maps to its full model (flagged);
    random weights ("-random") match nothing."""
    if backbone.endswith("-random"):
        return "", False
    if backbone.startswith("Tiny"):
        return backbone[len("Tiny"):], True
    return backbone, False


def paper_fewshot(method: str, backbone: str, shots: int) -> float | None:
    numbers = PAPER_FEWSHOT.get((method, paper_backbone(backbone)[0]))
    if not numbers:
        return None
    return numbers.get(0 if method in ZERO_SHOT_METHODS else shots)


def paper_base2new(method: str, backbone: str) -> dict | None:
    return PAPER_BASE2NEW.get((method, paper_backbone(backbone)[0]))
