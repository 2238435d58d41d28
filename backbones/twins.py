"""Pieces the offline builds share: a locally registered timm ViT and two WordPiece vocabularies
(a toy one for the tiny twins, one covering the prompt files for the full-size random BiomedCLIP).

Twins are built on the real code path (open_clip classes, HF BERT, timm ViT) with random weights
drawn from a fixed seed, so they are deterministic, need no network and build in milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import string
import tempfile
from contextlib import contextmanager

import torch

TWIN_SEED = 0
TINY_VIT = "vit_biomedcoop_tiny_patch32_224"


@functools.lru_cache(maxsize=1)
def register_tiny_vit() -> str:
    """Register TINY_VIT with timm (a 2-layer, 64-wide ViT standing in for vit_base_patch16_224 in
    twins; open_clip asks timm for it by name). timm loads here, not when this module is imported."""
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    def vit_biomedcoop_tiny_patch32_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        model = VisionTransformer(img_size=224, patch_size=32, embed_dim=64, depth=2, num_heads=2, **kwargs)
        model.default_cfg = model.pretrained_cfg = {}
        return model

    register_model(vit_biomedcoop_tiny_patch32_224)
    return TINY_VIT


# Whole words a tiny vocabulary knows; anything else splits into letters, which is fine for a twin.
_WORDS = (
    "a an the of in on with and or to is are as at by for from photo image scan shows showing seen "
    "normal tumor tumour brain mri ct x ray chest lung lungs kidney cyst stone breast benign malignant "
    "glioma meningioma pituitary healthy knee osteoarthritis doubtful minimal moderate severe covid "
    "opacity viral pneumonia retina retinal diabetic retinopathy glaucoma cataract oct drusen edema "
    "macular choroidal neovascularization tissue cells immune stroma debris empty background adipose "
    "simple complex mucosal glands epithelium colon adenocarcinoma carcinoma squamous cell polyps dyed "
    "lifted resection margins esophagitis cecum pylorus z line ulcerative colitis keratosis actinic "
    "basal nevus melanocytic melanoma dermatofibroma vascular lesion bright dark round irregular mass "
    "large small left right wall fluid dense texture pattern margin border shape low high signal"
).split()


def toy_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return specials + chars + [f"##{c}" for c in chars] + sorted(set(_WORDS) - set(chars))


PROMPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clip_prompts")


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


@functools.lru_cache(maxsize=1)
def prompt_vocab(prompts_dir: str = PROMPTS_DIR) -> list[str]:
    """A WordPiece vocabulary holding every whole word of the prompt files (clip_prompts/*.json).

    With it, the full-size random BiomedCLIP splits the prompts into about as many tokens as the
    real PubMedBERT vocabulary does (a word each, rarer words a few pieces there), so the text
    tower's cost in benchmarks is realistic; the toy vocabulary splits most words into letters.
    Words are cut exactly as BERT's tokenizer cuts them (lower case, accents stripped, punctuation
    apart); every character they use is there too, alone and as a ##continuation, so no text maps
    to [UNK]. Sorted, so the same files always give the same vocabulary.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalise, split = BertNormalizer(lowercase=True), BertPreTokenizer()
    words: set[str] = set()
    for name in sorted(os.listdir(prompts_dir)):
        if name.endswith(".json"):
            with open(os.path.join(prompts_dir, name), encoding="utf-8") as f:
                for text in _strings(json.load(f)):
                    words.update(w for w, _ in split.pre_tokenize_str(normalise.normalize_str(text)))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in words for c in w})
    singles = set(chars)
    return specials + chars + [f"##{c}" for c in chars] + sorted(words - singles)


def cache_root() -> str:
    return os.environ.get("BIOMEDCOOP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "biomedcoop")


def materialise(name: str, files: dict[str, str]) -> str:
    """Write small text files (configs, vocabularies) once into a content-addressed cache folder."""
    digest = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    folder = os.path.join(cache_root(), "hf_configs", f"{name}-{digest}")
    if not os.path.isdir(folder):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".tmp-")
        for fname, text in files.items():
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
                f.write(text)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def bert_folder(name: str, text_config: dict, vocab: list[str] | None = None) -> str:
    """A folder HF can read a BERT config (and optionally a tokenizer) from, with no hub."""
    files = {"config.json": json.dumps(text_config, indent=2)}
    if vocab is not None:
        files["vocab.txt"] = "\n".join(vocab) + "\n"
        files["tokenizer_config.json"] = json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
             "model_max_length": text_config["max_position_embeddings"]}
        )
    return materialise(name, files)


@contextmanager
def seeded(seed: int = TWIN_SEED):
    """Draw random weights from a fixed seed without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
