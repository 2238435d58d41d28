"""PMC-CLIP: a ModifiedResNet-50 image tower and a PubMedBERT text tower (with its pooler).

Text path, as the reference's BiomedCoOp/CoOp PMC-CLIP trainers run it: the BiomedBERT WordPiece
tokenizer padded to 77 tokens, BERT with the attention mask, `pooler_output` (tanh(dense([CLS])))
and `@ text_projection` (768x768). Spliced prompts are fed as `inputs_embeds` with the same mask;
BERT adds position and token-type embeddings to them exactly as to looked-up ids. The logit scale
is the constant exp(4.4292) the reference hard-codes.

Every text path passes the attention mask, as the reference does (its zero-shot path, prompt
learner and BiomedCoOp teacher bank alike).

Differences from the reference, on purpose:
- BatchNorm: the reference's BiomedCoOp puts the whole model in train mode, so the ResNet's
  BatchNorm normalises each batch of 4 with batch statistics and drifts its running statistics
  (docs/offline.md, "PMC-CLIP BatchNorm"). Image features here are computed once, in
  eval mode (running statistics from the checkpoint), and cached; that is deterministic and
  independent of batch composition, but not bit-for-bit what the reference's training step saw.

Weights, in <DIR>/PMCCLIP/ (tools/download_weights.py PMCCLIP): text_encoder.pth,
image_encoder(resnet50).pth, text_projection_layer.pth (from huggingface.co/datasets/axiong/pmc_oa)
and text/{config.json, vocab.txt, tokenizer_config.json} (microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract).
"""

from __future__ import annotations

import functools
import json
import math
import os

import torch
from torch import nn

from backbones.base import Backbone, load_family_config
from backbones.tower_hooks import TowerLayers, TowerUnsupported
from backbones.twins import bert_folder, seeded, toy_vocab
from backbones.weights import load_weights, locate_weights, read_weights, require, torch_load
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY


class PMCCLIPModel(nn.Module):
    """The three pieces PMC-CLIP's checkpoint files hold."""

    def __init__(self, config: dict, text_config: dict):
        from open_clip.modified_resnet import ModifiedResNet
        from transformers import BertConfig, BertModel

        super().__init__()
        self.visual = ModifiedResNet(**config["vision_cfg"])
        if config.get("vision_init") == "kaiming":
            # A random ResNet with PyTorch's default conv init and zeroed last BatchNorm of each block
            # shrinks activations ~30x over the four stages, so every image gets the same feature;
            # the twin uses He init and unit BatchNorm weights so its random features tell images apart.
            for module in self.visual.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
        self.text = BertModel(BertConfig(**text_config), add_pooling_layer=True)
        width = self.text.config.hidden_size
        self.text_projection = nn.Parameter(torch.empty(width, config["embed_dim"]))
        nn.init.normal_(self.text_projection, std=width**-0.5)
        self.register_buffer("logit_scale", torch.tensor(math.exp(config["logit_scale"])), persistent=False)


@functools.lru_cache(maxsize=4)
def bert_tokenizer(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


class PMCCLIP(Backbone):
    def __init__(self, model: PMCCLIPModel, tokenizer_dir: str, context_length: int, name: str):
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer_dir = tokenizer_dir
        self.context_length = context_length
        self.pad_id = model.text.config.pad_token_id
        self.token_width = model.text.config.hidden_size
        self.embed_dim = model.text_projection.shape[1]
        self.image_size = model.visual.image_size

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.visual(images)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        encoded = bert_tokenizer(self.tokenizer_dir)(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return encoded["input_ids"]

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).sum(1)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text.embeddings.word_embeddings(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model.text(input_ids=ids, attention_mask=(ids != self.pad_id).long())
        return out.pooler_output @ self.model.text_projection

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        out = self.model.text(inputs_embeds=embeds, attention_mask=(ids != self.pad_id).long())
        return out.pooler_output @ self.model.text_projection

    def text_pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        # BERT's pooler (tanh of a dense layer) reads [CLS], the first token.
        return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    @property
    def text_tower(self):
        return self.model.text

    def tower_layers(self, tower: str) -> TowerLayers:
        if tower == "image":
            raise TowerUnsupported("is a ResNet-50 (ModifiedResNet) with no token stream to hold prompts or steering")
        return TowerLayers(list(self.model.text.encoder.layer), True, self.token_width)


def _pmc_state(path: str) -> dict:
    state = torch_load(path)
    return {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("position_ids")}


def _local_pmcclip(folder: str, config: dict, name: str) -> PMCCLIP:
    text_dir = os.path.join(folder, "text")
    (vocab,) = require(folder, name, "text/vocab.txt")
    text_config = config["text_config"]
    if os.path.isfile(os.path.join(text_dir, "config.json")):
        with open(os.path.join(text_dir, "config.json"), encoding="utf-8") as f:
            text_config = {**text_config, **json.load(f)}
    spec = config["weights"]
    image_path, text_path, proj_path = require(folder, name, spec["image"], spec["text"], spec["projection"])
    model = PMCCLIPModel(config, text_config)
    architecture = "backbones/configs/PMCCLIP.json and text/config.json"
    load_weights(model.visual, image_path, name, read=_pmc_state, architecture=architecture)
    load_weights(model.text, text_path, name, read=_pmc_state, architecture=architecture)
    projection = read_weights(proj_path, name)
    if tuple(projection.shape) != tuple(model.text_projection.shape):
        raise UserError(f"{name}: {spec['projection']} has shape {tuple(projection.shape)}, expected "
                        f"{tuple(model.text_projection.shape)}.")
    with torch.no_grad():
        model.text_projection.copy_(projection)
    tokenizer_dir = os.path.dirname(vocab)
    return PMCCLIP(model.eval(), tokenizer_dir, config["context_length"], name)


@BACKBONE_REGISTRY.register(name="PMCCLIP")
def pmcclip(cfg=None) -> PMCCLIP:
    config = load_family_config("PMCCLIP")
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    if not pretrained:
        # Full-size architecture with random weights (for benchmarks); a toy vocabulary stands in
        # for the real one, which only changes how words split into tokens.
        text_dir = bert_folder("PMCBERT-toyvocab", config["text_config"], toy_vocab())
        with seeded():
            model = PMCCLIPModel(config, config["text_config"])
        return PMCCLIP(model.eval(), text_dir, config["context_length"], "PMCCLIP")
    return _local_pmcclip(locate_weights(cfg, "PMCCLIP"), config, "PMCCLIP")


@BACKBONE_REGISTRY.register(name="TinyPMCCLIP")
def tiny_pmcclip(cfg=None) -> PMCCLIP:
    config = load_family_config("TinyPMCCLIP")
    text_dir = bert_folder("TinyPMCBERT", config["text_config"], toy_vocab())
    with seeded():
        model = PMCCLIPModel(config, config["text_config"])
    return PMCCLIP(model.eval(), text_dir, config["context_length"], "TinyPMCCLIP")
