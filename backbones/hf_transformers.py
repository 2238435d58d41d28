"""Transformers CLIP and SigLIP models (`CLIPModel`, `SiglipModel`) behind the backbone contract.

Two names, one loader: `HFCLIP` for a `clip` checkpoint, `HFSigLIP` for a `siglip` one (so a
trainer name such as `BiomedCoOp_HFSigLIP` says which text encoder the prompts go through). Which
model is loaded comes from `MODEL.BACKBONE.HUB` (a transformers hub id: `openai/clip-vit-base-patch16`,
`google/medsiglip-448`) or `MODEL.BACKBONE.PATH` (a folder `save_pretrained` or `hf download` wrote:
config.json, model.safetensors, the tokenizer files, preprocessor_config.json). The architecture
is the checkpoint's own config.json, so any width, depth, patch size or image size loads.
SigLIP 2 checkpoints saved as `siglip` (the fixed-resolution ones) load as HFSigLIP; the NaFlex
variant (`siglip2`, variable patch grids) does not fit a fixed-size image pipeline and is refused.

How the two text towers differ, and what the contract does about it:
- CLIP: a causal transformer; the feature is the final-LayerNorm state at the end-of-text token,
  then `text_projection`. Which position counts as end-of-text depends on the config: checkpoints
  whose text `eos_token_id` is 2 (written before transformers fixed that id) use the largest id
  in the row, the others the first `eos_token_id`; `encode_text_embeddings` applies the same rule
  to the prompt's ids. Causal attention means trailing padding never changes that feature, so
  prompts are trimmed to their longest real row (`trim`).
- SigLIP: no causal mask and no attention mask; the feature is the LAST position (a padding token),
  then the text `head`. It was trained on rows padded to exactly 64 (`max_length` padding), so
  every padding token changes the feature: `trim` keeps the full padded length and the splice
  keeps the row length, so the pooled position is still the last padding token. The SigLIP
  tokenizer adds no start token (`start_tokens` = 0), so learned context goes at position 0,
  before the class name, and the end token stays where the tokenizer put it. Start and end token
  counts come from the tokenizer itself, so Gemma-style tokenizers (a <bos>, their own <pad>, maybe
  no end token) splice correctly too; real lengths then count non-padding tokens.
- Logit scale: CLIP's `exp(logit_scale)`. SigLIP's logits are `exp(logit_scale) * cos + logit_bias`
  (a sigmoid per pair); the bias adds the same number to every class, which changes no softmax over
  classes and no argmax, so the contract's logits are `exp(logit_scale) * cos` and the bias is unused.
- Images: size from the vision config; mean, std and resampling from preprocessor_config.json
  (without one, transformers' defaults: CLIP: OpenAI mean/std, bicubic, short side resized then
  centre-cropped; SigLIP: mean = std = 0.5, bicubic, the whole image resized to a square, no crop).
  The engine's transforms come from INPUT.*; building the model logs the INPUT.* options that
  match it when they differ, and an image of another size is refused with those options.

`TinyHFCLIP` and `TinyHFSigLIP` are random twins built offline from the default CLIPConfig and
SiglipConfig shrunk by `shrink_config` (the same classes and code path): the CLIP twin uses the real
OpenAI BPE vocabulary open_clip ships, the SigLIP twin a small fixed unigram vocabulary built with
the `tokenizers` library (no sentencepiece model needed). transformers is imported only when a
model is built, so registering these families costs nothing at import time.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import math
import os
import string
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from backbones.base import WEIGHTS_ENV, Backbone, hub_problem, load_family_config, safe_name
from backbones.open_clip_family import hf_text_layers, source_label
from backbones.tower_hooks import TowerLayers
from backbones.twins import _WORDS, seeded
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

FAMILIES = {"clip": "HFCLIP", "siglip": "HFSigLIP"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
# PIL's resampling codes, as preprocessor_config.json stores them, named as torchvision names them.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
DEFAULT_PREPROCESS = {
    "clip": {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
             "interpolation": "bicubic"},
    "siglip": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"},
}


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor in older transformers and an output object (pooler_output) in newer."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFDualEncoder(Backbone):
    """A transformers CLIPModel or SiglipModel; `kind` ("clip"/"siglip") selects the text rules above."""

    def __init__(self, model: nn.Module, tokenizer, name: str, preprocess: dict | None = None):
        super().__init__()
        self.kind = model.config.model_type
        if self.kind not in FAMILIES:
            raise UserError(f"{name}: model type '{self.kind}' is neither clip nor siglip.")
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        text, vision = model.config.text_config, model.config.vision_config
        self.context_length = text.max_position_embeddings
        self.token_width = text.hidden_size
        self.embed_dim = model.config.projection_dim if self.kind == "clip" else vision.hidden_size
        self.image_size = vision.image_size
        prep = {**DEFAULT_PREPROCESS[self.kind], **(preprocess or {})}
        self.mean, self.std = tuple(prep["mean"]), tuple(prep["std"])
        self.interpolation = prep["interpolation"]
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.start_tokens, self.end_tokens = _special_counts(tokenizer)
        # transformers' own CLIP pooling rule: legacy configs (eos_token_id 2) take the largest id.
        self.legacy_eos = self.kind == "clip" and text.eos_token_id == 2
        self.pool_eos_id = text.eos_token_id if self.kind == "clip" else None

    # --- images ---
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self._check_size(images)
        return _features(self.model.get_image_features(pixel_values=images))

    def _check_size(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise UserError(
                f"{self.name} takes {self.image_size}x{self.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}. Add `{self.input_opts()}` to the train.py command."
            )

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP: the patch outputs through post_layernorm and visual_projection, as the class token is.
        SigLIP pools with an attention probe instead of a class token; a patch token goes through that
        head as if the probe attended to it alone (value and output projections, then the residual
        MLP), the usual way to read dense features from such a head."""
        self._check_size(images)
        vision = self.model.vision_model
        out = vision(pixel_values=images)
        hidden = out.last_hidden_state
        if self.kind == "clip":
            project = self.model.visual_projection
            return project(out.pooler_output), project(vision.post_layernorm(hidden[:, 1:]))
        head = vision.head
        width = hidden.shape[-1]
        attention = head.attention
        values = F.linear(hidden, attention.in_proj_weight[2 * width:], attention.in_proj_bias[2 * width:])
        tokens = attention.out_proj(values)
        return out.pooler_output, tokens + head.mlp(head.layernorm(tokens))

    def input_opts(self) -> str:
        """The INPUT.* options that reproduce this model's own preprocessing, quoted for a shell."""
        fmt = lambda v: '"[' + ",".join(f"{x:g}" for x in v) + ']"'  # noqa: E731
        return (f'INPUT.SIZE "({self.image_size},{self.image_size})" INPUT.PIXEL_MEAN {fmt(self.mean)} '
                f"INPUT.PIXEL_STD {fmt(self.std)} INPUT.INTERPOLATION {self.interpolation}")

    # --- text ---
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")["input_ids"]

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pad_id is not None and self.pad_id != self.eos_id:
            return (ids != self.pad_id).sum(dim=1)  # e.g. Gemma's <pad>: everything else is real
        # CLIP and SigLIP pad with the end token: real tokens end at its first occurrence.
        hits = ids == self.eos_id
        first = hits.int().argmax(dim=1)
        return torch.where(hits.any(dim=1), first + 1, torch.full_like(first, ids.shape[1]))

    def trim(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kind == "siglip":
            return ids  # the last padding token is SigLIP's pooled position: every row keeps full length
        return super().trim(ids)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text_model.embeddings.token_embedding(ids)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_text_features(input_ids=ids))

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # The text model's forward after the token lookup: positions added by its own embedding
        # module, its encoder, final LayerNorm, pooling and projection (get_text_features' steps).
        text = self.model.text_model
        hidden = text.embeddings(inputs_embeds=embeds)
        mask = None
        if self.kind == "clip":
            length = hidden.shape[1]
            mask = torch.full((length, length), torch.finfo(hidden.dtype).min, device=hidden.device,
                              dtype=hidden.dtype).triu(1)[None, None]
        hidden = text.final_layer_norm(text.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state)
        where = self.text_pool_positions(ids).to(hidden.device)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), where]
        return text.head(pooled) if self.kind == "siglip" else self.model.text_projection(pooled)

    def text_pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        # transformers' own rules: SigLIP the last position, CLIP the end-of-text token (legacy: largest id).
        if self.kind == "siglip":
            return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        if self.legacy_eos:
            return ids.argmax(dim=-1)
        return (ids == self.pool_eos_id).int().argmax(dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().reshape(())

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    @property
    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    def tower_layers(self, tower: str) -> TowerLayers:
        if tower == "text":
            return hf_text_layers(self.model.text_model)
        vision = self.model.vision_model
        layers = hf_text_layers(vision)  # same encoder layout; CLIP's pre_layrnorm takes the layer-0 prompts
        layers.entry = getattr(vision, "pre_layrnorm", None)
        return layers


def _special_counts(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text: (1, 1) for CLIP's start and
    end tokens, (0, 1) for SigLIP's '</s>' alone."""
    ids = tokenizer("a")["input_ids"]
    special = set(tokenizer.all_special_ids)
    start = next((i for i, t in enumerate(ids) if t not in special), len(ids))
    end = next((i for i, t in enumerate(reversed(ids)) if t not in special), 0)
    return start, end


# ----- preprocessing --------------------------------------------------------------------------------
def read_preprocess(path: str | None) -> dict:
    """mean, std and interpolation from a preprocessor_config.json (missing keys keep the family defaults)."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    found = {}
    if "image_mean" in data:
        found["mean"] = tuple(float(x) for x in data["image_mean"])
    if "image_std" in data:
        found["std"] = tuple(float(x) for x in data["image_std"])
    if data.get("resample") in PIL_RESAMPLE:
        found["interpolation"] = PIL_RESAMPLE[data["resample"]]
    return found


# ----- loading --------------------------------------------------------------------------------------
@contextmanager
def _quiet_loading():
    """No loading report or progress bars while weights load: a mismatch is explained by our own message."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_kind(model_type: str, family: str, source: str) -> None:
    kind = next((k for k, v in FAMILIES.items() if v == family), None)
    if model_type == kind:
        return
    if model_type in FAMILIES:
        raise UserError(f"{source} holds a {model_type} model; use MODEL.BACKBONE.NAME {FAMILIES[model_type]} "
                        f"(trainer suffix _{FAMILIES[model_type]}) instead of {family}.")
    if model_type == "siglip2":
        raise UserError(f"{source} is a SigLIP 2 NaFlex model (model_type siglip2), whose variable patch grid "
                        "does not fit the fixed-size image pipeline; use a fixed-resolution checkpoint "
                        "(model_type siglip) with HFSigLIP.")
    raise UserError(f"{source} holds a '{model_type}' model; {family} loads {kind} models "
                    f"(HFCLIP: CLIPModel, HFSigLIP: SiglipModel).")


def hf_weights_error(family: str, source: str, detail: str) -> UserError:
    """The standard missing-weights message for a hub id or a folder of the transformers families."""
    hub_id = source if source.count("/") == 1 and not os.path.exists(source) else "ORG/NAME"
    local = f"WEIGHTS/{safe_name(hub_id)}"
    return UserError(
        f"{family} weights for {source} are not available on this machine: {detail}.\n"
        f"Fix: on a machine with internet run\n"
        f"    python tools/download_weights.py {hub_id} --dir WEIGHTS\n"
        f"(or `hf download {hub_id} --local-dir {local}`)\n"
        f"copy WEIGHTS here, then add `MODEL.BACKBONE.PATH {local}` to the train.py command (or export "
        f"{WEIGHTS_ENV}=WEIGHTS and keep MODEL.BACKBONE.HUB). "
        f"To try the pipeline without weights, use the offline twin Tiny{family}."
    )


def _read_model_type(folder: str) -> str:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("model_type", "")
    except (OSError, ValueError) as err:
        raise UserError(f"{path} could not be read ({err.__class__.__name__}: {err}); it should be the "
                        "config.json that save_pretrained wrote.") from err


def load_folder(folder: str, family: str, pretrained: bool = True) -> HFDualEncoder:
    """A CLIP/SigLIP folder written by save_pretrained (or `hf download`), checked before it is trusted."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserError(f"MODEL.BACKBONE.PATH '{folder}' has no config.json; point it at the folder "
                        "save_pretrained or `hf download ORG/NAME --local-dir FOLDER` wrote.")
    _check_kind(_read_model_type(folder), family, folder)
    weights = next((f for f in WEIGHT_FILES if os.path.isfile(os.path.join(folder, f))), None)
    if pretrained and weights is None:
        raise hf_weights_error(family, folder, f"no {' / '.join(WEIGHT_FILES[::2])} in {folder}")
    preprocess = read_preprocess(os.path.join(folder, "preprocessor_config.json"))
    return _build(folder, family, pretrained, preprocess, folder, weights)


def _build(source: str, family: str, pretrained: bool, preprocess: dict, folder: str,
           weights: str | None) -> HFDualEncoder:
    """Model and tokenizer from a folder or hub id; `weights` is None for a hub id not yet downloaded."""
    import transformers

    model_class = transformers.CLIPModel if family == "HFCLIP" else transformers.SiglipModel
    if pretrained:
        try:
            with _quiet_loading():
                model, info = model_class.from_pretrained(source, dtype=torch.float32, output_loading_info=True,
                                                          ignore_mismatched_sizes=True)
        except Exception as err:  # safetensors header, pickle, zip and EOF errors: all a damaged file
            first = (str(err).strip().splitlines() or [""])[0][:200]
            if weights is None:  # a hub id: fetching failed
                detail = f"loading it failed ({err.__class__.__name__}: {first})"
                raise hf_weights_error(family, source, detail) from err
            raise UserError(
                f"{family}: the weights file cannot be read.\n{_where(folder, weights)}\n"
                f"  error:  {err.__class__.__name__}: {first}\n"
                "Likely cause: a truncated or interrupted download. Download the folder again."
            ) from err
        weights = weights or next((f for f in WEIGHT_FILES if os.path.isfile(os.path.join(folder, f))), "weights")
        explain_loading(family, folder, weights, info)
    else:
        with seeded():
            model = model_class(transformers.AutoConfig.from_pretrained(source))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except Exception as err:  # missing files or a missing tokenizer backend
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{family}: the tokenizer of {source} could not be built ({err.__class__.__name__}: "
                        f"{first}). A SigLIP spiece.model needs the sentencepiece and protobuf packages "
                        "(pip install -r requirements.txt).") from err
    return HFDualEncoder(model, tokenizer, family, preprocess)


def _where(folder: str, file: str) -> str:
    path = os.path.join(folder, file)
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return f"  folder: {folder}\n  file:   {file} ({size:,} bytes)"


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def explain_loading(family: str, folder: str, file: str, info: dict) -> None:
    """A short UserError when the weights did not fill the architecture the folder's config.json describes."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{family}: the weights do not fit the architecture config.json describes.", _where(folder, file)]
    if missing:
        lines.append(f"  missing ({len(missing)}): {_first(missing)}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): {_first(unexpected)}")
    if mismatched:
        key, in_file, in_config = mismatched[0]
        lines.append(f"  other shape ({len(mismatched)}): {key} is {tuple(in_file)} in the file, "
                     f"{tuple(in_config)} by config.json")
    lines.append("Likely cause: config.json and the weights come from different models (files mixed from two "
                 "folders), or an interrupted download. Download the whole folder again.")
    raise UserError("\n".join(lines))


def load_hub(hub_id: str, family: str, pretrained: bool = True) -> HFDualEncoder:
    """A transformers hub id, through the Hugging Face cache (a cached model loads offline)."""
    problem = hub_problem(hub_id, "config.json")
    if problem:
        raise hf_weights_error(family, hub_id, problem)
    from huggingface_hub import hf_hub_download

    try:
        config_path = hf_hub_download(hub_id, "config.json")
    except Exception as err:  # network, auth or cache errors all mean the same thing to a user
        logging.getLogger(__name__).debug("hub download failed", exc_info=True)
        raise hf_weights_error(family, hub_id, f"fetching its config.json failed ({err.__class__.__name__})") from err
    folder = os.path.dirname(config_path)  # the model's snapshot folder in the cache
    _check_kind(_read_model_type(folder), family, hub_id)
    try:
        preprocess = read_preprocess(hf_hub_download(hub_id, "preprocessor_config.json"))
    except Exception:  # no processor file: the family defaults apply
        preprocess = {}
    return _build(hub_id, family, pretrained, preprocess, folder, None)


def local_folder(cfg, hub: str) -> str | None:
    """MODEL.BACKBONE.PATH itself or PATH/<org--name of HUB>, else $BIOMEDCOOP_WEIGHTS_DIR/<org--name>:
    the first that holds a config.json (the layout the other families' WEIGHTS folders use)."""
    path = cfg.MODEL.BACKBONE.PATH if cfg is not None else ""
    sub = safe_name(hub) if hub else ""
    candidates = [os.path.join(path, sub), path] if path and sub else [path] if path else []
    if sub and os.environ.get(WEIGHTS_ENV):
        candidates.append(os.path.join(os.environ[WEIGHTS_ENV], sub))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "config.json")):
            return os.path.abspath(folder)
    if path and not os.path.isdir(path):
        raise UserError(f"MODEL.BACKBONE.PATH '{path}' is not a folder; point it at the folder "
                        "save_pretrained or `hf download ORG/NAME --local-dir FOLDER` wrote.")
    return os.path.abspath(path) if path else None  # load_folder says what is missing


def hf_family(family: str, cfg=None) -> HFDualEncoder:
    hub = cfg.MODEL.BACKBONE.HUB if cfg is not None else ""
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    folder = local_folder(cfg, hub)
    if folder:
        return note_preprocessing(load_folder(folder, family, pretrained), cfg, hub or folder)
    if hub:
        return note_preprocessing(load_hub(hub, family, pretrained), cfg, hub)
    example = "openai/clip-vit-base-patch16" if family == "HFCLIP" else "google/medsiglip-448"
    raise UserError(f"{family} needs a model: add `MODEL.BACKBONE.HUB {example}` (a transformers hub id) or "
                    f"`MODEL.BACKBONE.PATH FOLDER` (a folder save_pretrained wrote) to the train.py command. "
                    f"Without weights, try Tiny{family}.")


def note_preprocessing(backbone: HFDualEncoder, cfg, source: str) -> HFDualEncoder:
    """Log the INPUT.* options that reproduce the model's own preprocessing when the config's differ."""
    if cfg is None:
        return backbone
    inp = cfg.INPUT
    given = [*inp.PIXEL_MEAN, *inp.PIXEL_STD]
    wanted = [*backbone.mean, *backbone.std]
    same = (tuple(inp.SIZE) == (backbone.image_size,) * 2 and inp.INTERPOLATION == backbone.interpolation
            and len(given) == len(wanted) and all(abs(a - b) < 1e-6 for a, b in zip(given, wanted, strict=True)))
    if not same:
        from engine.utils import get_logger

        get_logger().warning(f"note: {source} expects other image preprocessing than the INPUT.* options "
                             f"of this run; to match its own processor add: {backbone.input_opts()}")
    return backbone


def write_folder(backbone: HFDualEncoder, folder: str) -> str:
    """Save model, tokenizer and image-processor settings as save_pretrained does (e.g. a twin, to try
    MODEL.BACKBONE.PATH offline); the folder then loads as HFCLIP / HFSigLIP."""
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    size, resample = backbone.image_size, {v: k for k, v in PIL_RESAMPLE.items()}[backbone.interpolation]
    common = {"image_mean": list(backbone.mean), "image_std": list(backbone.std), "resample": resample}
    if backbone.kind == "clip":
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                       **common)
    else:
        processor = SiglipImageProcessor(size={"height": size, "width": size}, **common)
    processor.save_pretrained(folder)
    return folder


@BACKBONE_REGISTRY.register(name="HFCLIP")
def hf_clip(cfg=None) -> HFDualEncoder:
    return hf_family("HFCLIP", cfg)


@BACKBONE_REGISTRY.register(name="HFSigLIP")
def hf_siglip(cfg=None) -> HFDualEncoder:
    return hf_family("HFSigLIP", cfg)


# Results name a model of these families by its hub id or folder (HFSigLIP-google--medsiglip-448),
# with the same rule as the OpenCLIP family, so two models never share a label.
hf_clip.label = hf_siglip.label = source_label


def gated_weights_error(name: str, hub_id: str, detail: str) -> UserError:
    """The missing-weights error of a gated model: the hub serves its files only to an account that
    accepted the licence, so the fix starts there (the download tool and the hub's own client send the token)."""
    local = f"WEIGHTS/{safe_name(hub_id)}"
    return UserError(
        f"{name} weights ({hub_id}) are not available on this machine: {detail}.\n"
        f"{hub_id} is gated on the Hugging Face hub. Fix, on a machine with internet:\n"
        f"    1. open https://huggingface.co/{hub_id} while logged in and accept its licence;\n"
        f"    2. run `hf auth login` (or `huggingface-cli login`) with an access token of that account;\n"
        f"    3. run `python tools/download_weights.py {hub_id} --dir WEIGHTS` (or `hf download {hub_id} "
        f"--local-dir {local}`); both send that token;\n"
        f"copy WEIGHTS here, then add `MODEL.BACKBONE.PATH WEIGHTS` to the train.py command (or export "
        f"{WEIGHTS_ENV}=WEIGHTS). After step 2, a first run with internet also fills the Hugging Face cache. "
        f"To try the pipeline without weights, use the offline twin Tiny{name}."
    )


@BACKBONE_REGISTRY.register(name="MedSigLIP")
def medsiglip(cfg=None) -> HFDualEncoder:
    """MedSigLIP-448 as a named preset of HFSigLIP: the hub id and preprocessing of backbones/configs/MedSigLIP.json.
    Its files: MODEL.BACKBONE.PATH (the folder, or one holding google--medsiglip-448/), else
    $BIOMEDCOOP_WEIGHTS_DIR/google--medsiglip-448, else the Hugging Face cache or hub."""
    spec = load_family_config("MedSigLIP")
    hub = spec["hub_id"]
    pretrained = cfg is None or cfg.MODEL.BACKBONE.PRETRAINED
    folder = local_folder(cfg, hub)
    if folder:
        backbone = load_folder(folder, "HFSigLIP", pretrained)
    else:
        problem = hub_problem(hub, "config.json")
        if problem:
            raise gated_weights_error("MedSigLIP", hub, problem)
        try:
            backbone = load_hub(hub, "HFSigLIP", pretrained)
        except UserError as err:  # refused by the hub (no licence accepted, no token) or cut off
            raise gated_weights_error("MedSigLIP", hub, str(err).split("\n", 1)[0]) from err
    backbone.name = "MedSigLIP"
    return note_preprocessing(backbone, cfg, hub)


medsiglip.preprocess = load_family_config("MedSigLIP")["preprocess"]


# ----- tiny twins -------------------------------------------------------------------------------------
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def shrink_config(config, width: int = 64, layers: int = 2, heads: int = 2, patches_per_side: int = 7):
    """A copy of a CLIPConfig / SiglipConfig with small widths and depths (classes, vocabulary, context
    length and image size kept), so any checkpoint's config yields an offline twin of its architecture."""
    config = config.__class__.from_dict(config.to_dict())
    sizes = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers,
             "num_attention_heads": heads}
    for sub in (config.text_config, config.vision_config):
        for key, value in sizes.items():
            setattr(sub, key, value)
    vision = config.vision_config
    vision.patch_size = max(vision.patch_size, vision.image_size // patches_per_side)
    if config.model_type == "clip":
        config.projection_dim = width // 2
    else:
        config.text_config.projection_size = width  # SigLIP: text head output = vision width
    return config


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


@functools.lru_cache(maxsize=1)
def openai_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's vocabulary and merges, from the BPE file open_clip ships (the 49408 ids of every CLIP)."""
    from open_clip.tokenizer import default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = openai_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def toy_unigram_pieces() -> list[tuple[str, float]]:
    """A fixed SentencePiece-style vocabulary: specials, '▁word' pieces for common medical words, single
    characters as fallback. Deterministic, so the twin's token ids never change."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    words = [(f"▁{w}", -2.0) for w in sorted(set(_WORDS))]
    return specials + words + [("▁", -5.0)] + [(c, -8.0) for c in chars] + [(f"▁{c}", -7.0) for c in chars]


@functools.lru_cache(maxsize=1)
def tiny_siglip_tokenizer():
    """SigLIP's tokenizer behaviour on a toy vocabulary: lower case, '▁' word starts, no start token,
    '</s>' appended, padding with '</s>' (id 1)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    pieces = toy_unigram_pieces()
    tok = Tokenizer(Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>",
                                   model_max_length=64)


def tiny_config(kind: str, image_size: int | None = None):
    """The default transformers config of `kind`, shrunk; the SigLIP twin's vocabulary is the toy one.
    `image_size` sets the vision tower's input size (a preset's), still in 7 x 7 patches."""
    from transformers import CLIPConfig, SiglipConfig

    vision = {"image_size": image_size} if image_size else {}
    if kind == "clip":
        return shrink_config(CLIPConfig(vision_config=vision))
    text = {"vocab_size": len(toy_unigram_pieces()), "pad_token_id": 1, "eos_token_id": 1, "bos_token_id": None}
    return shrink_config(SiglipConfig(text_config=text, vision_config=vision))


def tiny_twin(kind: str) -> HFDualEncoder:
    import transformers

    with _quiet_loading():  # SiglipConfig warns about its own default token ids while it is built
        config = tiny_config(kind)
    with seeded():
        if kind == "clip":
            return HFDualEncoder(transformers.CLIPModel(config), tiny_clip_tokenizer(), "TinyHFCLIP")
        model = transformers.SiglipModel(config)
    with torch.no_grad():  # SigLIP's own starting temperature and bias (scale 10, bias -10)
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return HFDualEncoder(model, tiny_siglip_tokenizer(), "TinyHFSigLIP")


@BACKBONE_REGISTRY.register(name="TinyHFCLIP")
def tiny_hf_clip(cfg=None) -> HFDualEncoder:
    return tiny_twin("clip")


@BACKBONE_REGISTRY.register(name="TinyHFSigLIP")
def tiny_hf_siglip(cfg=None) -> HFDualEncoder:
    return tiny_twin("siglip")


@BACKBONE_REGISTRY.register(name="TinyMedSigLIP")
def tiny_medsiglip(cfg=None) -> HFDualEncoder:
    """MedSigLIP's twin: the SigLIP twin at the preset's 448 px (7 x 7 patches of 64 px), named for it."""
    import transformers

    size = load_family_config("TinyMedSigLIP")["preprocess"]["size"]
    with _quiet_loading():
        config = tiny_config("siglip", image_size=size)
    with seeded():
        model = transformers.SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return HFDualEncoder(model, tiny_siglip_tokenizer(), "TinyMedSigLIP")


tiny_medsiglip.preprocess = load_family_config("TinyMedSigLIP")["preprocess"]
