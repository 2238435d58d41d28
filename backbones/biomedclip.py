"""BiomedCLIP: open_clip CustomTextCLIP with a timm ViT-B/16 and a PubMedBERT text tower.

Loading order: a local folder (MODEL.BACKBONE.PATH or $BIOMEDCOOP_WEIGHTS_DIR/BiomedCLIP, written
by tools/download_weights.py), then the open_clip hub name. `TinyBiomedCLIP` is a randomly
initialised twin on the same classes (a small timm ViT and a small BERT), built offline.
"""

from __future__ import annotations

import json
import logging
import os

import open_clip
import torch
from open_clip.tokenizer import HFTokenizer

from backbones.base import Backbone, hub_problem, load_family_config, missing_weights_error, weights_dir
from backbones.twins import bert_folder, prompt_vocab, seeded, toy_vocab
from engine.registry import BACKBONE_REGISTRY

WEIGHT_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")


class HFTextCLIP(Backbone):
    """An open_clip model whose text tower is a HuggingFace BERT (BiomedCLIP's layout)."""

    def __init__(self, model: open_clip.CustomTextCLIP, tokenizer: HFTokenizer, name: str):
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        bert = model.text.transformer
        self.pad_id = bert.config.pad_token_id
        self.token_width = bert.config.hidden_size
        self.embed_dim = model.text.output_dim
        self.context_length = tokenizer.context_length

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).sum(1)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text.transformer.embeddings.word_embeddings(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # BERT's embedding module adds positions, token types and LayerNorm to inputs_embeds, as it
        # does to looked-up ids, so spliced context vectors go through the exact same tower.
        text = self.model.text
        mask = (ids != self.pad_id).long()
        out = text.transformer(inputs_embeds=embeds, attention_mask=mask)
        return text.proj(text.pooler(out, mask))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    @property
    def text_tower(self):
        return self.model.text


def build_hf_text_clip(config: dict, text_dir: str, tokenizer_dir: str, weights: str | None, name: str) -> HFTextCLIP:
    """Build the open_clip classes from a config dict, a local BERT folder and (optionally) weights."""
    model_cfg = json.loads(json.dumps(config["model_cfg"]))
    text_cfg = model_cfg["text_cfg"]
    text_cfg["hf_model_name"] = text_dir
    text_cfg["hf_tokenizer_name"] = tokenizer_dir
    text_cfg["hf_model_pretrained"] = False
    model = open_clip.CustomTextCLIP(**model_cfg)
    if weights:
        open_clip.load_checkpoint(model, weights, strict=True)
    model.eval()
    tokenizer = HFTokenizer(tokenizer_dir, context_length=text_cfg["context_length"])
    return HFTextCLIP(model, tokenizer, name)


def _local_biomedclip(folder: str, config: dict, pretrained: bool) -> HFTextCLIP:
    weights = next((os.path.join(folder, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(folder, f))), None)
    if pretrained and weights is None:
        raise missing_weights_error("BiomedCLIP", f"no {WEIGHT_FILES[0]} in {folder}")
    text_sub = os.path.join(folder, "text")
    text_config = config["text_config"]
    if os.path.isfile(os.path.join(text_sub, "config.json")):
        with open(os.path.join(text_sub, "config.json"), encoding="utf-8") as f:
            text_config = json.load(f)
    tokenizer_dir = next(
        (d for d in (text_sub, folder) if os.path.isfile(os.path.join(d, "vocab.txt"))), None
    )
    if tokenizer_dir is None:
        raise missing_weights_error("BiomedCLIP", f"no vocab.txt in {text_sub} or {folder}")
    return build_hf_text_clip(config, bert_folder("BiomedBERT", text_config), tokenizer_dir,
                              weights if pretrained else None, "BiomedCLIP")


@BACKBONE_REGISTRY.register(name="BiomedCLIP")
def biomedclip(cfg=None) -> HFTextCLIP:
    config = load_family_config("BiomedCLIP")
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    folder = weights_dir(cfg, "BiomedCLIP")
    if folder:
        return _local_biomedclip(folder, config, pretrained)
    if not pretrained:
        # Full-size architecture with random weights (for benchmarks); a vocabulary of the prompt
        # files' words stands in for the real one, so prompts have realistic token counts.
        text_dir = bert_folder("BiomedBERT-promptvocab", config["text_config"], prompt_vocab())
        return build_hf_text_clip(config, text_dir, text_dir, None, "BiomedCLIP")
    hub_id = config["hub_id"]
    problem = hub_problem(hub_id.removeprefix("hf-hub:"), "open_clip_config.json")
    if problem:
        raise missing_weights_error("BiomedCLIP", problem)
    try:
        model, _ = open_clip.create_model_from_pretrained(hub_id)
        tokenizer = open_clip.get_tokenizer(hub_id)
    except Exception as err:  # network, auth or cache errors all mean the same thing to a user
        logging.getLogger(__name__).debug("hub load failed", exc_info=True)
        raise missing_weights_error("BiomedCLIP", f"loading {hub_id} failed ({err.__class__.__name__})") from err
    return HFTextCLIP(model.eval(), tokenizer, "BiomedCLIP")


@BACKBONE_REGISTRY.register(name="TinyBiomedCLIP")
def tiny_biomedclip(cfg=None) -> HFTextCLIP:
    config = load_family_config("TinyBiomedCLIP")
    text_dir = bert_folder("TinyBiomedBERT", config["text_config"], toy_vocab())
    with seeded():
        return build_hf_text_clip(config, text_dir, text_dir, None, "TinyBiomedCLIP")
