"""CLIP ViT-B/16 (OpenAI) and PubMedCLIP (ViT-B/32 fine-tuned on ROCO): open_clip's `CLIP` class.

Both use the CLIP text transformer: BPE tokens (77), token embedding + positional embedding, a
causal transformer, the final LayerNorm, the feature at the end-of-text token (the largest id),
then `text_projection`. Spliced prompts go through the same steps with the positional embedding
and the causal mask cut to the prompt length, so trimmed prompts give the 77-token features.

Weights (see backbones/weights.py for the folder layout and tools/download_weights.py):
- CLIP: <DIR>/CLIP/ViT-B-16.pt, OpenAI's file (a TorchScript archive; its URL embeds its SHA-256).
- PubMedCLIP: <DIR>/PubMedCLIP/PubMedCLIP_ViT32.pth, whose "state_dict" entry is an OpenAI-format
  CLIP state dict that replaces every ViT-B/32 weight (so the OpenAI ViT-B/32 file is not needed).
The reference builds the OpenAI model in fp16 (OpenAI's `build_model`), loads the state dict into
it and casts to fp32; "fp16_weights" in the config repeats that rounding, so PubMedCLIP's fp32
weights are rounded exactly as in the paper's runs (for CLIP, whose file is fp16, it changes nothing).
"""

from __future__ import annotations

import functools
import pickle

import open_clip
import torch
from open_clip.model import convert_weights_to_lp
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import text_global_pool

from backbones.base import Backbone, load_family_config, missing_weights_error
from backbones.twins import seeded
from backbones.weights import load_state_or_explain, locate_weights, require
from engine.registry import BACKBONE_REGISTRY

# Metadata in OpenAI's files, and the causal mask a TorchScript copy of an open_clip model carries.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


@functools.lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> SimpleTokenizer:
    """open_clip's copy of the OpenAI BPE tokenizer (its vocabulary ships inside the package)."""
    return SimpleTokenizer(context_length=context_length)


class OpenAICLIP(Backbone):
    """An open_clip `CLIP` (ViT image tower, CLIP text transformer) behind the backbone contract."""

    def __init__(self, model: open_clip.CLIP, name: str):
        super().__init__()
        self.name = name
        self.model = model
        self.context_length = model.context_length
        self.token_width = model.token_embedding.embedding_dim
        self.embed_dim = model.text_projection.shape[1]
        self.image_size = model.visual.image_size[0]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return clip_tokenizer(self.context_length)(texts)

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        # Everything up to the end-of-text token, which has the largest id (pad id 0 is also "!").
        return ids.argmax(dim=-1) + 1

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] == self.context_length:
            return self.model.encode_text(ids)  # open_clip's own path
        return self.encode_text_embeddings(self.embed_tokens(ids), ids)

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # open_clip's CLIP.encode_text after the embedding lookup, cut to length L (a causal mask
        # means no token sees the ones after it, so dropping trailing padding changes nothing).
        model = self.model
        length = embeds.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = embeds.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=model.text_eos_id)
        if isinstance(model.text_projection, torch.nn.Linear):
            return model.text_projection(x)
        return x @ model.text_projection

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    @property
    def text_tower(self):
        return self.model.transformer


def build_clip(config: dict) -> open_clip.CLIP:
    """The architecture from the config's model_cfg, randomly initialised (with the caller's RNG)."""
    return open_clip.CLIP(**config["model_cfg"]).eval()


def read_openai_state_dict(path: str, fmt: str) -> dict[str, torch.Tensor]:
    """An OpenAI-format CLIP state dict from OpenAI's TorchScript file or a checkpoint's 'state_dict' entry."""
    if fmt == "openai":
        try:
            state = torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError:  # not TorchScript: a plain state dict saved with torch.save
            state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("state_dict", checkpoint)
    return {key.removeprefix("module."): value for key, value in state.items() if key not in OPENAI_EXTRA_KEYS}


def load_openai_weights(
    model: open_clip.CLIP, state: dict, fp16_weights: bool, name: str, what: str
) -> open_clip.CLIP:
    if fp16_weights:
        convert_weights_to_lp(model, torch.float16)  # the reference's fp16 model; loading rounds into it
    load_state_or_explain(model, state, what, name)
    return model.float().eval()


def clip_family(name: str, cfg=None) -> OpenAICLIP:
    """CLIP or PubMedCLIP: local/cached weights, or random weights at full size when not PRETRAINED."""
    config = load_family_config(name)
    if cfg is not None and not cfg.MODEL.BACKBONE.PRETRAINED:
        with seeded():
            return OpenAICLIP(build_clip(config), name)
    spec = config["weights"]
    (path,) = require(locate_weights(cfg, name), name, spec["file"])
    try:
        state = read_openai_state_dict(path, spec["format"])
    except (RuntimeError, OSError, ValueError, KeyError, AttributeError, pickle.UnpicklingError) as err:
        raise missing_weights_error(name, f"{path} could not be read ({err.__class__.__name__}: {err})") from err
    model = load_openai_weights(build_clip(config), state, config.get("fp16_weights", False), name, path)
    return OpenAICLIP(model, name)


@BACKBONE_REGISTRY.register(name="CLIP")
def clip_vit_b16(cfg=None) -> OpenAICLIP:
    return clip_family("CLIP", cfg)


@BACKBONE_REGISTRY.register(name="PubMedCLIP")
def pubmedclip(cfg=None) -> OpenAICLIP:
    return clip_family("PubMedCLIP", cfg)


def tiny_clip_family(name: str) -> OpenAICLIP:
    with seeded():
        return OpenAICLIP(build_clip(load_family_config(name)), name)


@BACKBONE_REGISTRY.register(name="TinyCLIP")
def tiny_clip(cfg=None) -> OpenAICLIP:
    return tiny_clip_family("TinyCLIP")


@BACKBONE_REGISTRY.register(name="TinyPubMedCLIP")
def tiny_pubmedclip(cfg=None) -> OpenAICLIP:
    return tiny_clip_family("TinyPubMedCLIP")
