"""The contract every model family implements, and the helpers families share.

A method only talks to this surface: encode images, tokenize, look up token embeddings, encode
text from ids, encode text from (spliced) token embeddings, logit scale, widths, preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import torch
from torch import nn

from backbones.tower_hooks import TowerHooks, TowerLayers, TowerUnsupported, applied, check_layers, require, splice
from engine.errors import UserError

WEIGHTS_ENV = "BIOMEDCOOP_WEIGHTS_DIR"
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def load_family_config(name: str) -> dict:
    """A model's configuration, kept as data in backbones/configs/<name>.json."""
    with open(os.path.join(CONFIG_DIR, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


class Backbone(nn.Module):
    """A frozen vision-language model seen through one small interface."""

    name: str = ""
    embed_dim: int  # width of the joint image/text feature space
    token_width: int  # width of a token embedding (= learned context vector width)
    context_length: int
    # Special tokens the tokenizer puts before the text: 1 for a start token ([CLS], <start_of_text>),
    # 0 for tokenizers without one (SigLIP). Learned context is spliced in right after them.
    start_tokens: int = 1
    # Special tokens after the text ([SEP], <end_of_text>, </s>); `real_lengths` counts them.
    end_tokens: int = 1
    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"

    # --- images ---
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global feature (B, D), patch tokens (B, P, D)) in one image-tower pass.

        The global feature is exactly `encode_image`'s; the patch tokens are the last layer's patch
        outputs sent through the same final norm and projection into the joint space, so they can be
        compared with text features (what OGKD's patch-level distillation reads).
        """
        raise UserError(f"{self.name} cannot give patch tokens (its image tower has no per-patch outputs in the "
                        "joint space); use a ViT backbone such as BiomedCLIP for methods that need them.")

    # --- text ---
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids padded to the context length, shape (N, context_length)."""
        raise NotImplementedError

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        """Number of real (non-padding) tokens per row, end token included."""
        raise NotImplementedError

    def trim(self, ids: torch.Tensor) -> torch.Tensor:
        """Drop padding columns beyond the longest real prompt: same features, far less compute."""
        return ids[:, : int(self.real_lengths(ids).max())]

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token-embedding lookup only (no positions), shape (N, L, token_width)."""
        raise NotImplementedError

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """The model's own text encoding of token ids (unnormalised)."""
        raise NotImplementedError

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Encode a sequence of token embeddings; `ids` gives the mask / end-of-text positions."""
        raise NotImplementedError

    def text_pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Where the text tower pools: for each row of `ids` (as encode_text and encode_text_embeddings
        get them), the index of the one token whose last-block state, through the family's final norm
        and projection, is the text feature; shape (N,), long. BERT-style towers: 0 ([CLS]); CLIP's:
        the end-of-text token; SigLIP's: the last position. Methods that read a tower's per-token state
        at its pooled token (EviSteer) use this; a tower that pools over many tokens (mean, max) raises
        TowerUnsupported saying so, and `tower_hooks.pooled_positions` turns that into one line."""
        raise TowerUnsupported("does not say which token it pools")

    def encode_prompts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Unnormalised features of plain text prompts, in trimmed batches."""
        out = []
        for start in range(0, len(texts), batch_size):
            ids = self.trim(self.tokenize(texts[start : start + batch_size])).to(self.device)
            out.append(self.encode_text(ids))
        return torch.cat(out)

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learned temperature): the multiplier of cosine similarities."""
        raise NotImplementedError

    def text_train(self, mode: bool = True) -> None:
        """Toggle train-mode behaviour (dropout) of the text tower alone."""
        self.text_tower.train(mode)

    @property
    def text_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def image_tower(self) -> nn.Module:
        """The image encoder module (the methods that tune the towers adapt its weights)."""
        return self.model.visual

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- the tower hook contract (backbones/tower_hooks.py): deep prompts and activation steering ---
    def tower_layers(self, tower: str) -> TowerLayers:
        """The blocks of the "image" or "text" tower; raises TowerUnsupported when it has none."""
        raise TowerUnsupported("exposes no transformer blocks")

    def encode_image_hooked(self, images: torch.Tensor, hooks: TowerHooks) -> torch.Tensor:
        """encode_image with deep prompts and/or steering inside the image tower."""
        layers = require(self, "a method with tower hooks", {"image": "deep prompts or steering"})["image"]
        check_layers(hooks, layers, "image")
        with applied(layers, hooks, slot=None):
            return self.encode_image(images)

    def encode_text_hooked(self, embeds: torch.Tensor, ids: torch.Tensor, hooks: TowerHooks) -> torch.Tensor:
        """encode_text_embeddings with deep prompts and/or steering inside the text tower."""
        layers = require(self, "a method with tower hooks", {"text": "deep prompts or steering"})["text"]
        check_layers(hooks, layers, "text")
        if hooks.prompts and not hooks.context_slots:  # layer 0: spliced in as context-like tokens
            embeds, ids = self.insert_text_slots(embeds, ids, hooks.prompts[0])
            deeper = {i: p for i, p in hooks.prompts.items() if i != 0}
            hooks = TowerHooks(deeper, hooks.steer, context_slots=True)
        with applied(layers, hooks, slot=self.start_tokens):
            return self.encode_text_embeddings(embeds, ids)

    def insert_text_slots(self, embeds: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor):
        """`tokens` spliced in after the start tokens, with filler ids there (real, non-end tokens, so
        masks and end positions cover them); trailing padding gives way when the context is full."""
        n, start = int(tokens.shape[-2]), self.start_tokens
        if ids.shape[1] + n > self.context_length:
            keep = self.context_length - n
            longest = int(self.real_lengths(ids).max())
            if longest > keep:
                raise UserError(f"{self.name}: prompts of {longest} tokens plus {n} inserted prompt tokens exceed "
                                f"the text context length {self.context_length}; use fewer prompt tokens.")
            embeds, ids = embeds[:, :keep], ids[:, :keep]
        if not hasattr(self, "_filler_id"):
            self._filler_id = int(self.tokenize(["X"])[0, start])
        filler = torch.full((ids.shape[0], n), self._filler_id, dtype=ids.dtype, device=ids.device)
        return splice(embeds, tokens, start), torch.cat([ids[:, :start], filler, ids[:, start:]], dim=1)

    def release_image_tower(self) -> int:
        """Free the image tower's weights, for a run that will only read cached image features from now
        on (TrainerX does this once its features are cached); returns the bytes freed. The cache key is
        kept, so caches still match, and any later pass through the tower stops with one line naming
        this step instead of a shape error. Works for every family: it empties the tensors of the
        module `image_tower` returns, whatever the family calls its parts."""
        key = self.cache_key()
        self.cache_key = lambda: key  # noqa: E731 (the hash reads every tensor, the tower's included)
        tower, freed = self.image_tower, 0
        for tensor in [*tower.parameters(), *tower.buffers()]:
            freed += tensor.numel() * tensor.element_size()
            tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)

        def released(module, args):
            raise RuntimeError(f"{self.name}'s image tower was released after its features were cached "
                               "(TrainerX.keeps_image_tower is False for this method); set it True in a method "
                               "that encodes images after extraction")
        for module in tower.modules():
            module.register_forward_pre_hook(released)
        self.image_tower_released = True
        return freed

    def cache_key(self) -> str:
        """Identifies these weights, for feature caches: name + a hash of a sample of every tensor."""
        digest = hashlib.sha1()
        for key, tensor in sorted(self.state_dict().items()):
            flat = tensor.detach().reshape(-1)[:64].float().cpu()
            digest.update(key.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(flat.numpy().tobytes())
        return f"{self.name}-{digest.hexdigest()[:12]}"


def preset_input(cfg, given: set[str]) -> dict:
    """A named preset's own image preprocessing (its builder's `preprocess`: size, mean, std,
    interpolation from the model's config) written into cfg.INPUT, so each preset is fed as it was
    trained whatever the method's config file says; keys in `given` (command-line options) win.
    Returns what was set (empty for models without a preset preprocessing)."""
    from engine.registry import BACKBONE_REGISTRY

    name = cfg.MODEL.BACKBONE.NAME
    prep = getattr(BACKBONE_REGISTRY.get(name), "preprocess", None) if name in BACKBONE_REGISTRY else None
    if not prep:
        return {}
    wanted = {"INPUT.SIZE": (prep["size"], prep["size"]), "INPUT.PIXEL_MEAN": list(prep["mean"]),
              "INPUT.PIXEL_STD": list(prep["std"]), "INPUT.INTERPOLATION": prep["interpolation"]}
    applied = {key: value for key, value in wanted.items() if key not in given}
    for key, value in applied.items():
        setattr(cfg.INPUT, key.split(".", 1)[1], value)
    return applied


def weights_dir(cfg, model_name: str) -> str | None:
    """The local folder holding `model_name`'s files: MODEL.BACKBONE.PATH, else $BIOMEDCOOP_WEIGHTS_DIR/<name>."""
    explicit = cfg.MODEL.BACKBONE.PATH if cfg is not None else ""
    candidates = []
    if explicit:
        candidates += [os.path.join(explicit, model_name), explicit]
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        candidates += [os.path.join(env, model_name), env]
    for path in candidates:
        if os.path.isdir(path):
            return os.path.abspath(path)
    if explicit:
        raise UserError(f"MODEL.BACKBONE.PATH '{explicit}' is not a folder. Point it at the folder "
                        f"tools/download_weights.py wrote (it contains {model_name}/).")
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as the hub library reads it (its own constant, or the variable set since import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.upper() in ("1", "ON", "YES", "TRUE")


def hub_cached(repo_id: str, filename: str) -> bool:
    """True when `filename` of `repo_id` is already in the local Hugging Face cache (HF_HOME / HF_HUB_CACHE)."""
    from huggingface_hub import constants, try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE), str)


def url_reachable(url: str, timeout: float = 3.0) -> bool:
    """Any HTTP answer from `url` within `timeout` (proxies from the environment apply)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "biomedcoop-toolkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered (401, 404, ...): it is reachable
    except (urllib.error.URLError, OSError, ValueError):
        return False


def hub_problem(repo_id: str, filename: str, timeout: float = 3.0) -> str | None:
    """None when `repo_id` can be loaded through the Hugging Face hub library, else why not.

    Follows the library's own rules: a model already in the local cache loads even with
    HF_HUB_OFFLINE=1; otherwise HF_HUB_OFFLINE=1 refuses; otherwise the endpoint the library would
    use (HF_ENDPOINT, a mirror) is asked, through its own HTTP session and proxy settings, so an
    offline machine gets a clear error in seconds instead of after a minute of retries.
    """
    from huggingface_hub import constants, get_session

    if hub_cached(repo_id, filename):
        return None
    if hub_offline():
        return (f"HF_HUB_OFFLINE=1 is set and {repo_id} is not in the local Hugging Face cache "
                f"({constants.HF_HUB_CACHE}); unset HF_HUB_OFFLINE to download it")
    endpoint = constants.ENDPOINT.rstrip("/")
    try:
        get_session().head(f"{endpoint}/api/models/{repo_id}", timeout=timeout)
    except Exception:  # connection, DNS, proxy or TLS failures all mean "not reachable"
        return f"the hub ({endpoint}) cannot be reached for {repo_id}"
    return None


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Can files be fetched from `host` now? Hugging Face URLs go to the endpoint the hub library uses."""
    if hub_offline():
        return False
    from huggingface_hub import constants

    base = constants.ENDPOINT if host == "huggingface.co" else f"https://{host}"
    return url_reachable(base, timeout)


def safe_name(source: str) -> str:
    """A folder name for a hub id or model tag:
    'hf-hub:org/name' -> 'org--name', 'ViT-B-16:openai' -> 'ViT-B-16--openai'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", source.removeprefix("hf-hub:")).strip("-.")


def missing_weights_error(model_name: str, detail: str = "", source: str | None = None) -> UserError:
    """The offline error: what is missing and the download command. `source` is what the download
    tool is given when it is not the model name (a hub id for the generic families)."""
    generic = bool(source) and source != model_name
    what = f"{model_name} weights for {source}" if generic else f"{model_name} weights"
    folder = f"WEIGHTS/{safe_name(source)}" if generic else "WEIGHTS"
    return UserError(
        f"{what} are not available on this machine{': ' + detail if detail else ''}.\n"
        f"Fix: on a machine with internet run\n"
        f"    python tools/download_weights.py {source or model_name} --dir WEIGHTS\n"
        f"copy the WEIGHTS folder here, then either export {WEIGHTS_ENV}=WEIGHTS or add "
        f"`MODEL.BACKBONE.PATH {folder}` to the train.py command. "
        f"To try the pipeline without weights, use the offline twin Tiny{model_name}."
    )
