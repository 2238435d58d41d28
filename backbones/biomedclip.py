"""BiomedCLIP: a named preset of the OpenCLIP family (backbones/open_clip_family.py).

open_clip's CustomTextCLIP with a timm ViT-B/16 and a PubMedBERT text tower; its hub id and config
are kept in backbones/configs/BiomedCLIP.json. Loading order: a local folder (MODEL.BACKBONE.PATH or
$BIOMEDCOOP_WEIGHTS_DIR/BiomedCLIP, written by tools/download_weights.py), whose own
open_clip_config.json gives the architecture (the preset's config stands in when it has none), then
the hub id. `TinyBiomedCLIP` is a randomly initialised twin on the same classes (a small timm ViT and
a small BERT), built offline.
"""

from __future__ import annotations

from backbones.base import Backbone, load_family_config, weights_dir
from backbones.open_clip_family import (
    HFTextCLIP,
    build_open_clip,
    open_clip_from_folder,
    open_clip_from_hub,
    open_clip_tokenizer,
    wrap,
)
from backbones.twins import bert_folder, prompt_vocab, seeded, toy_vocab
from engine.registry import BACKBONE_REGISTRY

__all__ = ["HFTextCLIP", "biomedclip", "tiny_biomedclip"]


def build_hf_text_clip(config: dict, text_dir: str, name: str) -> Backbone:
    """The preset's architecture with random weights, its BERT config and vocabulary in `text_dir`."""
    text_cfg = config["model_cfg"]["text_cfg"]
    model = build_open_clip(config["model_cfg"], name, text_dir)
    return wrap(model, open_clip_tokenizer(text_cfg, text_dir, name), name, model_cfg=config["model_cfg"])


def _local_biomedclip(folder: str, config: dict, pretrained: bool) -> Backbone:
    """A BiomedCLIP folder: its open_clip_config.json (else the preset's), weights, text/config.json, vocab."""
    return open_clip_from_folder(folder, "BiomedCLIP", pretrained, fallback={"model_cfg": config["model_cfg"]},
                                 fallback_text_config=config.get("text_config"))


@BACKBONE_REGISTRY.register(name="BiomedCLIP")
def biomedclip(cfg=None) -> Backbone:
    config = load_family_config("BiomedCLIP")
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    folder = weights_dir(cfg, "BiomedCLIP")
    if folder:
        return _local_biomedclip(folder, config, pretrained)
    if not pretrained:
        # Full-size architecture with random weights (for benchmarks); a vocabulary of the prompt
        # files' words stands in for the real one, so prompts have realistic token counts.
        text_dir = bert_folder("BiomedBERT-promptvocab", config["text_config"], prompt_vocab())
        return build_hf_text_clip(config, text_dir, "BiomedCLIP")
    return open_clip_from_hub(config["hub_id"], "BiomedCLIP", source="BiomedCLIP")


@BACKBONE_REGISTRY.register(name="TinyBiomedCLIP")
def tiny_biomedclip(cfg=None) -> Backbone:
    config = load_family_config("TinyBiomedCLIP")
    text_dir = bert_folder("TinyBiomedBERT", config["text_config"], toy_vocab())
    with seeded():
        return build_hf_text_clip(config, text_dir, "TinyBiomedCLIP")
