"""OpenCLIP: any open_clip model as a backbone, its architecture read from the model's own config.

Select it with the trainer suffix `_OpenCLIP` (MODEL.BACKBONE.NAME OpenCLIP) and either
- MODEL.BACKBONE.PATH: a folder holding `open_clip_config.json` and the weights open_clip writes
  (open_clip_model.safetensors or open_clip_pytorch_model.bin), e.g. what
  `tools/download_weights.py hf-hub:org/name` or open_clip's `save_for_hf` wrote; or
- MODEL.BACKBONE.HUB: `hf-hub:org/name` (read from the hub, or from its local cache offline), or an
  open_clip built-in name with its pretrained tag, `ViT-B-16:openai`. A folder named
  `safe_name(HUB)` under MODEL.BACKBONE.PATH or $BIOMEDCOOP_WEIGHTS_DIR is used first.

The image tower is whatever open_clip builds from `vision_cfg` (its ViT, a timm model, its
ModifiedResNet). The text tower picks the wrapper: open_clip's TextTransformer, inside CLIP or
CustomTextCLIP -> backbones.clip.TextTransformerCLIP; a Hugging Face model (`hf_model_name`) ->
HFTextCLIP below. An HF text tower's own config is read from `<folder>/text/config.json` when present
(the download tool puts it there), else from the hub or its cache; the tokenizer from the tokenizer
files in `<folder>/text/` or `<folder>/`, else `hf_tokenizer_name` on the hub.

BiomedCLIP (backbones/biomedclip.py) is a named preset of this family. `TinyOpenCLIP` is a random,
shrunk twin of an open_clip architecture (shrink_open_clip_config), built offline.
open_clip, timm and transformers are imported only when a model is built.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import torch

from backbones.base import (
    WEIGHTS_ENV,
    Backbone,
    hub_cached,
    hub_offline,
    hub_problem,
    load_family_config,
    missing_weights_error,
    safe_name,
)
from backbones.clip import TextTransformerCLIP, open_clip_image_layers, open_clip_image_tokens
from backbones.tower_hooks import TowerLayers, TowerUnsupported
from backbones.twins import TINY_VIT, bert_folder, register_tiny_vit, seeded, toy_vocab
from backbones.weights import load_weights
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

CONFIG_FILE = "open_clip_config.json"
# The order open_clip itself prefers when a folder holds several.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
DEFAULT_TWIN_ARCH = "ViT-B-16"

log = logging.getLogger(__name__)


# ----- the HF text-tower wrapper -----------------------------------------------------------------
class HFTextCLIP(Backbone):
    """An open_clip CustomTextCLIP whose text tower is a Hugging Face model (BiomedCLIP's layout)."""

    def __init__(self, model, tokenizer, name: str):
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        hf = model.text.transformer
        self.pad_id = hf.config.pad_token_id
        self.token_width = hf.config.hidden_size
        self.embed_dim = model.text.output_dim
        self.context_length = tokenizer.context_length

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return open_clip_image_tokens(self.model.visual, images, self.name)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).sum(1)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text.transformer.get_input_embeddings()(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # An HF embedding module adds positions (and token types, LayerNorm) to inputs_embeds as it
        # does to looked-up ids, so spliced context vectors go through the exact same tower; the
        # padding mask and open_clip's pooler make trimmed padding irrelevant.
        text = self.model.text
        mask = (ids != self.pad_id).long()
        out = text.transformer(inputs_embeds=embeds, attention_mask=mask)
        return text.proj(text.pooler(out, mask))

    def text_pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        # open_clip's class-token poolers name their position; mean and max poolers read every token.
        pooler = self.model.text.pooler
        position = getattr(pooler, "cls_token_position", None)
        if position is None:
            raise TowerUnsupported(f"pools with {type(pooler).__name__}, over every token instead of one")
        return torch.full((ids.shape[0],), int(position), dtype=torch.long, device=ids.device)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    @property
    def text_tower(self):
        return self.model.text

    def tower_layers(self, tower: str) -> TowerLayers:
        if tower == "image":
            return open_clip_image_layers(self.model.visual)
        return hf_text_layers(self.model.text.transformer)


def hf_text_layers(hf) -> TowerLayers:
    """The blocks of a Hugging Face encoder (BERT-style `encoder.layer`, CLIP-style `encoder.layers`)."""
    encoder = hf.encoder
    blocks = encoder.layer if hasattr(encoder, "layer") else encoder.layers
    return TowerLayers(list(blocks), True, hf.config.hidden_size)


# ----- configs, tiny twins ---------------------------------------------------------------------
def read_open_clip_config(folder: str) -> dict:
    """The folder's open_clip_config.json ({"model_cfg": ..., "preprocess_cfg": ...}), or a UserError."""
    path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError as err:
        raise UserError(f"{folder} has no {CONFIG_FILE}: OpenCLIP needs the folder open_clip or "
                        "tools/download_weights.py wrote (its config and weights file).") from err
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read as JSON ({err}); download it again.") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg", config).get("vision_cfg"), dict):
        raise UserError(f"{path} has no model_cfg with vision_cfg and text_cfg; is it an open_clip config?")
    return config if "model_cfg" in config else {"model_cfg": config}


def shrink_open_clip_config(config: dict, width: int = 64, layers: int = 2, heads: int = 2,
                            embed_dim: int = 32) -> dict:
    """A tiny copy of an open_clip model config (model_cfg, or a whole open_clip_config.json): the
    same tower kinds and options (so the same classes and code path), small widths and depths.

    A timm image tower becomes the locally registered tiny timm ViT; a ModifiedResNet keeps its
    four stages at one block each; vocabularies and context lengths stay (tokenizer ids must fit).
    An HF text tower keeps its pooler and projection; its own config is shrunk by shrink_hf_text_config.
    """
    config = copy.deepcopy(config)
    model_cfg = config.get("model_cfg", config)
    model_cfg["embed_dim"] = embed_dim
    vision = model_cfg["vision_cfg"]
    if "timm_model_name" in vision:
        vision["timm_model_name"] = TINY_VIT
        vision["timm_model_pretrained"] = False
        if vision.get("timm_proj", "linear") in ("none", "", None):  # features are the trunk's own width
            model_cfg["embed_dim"] = 64  # the tiny timm ViT's width
    elif isinstance(vision.get("layers"), (list, tuple)):  # ModifiedResNet: stem width, blocks per stage
        vision.update(layers=[1, 1, 1, 1], width=width // 4, head_width=width // heads)
    else:  # open_clip VisionTransformer
        vision.update(width=width, layers=layers, head_width=width // heads)
        if "attn_pooler_heads" in vision:
            vision["attn_pooler_heads"] = heads
    text = model_cfg["text_cfg"]
    if "hf_model_name" not in text:
        text.update(width=width, heads=heads, layers=layers)
        if text.get("proj_type") == "none":
            model_cfg["embed_dim"] = width
    return config


def shrink_hf_text_config(hf_config: dict, width: int = 64, layers: int = 2, heads: int = 2) -> dict:
    """A tiny copy of a Hugging Face text model's config.json (same model_type), sized for the toy vocabulary."""
    small = copy.deepcopy(hf_config)
    small.update(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                 intermediate_size=2 * width, vocab_size=1024)
    return small


def tiny_hf_text_config() -> dict:
    """The tiny BERT config the twins use when the real text tower's config is not on this machine."""
    return load_family_config("TinyBiomedCLIP")["text_config"]


# ----- building and loading --------------------------------------------------------------------
def build_open_clip(model_cfg: dict, name: str, hf_text: str | None = None):
    """The open_clip class the config asks for (CLIP or CustomTextCLIP), randomly initialised, no download.

    Mirrors open_clip.create_model's choice: CustomTextCLIP when the config says custom_text or has an
    HF text tower, whose config is read from `hf_text` (a folder or a hub id).
    """
    import open_clip

    model_cfg = copy.deepcopy(model_cfg)
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    if "multimodal_cfg" in model_cfg:
        raise UserError(f"{name}: CoCa models (multimodal_cfg in {CONFIG_FILE}) are not supported as backbones.")
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False
        if vision["timm_model_name"] == TINY_VIT:
            register_tiny_vit()
    hf_tower = "hf_model_name" in text  # open_clip's own rule for an HF text tower
    if hf_tower:
        text["hf_model_name"] = hf_text or text["hf_model_name"]
        text["hf_model_pretrained"] = False
    custom = model_cfg.pop("custom_text", False) or hf_tower
    model_class = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    try:
        return model_class(**model_cfg).eval()
    except (TypeError, ValueError, KeyError, RuntimeError) as err:  # a config this open_clip cannot build
        raise UserError(f"{name}: open_clip cannot build the architecture in {CONFIG_FILE} "
                        f"({err.__class__.__name__}: {err}).") from err


def _open_clip_layout(model, state: dict) -> dict:
    """The state-dict fixes open_clip.load_checkpoint applies before loading (older and third-party layouts)."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and target is not None and target.ndim != state[key].ndim:
            state[key] = state[key].reshape(target.shape)
    if "text.transformer.embeddings.position_ids" not in model.state_dict():  # newer transformers drop it
        state.pop("text.transformer.embeddings.position_ids", None)
    return state


def _read_open_clip_state(path: str) -> dict:
    from open_clip.factory import load_state_dict

    return load_state_dict(path)


def weights_file(folder: str) -> str | None:
    return next((os.path.join(folder, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(folder, f))), None)


def _tokenizer_dir(folder: str) -> str | None:
    for candidate in (os.path.join(folder, "text"), folder):
        if any(os.path.isfile(os.path.join(candidate, f)) for f in TOKENIZER_FILES):
            return candidate
    return None


def _hub_or_explain(repo: str, filename: str, what: str, name: str, source: str) -> str:
    """`repo` when the hub library can give `filename` (cached, or online), else the missing-weights error."""
    if os.path.isdir(repo):
        return repo
    problem = hub_problem(repo, filename)
    if problem:
        raise missing_weights_error(name, f"{what} ({repo}) is not in this folder and {problem}", source=source)
    return repo


def open_clip_tokenizer(text_cfg: dict, folder: str | None, name: str, source: str | None = None):
    """open_clip's tokenizer for this text config: HF (local files first, then hf_tokenizer_name) or OpenAI BPE."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context_length = text_cfg.get("context_length", 77)
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    hf_name = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    if not hf_name:
        return SimpleTokenizer(context_length=context_length, **kwargs) if kwargs else None
    local = _tokenizer_dir(folder) if folder else None
    source_dir = local or _hub_or_explain(hf_name, "tokenizer_config.json", "the tokenizer", name, source or name)
    return HFTokenizer(source_dir, context_length=context_length, tokenizer_mode=text_cfg.get("tokenizer_mode"),
                       **kwargs)


def _start_tokens(tokenizer) -> int:
    """1 when the tokenizer puts a special token ([CLS], <start_of_text>) before the text, else 0."""
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is None:
        return 1
    first = int(tokenizer(["a"])[0, 0])
    return int(first in set(hf.all_special_ids) and first != hf.pad_token_id)


def wrap(model, tokenizer, name: str, preprocess: dict | None = None, model_cfg: dict | None = None) -> Backbone:
    """The backbone for an open_clip model: by text-tower kind, with its preprocessing and image size
    (and the model_cfg it was built from, which write_folder saves)."""
    if hasattr(model, "text") and hasattr(model.text, "transformer") and hasattr(model.text.transformer, "config"):
        if tokenizer is None:
            raise UserError(f"{name}: an HF text tower needs an HF tokenizer (hf_tokenizer_name).")
        backbone = HFTextCLIP(model, tokenizer, name)
    else:
        backbone = TextTransformerCLIP(model, name, tokenizer)
    backbone.start_tokens = _start_tokens(tokenizer)
    size = getattr(model.visual, "image_size", 224)
    backbone.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    for key in ("mean", "std"):
        if preprocess and preprocess.get(key):
            setattr(backbone, key, tuple(float(v) for v in preprocess[key]))
    if preprocess and preprocess.get("interpolation"):
        backbone.interpolation = preprocess["interpolation"]
    backbone.open_clip_model_cfg = model_cfg
    return backbone


def write_folder(backbone: Backbone, folder: str) -> str:
    """Save an OpenCLIP-family backbone (a twin, say) the way open_clip writes a model, so that
    MODEL.BACKBONE.PATH loads it offline: open_clip_config.json, open_clip_pytorch_model.bin, the
    tokenizer files and, for an HF text tower, its config in text/."""
    from engine.utils import write_json

    if getattr(backbone, "open_clip_model_cfg", None) is None:
        raise UserError(f"{backbone.name} was not built by the OpenCLIP family; write_folder cannot save it.")
    os.makedirs(folder, exist_ok=True)
    torch.save(backbone.model.state_dict(), os.path.join(folder, WEIGHT_FILES[2]))
    tokenizer = getattr(backbone, "tokenizer", None) or getattr(backbone, "_tokenizer", None)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)
    if isinstance(backbone, HFTextCLIP):
        write_json(backbone.model.text.transformer.config.to_dict(), os.path.join(folder, "text", "config.json"))
    preprocess = {"mean": list(backbone.mean), "std": list(backbone.std), "interpolation": backbone.interpolation}
    write_json({"model_cfg": backbone.open_clip_model_cfg, "preprocess_cfg": preprocess},
               os.path.join(folder, CONFIG_FILE))
    return folder


def open_clip_from_folder(folder: str, name: str, pretrained: bool = True, fallback: dict | None = None,
                          fallback_text_config: dict | None = None, source: str | None = None) -> Backbone:
    """Build the model `<folder>/open_clip_config.json` describes and load the folder's weights through
    backbones.weights.load_weights. `fallback` (a preset's config) stands in for a missing config file."""
    source = source or name
    if os.path.isfile(os.path.join(folder, CONFIG_FILE)) or fallback is None:
        config, architecture = read_open_clip_config(folder), os.path.join(folder, CONFIG_FILE)
    else:
        config, architecture = fallback, f"backbones/configs/{name}.json"
    model_cfg = config["model_cfg"]
    weights = weights_file(folder)
    if pretrained and weights is None:
        raise missing_weights_error(name, f"no {WEIGHT_FILES[2]} (or {WEIGHT_FILES[0]}) in {folder}", source=source)
    text_cfg = model_cfg["text_cfg"]
    hf_text = None
    if "hf_model_name" in text_cfg:
        text_dir = os.path.join(folder, "text")
        if os.path.isfile(os.path.join(text_dir, "config.json")):
            hf_text = text_dir
        elif fallback_text_config is not None:
            hf_text = bert_folder(f"{name}-text", fallback_text_config)
        else:
            hf_text = _hub_or_explain(text_cfg["hf_model_name"], "config.json", "the text tower's config.json",
                                      name, source)
    tokenizer = open_clip_tokenizer(text_cfg, folder, name, source)
    with seeded():  # weights are loaded over it; without weights (PRETRAINED False) it is reproducible
        model = build_open_clip(model_cfg, name, hf_text)
    if pretrained:
        load_weights(model, weights, name, read=_read_open_clip_state, prepare=_open_clip_layout,
                     architecture=architecture, fix=f"check that {os.path.basename(architecture)} and the weights "
                     f"come from the same model, or download it again with `python tools/download_weights.py "
                     f"{source} --dir WEIGHTS`")
    return wrap(model.eval(), tokenizer, name, config.get("preprocess_cfg"), model_cfg)


def open_clip_from_hub(hub: str, name: str, pretrained: bool = True, source: str | None = None) -> Backbone:
    """`hf-hub:org/name` (through the hub library: its cache offline) or an open_clip `ARCH:TAG`.
    `source` is what the offline error tells the download tool (a preset's name, else `hub`)."""
    source = source or hub
    if hub.startswith("hf-hub:"):
        repo = hub.removeprefix("hf-hub:")
        problem = hub_problem(repo, CONFIG_FILE)
        if problem:
            raise missing_weights_error(name, problem, source=source)
        try:
            from huggingface_hub import hf_hub_download

            config_path = hf_hub_download(repo, CONFIG_FILE)
            if pretrained:
                from open_clip.pretrained import download_pretrained_from_hf

                download_pretrained_from_hf(repo)  # the weights land in the same snapshot folder
        except Exception as err:  # network, auth, missing files: all say "not available here"
            log.debug("hub download failed", exc_info=True)
            raise missing_weights_error(name, f"downloading {hub} failed ({err.__class__.__name__}: {err})",
                                        source=source) from err
        return open_clip_from_folder(os.path.dirname(config_path), name, pretrained, source=source)
    return _open_clip_builtin(hub, name, pretrained)


def _open_clip_builtin(hub: str, name: str, pretrained: bool) -> Backbone:
    import open_clip

    arch, _, tag = hub.partition(":")
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise UserError(f"MODEL.BACKBONE.HUB '{hub}': open_clip has no model '{arch}'. Use 'hf-hub:org/name', "
                        f"or a built-in name with its tag, e.g. ViT-B-16:openai (names: open_clip.list_pretrained()).")
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if pretrained and not pretrained_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise UserError(f"MODEL.BACKBONE.HUB '{hub}': give {arch}'s pretrained tag as {arch}:TAG (tags: {tags}).")
    if pretrained_cfg.get("quick_gelu"):
        model_cfg["quick_gelu"] = True  # the activation these weights were trained with
    checkpoint = None
    if pretrained:
        repo, filename = os.path.split(pretrained_cfg.get("hf_hub", ""))  # 'org/name/' or 'org/name/file'
        if repo and hub_offline() and not (hub_cached(repo, filename or WEIGHT_FILES[2])
                                           or hub_cached(repo, WEIGHT_FILES[0])):
            raise missing_weights_error(name, f"HF_HUB_OFFLINE=1 is set and {repo} is not in the local cache",
                                        source=hub)
        try:
            checkpoint = open_clip.download_pretrained(pretrained_cfg)
        except Exception as err:
            raise missing_weights_error(name, f"downloading {hub} failed ({err.__class__.__name__})",
                                        source=hub) from err
    tokenizer = open_clip_tokenizer(model_cfg["text_cfg"], None, name, hub)
    with seeded():
        model = build_open_clip(model_cfg, name)
    if checkpoint:
        load_weights(model, checkpoint, name, read=_read_open_clip_state, prepare=_open_clip_layout,
                     architecture=f"open_clip's built-in config {arch}")
    return wrap(model.eval(), tokenizer, name, pretrained_cfg, model_cfg)


def local_folder(cfg, hub: str) -> str | None:
    """The folder to load from: MODEL.BACKBONE.PATH(/safe_name(HUB)), else $BIOMEDCOOP_WEIGHTS_DIR/safe_name(HUB)."""
    explicit = cfg.MODEL.BACKBONE.PATH if cfg is not None else ""
    sub = safe_name(hub) if hub else ""
    candidates = [os.path.join(explicit, sub), explicit] if explicit else []
    if sub and os.environ.get(WEIGHTS_ENV):
        candidates.append(os.path.join(os.environ[WEIGHTS_ENV], sub))
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, CONFIG_FILE)):
            return os.path.abspath(path)
    if explicit:
        if not os.path.isdir(explicit):
            raise UserError(f"MODEL.BACKBONE.PATH '{explicit}' is not a folder.")
        where = f"{explicit} (or {os.path.join(explicit, sub)})" if sub else explicit
        raise UserError(f"MODEL.BACKBONE.PATH: {where} has no {CONFIG_FILE}. Point it at a folder open_clip "
                        f"wrote, or one `python tools/download_weights.py hf-hub:org/name --dir WEIGHTS` wrote.")
    return None


def source_label(cfg) -> str:
    """What results call an OpenCLIP model: the hub id, else the weights folder's name."""
    hub = cfg.MODEL.BACKBONE.HUB
    path = cfg.MODEL.BACKBONE.PATH.rstrip("/\\")
    return safe_name(hub) if hub else os.path.basename(path) if path else ""


@BACKBONE_REGISTRY.register(name="OpenCLIP")
def open_clip_model(cfg=None) -> Backbone:
    hub = cfg.MODEL.BACKBONE.HUB if cfg is not None else ""
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    folder = local_folder(cfg, hub)
    if folder:
        return open_clip_from_folder(folder, "OpenCLIP", pretrained, source=hub or "hf-hub:ORG/NAME")
    if not hub:
        raise UserError("OpenCLIP needs MODEL.BACKBONE.HUB (e.g. hf-hub:org/name or ViT-B-16:openai) or "
                        "MODEL.BACKBONE.PATH (a folder with open_clip_config.json and its weights).")
    return open_clip_from_hub(hub, "OpenCLIP", pretrained)


@BACKBONE_REGISTRY.register(name="TinyOpenCLIP")
def tiny_open_clip(cfg=None) -> Backbone:
    """A random, shrunk twin of an open_clip architecture: the config in MODEL.BACKBONE.PATH, else the
    built-in one MODEL.BACKBONE.HUB names (default ViT-B-16). Offline; an HF text tower becomes a tiny
    BERT with the toy vocabulary (its real config and vocabulary would need the hub)."""
    path = cfg.MODEL.BACKBONE.PATH if cfg is not None else ""
    hub = (cfg.MODEL.BACKBONE.HUB if cfg is not None else "") or DEFAULT_TWIN_ARCH
    if path:
        config = read_open_clip_config(local_folder(cfg, "") or path)
    elif hub.startswith("hf-hub:"):
        raise UserError("TinyOpenCLIP shrinks a config on this machine: give MODEL.BACKBONE.PATH (a folder with "
                        "open_clip_config.json) or an open_clip built-in name in MODEL.BACKBONE.HUB.")
    else:
        import open_clip

        model_cfg = open_clip.get_model_config(hub.partition(":")[0])
        if model_cfg is None:
            raise UserError(f"TinyOpenCLIP: open_clip has no built-in model '{hub}'.")
        config = {"model_cfg": model_cfg}
    config = shrink_open_clip_config(config)
    text_cfg = config["model_cfg"]["text_cfg"]
    hf_text = None
    if "hf_model_name" in text_cfg or text_cfg.get("hf_tokenizer_name"):
        hf_text = bert_folder("TinyOpenCLIP-text", tiny_hf_text_config(), toy_vocab())
        text_cfg.update(hf_tokenizer_name=hf_text, tokenizer_kwargs={})
        text_cfg.pop("tokenizer_mode", None)
        if "hf_model_name" not in text_cfg:
            text_cfg["vocab_size"] = len(toy_vocab())
    tokenizer = open_clip_tokenizer(text_cfg, hf_text, "TinyOpenCLIP", "TinyOpenCLIP")
    with seeded():
        model = build_open_clip(config["model_cfg"], "TinyOpenCLIP", hf_text)
    return wrap(model, tokenizer, "TinyOpenCLIP", config.get("preprocess_cfg"), config["model_cfg"])


open_clip_model.label = source_label
tiny_open_clip.label = source_label
