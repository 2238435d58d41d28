"""CLIP ViT-B/16 (OpenAI) and PubMedCLIP (ViT-B/32 fine-tuned on ROCO): open_clip's `CLIP` class.

`TextTransformerCLIP` is the backbone for any open_clip model whose text tower is open_clip's own
TextTransformer (the `CLIP` class, or `CustomTextCLIP` holding that tower); the OpenCLIP family
(backbones/open_clip_family.py) uses it too.

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

import torch

from backbones.base import Backbone, load_family_config
from backbones.tower_hooks import TowerLayers, TowerUnsupported
from backbones.twins import seeded
from backbones.weights import load_weights, locate_weights, require
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

# Metadata in OpenAI's files, and the causal mask a TorchScript copy of an open_clip model carries.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


@functools.lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77):
    """open_clip's copy of the OpenAI BPE tokenizer (its vocabulary ships inside the package)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def _text_pieces(model) -> tuple[torch.nn.Module, str, int | None]:
    """(the module holding the text transformer's pieces, its pool type, its end-of-text id).

    open_clip's CLIP copies its TextTransformer's pieces (token_embedding, positional_embedding,
    transformer, ln_final, text_projection, attn_mask) onto itself; CustomTextCLIP keeps the tower
    whole as `.text`. Both are read through the same names.
    """
    if hasattr(model, "token_embedding"):
        return model, model.text_pool_type, getattr(model, "text_eos_id", None)
    return model.text, model.text.pool_type, getattr(model.text, "eos_id", None)


def open_clip_image_tokens(visual, images: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(global feature, projected patch tokens) of an open_clip image tower, in one pass.

    A timm trunk (BiomedCLIP): the trunk's normed token sequence, the global feature through the
    trunk's own pooling and open_clip's head, the patch tokens through the same head (OGKD applies the
    head's projection to them). open_clip's ViT: the global feature by its own pooling and `proj`,
    the patch tokens through `ln_post` and `proj`. Attention-pooled or convolutional towers refuse.
    """
    if hasattr(visual, "trunk"):
        trunk, head = visual.trunk, visual.head
        if not hasattr(trunk, "forward_features") or not hasattr(trunk, "num_prefix_tokens") \
                or any(hasattr(head, k) for k in ("pool", "attn_pool")):
            raise UserError(f"{name}: this timm image tower has no per-patch tokens in the joint space.")
        tokens = trunk.forward_features(images)
        return head(trunk.forward_head(tokens)), head(tokens[:, trunk.num_prefix_tokens:])
    if not hasattr(visual, "_embeds") or getattr(visual, "attn_pool", None) is not None \
            or visual.pool_type not in ("tok", "avg"):
        raise UserError(f"{name}: its image tower gives no per-patch tokens in the joint space (a ResNet, or "
                        "attention pooling); use a ViT backbone for methods that need patch tokens.")
    x = visual.transformer(visual._embeds(images))
    pooled, _ = visual._pool(x)
    patches = visual.ln_post(x[:, 1:])  # the final norm per token (before or after pooling: same weights)
    if visual.proj is not None:
        pooled, patches = pooled @ visual.proj, patches @ visual.proj
    return pooled, patches


def open_clip_image_layers(visual) -> TowerLayers:
    """The hook points of an open_clip image tower: a timm ViT trunk (BiomedCLIP) or open_clip's own
    VisionTransformer; the layer-0 image prompts enter before the pre-norm (norm_pre / ln_pre)."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "norm_pre"):
        return TowerLayers(list(trunk.blocks), True, trunk.embed_dim, entry=trunk.norm_pre)
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks") and hasattr(visual, "ln_pre"):
        return TowerLayers(list(transformer.resblocks), getattr(transformer, "batch_first", True),
                           transformer.width, entry=visual.ln_pre)
    kind = type(trunk if trunk is not None else visual).__name__
    raise TowerUnsupported(f"is a {kind} with no transformer blocks to hold prompts or steering")


class TextTransformerCLIP(Backbone):
    """An open_clip model whose text tower is open_clip's TextTransformer (CLIP, or CustomTextCLIP
    with that tower), behind the backbone contract. `tokenizer` defaults to the OpenAI BPE."""

    def __init__(self, model, name: str, tokenizer=None):
        super().__init__()
        self.name = name
        self.model = model
        text, pool, _ = _text_pieces(model)
        if getattr(text, "cls_emb", None) is not None:
            raise UserError(f"{name}: text towers with an appended class token (CoCa's) are not supported.")
        self.context_length = text.positional_embedding.shape[0]
        self.token_width = text.token_embedding.embedding_dim
        proj = text.text_projection
        if proj is None:
            self.embed_dim = self.token_width
        else:
            self.embed_dim = proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1]
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self._tokenizer = tokenizer
        # The end-of-text token has the largest id in OpenAI's BPE; other tokenizers mark the end by padding.
        self.end_is_largest_id = tokenizer is None or type(tokenizer).__name__ == "SimpleTokenizer"
        self.pad_id = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0
        # Trimming padding is exact when no kept token sees the padding (causal mask) and the pooled
        # token is a real one; a bidirectional tower or 'last' pooling reads the padding, so it keeps it.
        self.trim_is_exact = text.attn_mask is not None and pool in ("argmax", "eos", "first")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return open_clip_image_tokens(self.model.visual, images, self.name)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return (self._tokenizer or clip_tokenizer(self.context_length))(texts)

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        if self.end_is_largest_id:
            # Everything up to the end-of-text token (pad id 0 is also "!", so padding is not counted).
            return ids.argmax(dim=-1) + 1
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        return ((ids != self.pad_id) * positions).amax(dim=1)

    def trim(self, ids: torch.Tensor) -> torch.Tensor:
        return super().trim(ids) if self.trim_is_exact else ids

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return _text_pieces(self.model)[0].token_embedding(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] == self.context_length:
            return self.model.encode_text(ids)  # open_clip's own path
        return self.encode_text_embeddings(self.embed_tokens(ids), ids)

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # open_clip's text encoding after the embedding lookup, cut to length L (a causal mask
        # means no token sees the ones after it, so dropping trailing padding changes nothing).
        from open_clip.transformer import text_global_pool

        text, pool, eos_id = _text_pieces(self.model)
        length = embeds.shape[1]
        cast_dtype = text.transformer.get_cast_dtype()
        x = embeds.to(cast_dtype) + text.positional_embedding[:length].to(cast_dtype)
        mask = text.attn_mask[:length, :length] if text.attn_mask is not None else None
        x = text.ln_final(text.transformer(x, attn_mask=mask))
        x = text_global_pool(x, ids, pool, eos_token_id=eos_id)
        if text.text_projection is None:
            return x
        if isinstance(text.text_projection, torch.nn.Linear):
            return text.text_projection(x)
        return x @ text.text_projection

    def text_pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        # The rows text_global_pool reads for each of open_clip's pool types.
        _, pool, eos_id = _text_pieces(self.model)
        if pool == "argmax":  # OpenAI's BPE: the end-of-text token has the largest id
            return ids.argmax(dim=-1)
        if pool == "eos":
            return (ids == eos_id).int().argmax(dim=-1)
        if pool in ("first", "last"):
            return torch.full((ids.shape[0],), 0 if pool == "first" else ids.shape[1] - 1, dtype=torch.long,
                              device=ids.device)
        raise TowerUnsupported(f"has pool type '{pool}', which reads no single token")

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    @property
    def text_tower(self):
        return self.model.transformer if hasattr(self.model, "token_embedding") else self.model.text

    def tower_layers(self, tower: str) -> TowerLayers:
        if tower == "image":
            return open_clip_image_layers(self.model.visual)
        transformer = _text_pieces(self.model)[0].transformer
        return TowerLayers(list(transformer.resblocks), getattr(transformer, "batch_first", True), transformer.width)


def build_clip(config: dict):
    """The architecture from the config's model_cfg, randomly initialised (with the caller's RNG)."""
    import open_clip

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


def clip_family(name: str, cfg=None) -> TextTransformerCLIP:
    """CLIP or PubMedCLIP: local/cached weights, or random weights at full size when not PRETRAINED."""
    config = load_family_config(name)
    if cfg is not None and not cfg.MODEL.BACKBONE.PRETRAINED:
        with seeded():
            return TextTransformerCLIP(build_clip(config), name)
    spec = config["weights"]
    (path,) = require(locate_weights(cfg, name), name, spec["file"])
    model = build_clip(config)
    if config.get("fp16_weights", False):
        from open_clip.model import convert_weights_to_lp

        convert_weights_to_lp(model, torch.float16)  # the reference's fp16 model; loading rounds into it
    load_weights(model, path, name, read=lambda p: read_openai_state_dict(p, spec["format"]),
                 architecture=f"backbones/configs/{name}.json")
    return TextTransformerCLIP(model.float().eval(), name)


@BACKBONE_REGISTRY.register(name="CLIP")
def clip_vit_b16(cfg=None) -> TextTransformerCLIP:
    return clip_family("CLIP", cfg)


@BACKBONE_REGISTRY.register(name="PubMedCLIP")
def pubmedclip(cfg=None) -> TextTransformerCLIP:
    return clip_family("PubMedCLIP", cfg)


# Newer models as presets of this family: open_clip's CLIP class with a config and a weights file.
@BACKBONE_REGISTRY.register(name="CLIPViTL14")
def clip_vit_l14(cfg=None) -> TextTransformerCLIP:
    """OpenAI's CLIP ViT-L/14 (open_clip 'ViT-L-14:openai'), OpenAI's own file."""
    return clip_family("CLIPViTL14", cfg)


@BACKBONE_REGISTRY.register(name="BMCCLIP")
def bmc_clip(cfg=None) -> TextTransformerCLIP:
    """BMC-CLIP (BIOMEDICA/BMC_CLIP_CF): an open_clip ViT-L-14 whose checkpoint keeps the weights under
    'state_dict' with DataParallel's 'module.' prefix (read_openai_state_dict removes it)."""
    return clip_family("BMCCLIP", cfg)


def tiny_clip_family(name: str) -> TextTransformerCLIP:
    with seeded():
        return TextTransformerCLIP(build_clip(load_family_config(name)), name)


@BACKBONE_REGISTRY.register(name="TinyCLIPViTL14")
def tiny_clip_vit_l14(cfg=None) -> TextTransformerCLIP:
    return tiny_clip_family("TinyCLIPViTL14")


@BACKBONE_REGISTRY.register(name="TinyBMCCLIP")
def tiny_bmc_clip(cfg=None) -> TextTransformerCLIP:
    return tiny_clip_family("TinyBMCCLIP")


# Each preset states its own image preprocessing (train.py applies it to INPUT.*; see preset_input).
for _builder, _name in ((clip_vit_l14, "CLIPViTL14"), (bmc_clip, "BMCCLIP"),
                        (tiny_clip_vit_l14, "TinyCLIPViTL14"), (tiny_bmc_clip, "TinyBMCCLIP")):
    _builder.preprocess = load_family_config(_name)["preprocess"]


@BACKBONE_REGISTRY.register(name="TinyCLIP")
def tiny_clip(cfg=None) -> TextTransformerCLIP:
    return tiny_clip_family("TinyCLIP")


@BACKBONE_REGISTRY.register(name="TinyPubMedCLIP")
def tiny_pubmedclip(cfg=None) -> TextTransformerCLIP:
    return tiny_clip_family("TinyPubMedCLIP")
