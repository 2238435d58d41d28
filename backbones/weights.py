"""Which files each model family needs, where they live on disk, and a verified downloader for them.

Layout: every family keeps its files in one folder, `<DIR>/<Model>/`, exactly as listed under
"files" in backbones/configs/<Model>.json ("path" is relative to that folder). A loader finds the
folder through MODEL.BACKBONE.PATH or $BIOMEDCOOP_WEIGHTS_DIR (backbones.base.weights_dir), then
the download cache (<cache>/weights/<Model>/), which it fills itself when the machine is online.

Downloads stream to `<file>.<pid>.part` beside the target and are renamed only once the byte count (and
the SHA-256, where known) checks out, so an interrupted download never looks complete. What was
verified is recorded in `<DIR>/<Model>/.download.json`; a file recorded there with the same size
is not fetched again. SHA-256 comes from the config (the OpenAI URL embeds it) or from the hub's
X-Linked-Etag header on large (LFS) files.

Base URLs: "{hf}" = $BIOMEDCOOP_HF_ENDPOINT, else $HF_ENDPOINT, else https://huggingface.co;
"{openai}" = $BIOMEDCOOP_OPENAI_ENDPOINT, else https://openaipublic.azureedge.net. Tests point
both at a local server.

Requests to the "{hf}" base carry the user's Hugging Face token, found the way huggingface_hub finds
it (HF_TOKEN, else the file `hf auth login` writes; none with HF_HUB_DISABLE_IMPLICIT_TOKEN), so
gated models (MedSigLIP) download once their licence is accepted. The token goes to that host only,
never along a redirect to another host (the hub sends large files from a CDN). When the hub refuses
a file (HTTP 401/403), `download` stops with one line naming the model and what to do, and removes
the folders it made in that run.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlparse

from tqdm import tqdm

from backbones.base import (
    CONFIG_DIR,
    hub_offline,
    hub_reachable,
    load_family_config,
    missing_weights_error,
    weights_dir,
)
from backbones.twins import cache_root
from engine.errors import UserError
from engine.utils import write_json

HF_ENDPOINT_ENV = "BIOMEDCOOP_HF_ENDPOINT"
OPENAI_ENDPOINT_ENV = "BIOMEDCOOP_OPENAI_ENDPOINT"
DEFAULT_ENDPOINTS = {"hf": "https://huggingface.co", "openai": "https://openaipublic.azureedge.net"}
MANIFEST = ".download.json"
CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger(__name__)


class DownloadError(UserError):
    """A file could not be fetched or did not verify (`status`: the HTTP status, when there was one)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AccessRefused(DownloadError):
    """The hub answered 401/403: the repository is gated (its licence not accepted by the token's
    account, or no token), private, or absent. `explain(model)` is the one line the user sees."""

    def __init__(self, url: str, status: int, gated: bool, token_sent: bool):
        super().__init__(f"{url}: HTTP {status}", status=status)
        self.url, self.gated, self.token_sent = url, gated, token_sent

    def explain(self, model: str) -> str:
        page = self.url.split("/resolve/", 1)[0]  # the repository's page on the same hub
        token = "a token was sent" if self.token_sent else "no Hugging Face token was found"
        steps = (f"accept its licence on {page} while logged in, run `hf auth login` (or set HF_TOKEN) with a "
                 "token of that account, then run this command again")
        if self.gated:
            return (f"{model} is gated on the Hugging Face hub, which refused the download (HTTP {self.status}, "
                    f"{token}): {steps}.")
        invalid = ", or the token is not valid (`hf auth whoami` checks it)" if self.token_sent else ""
        return (f"the Hugging Face hub refused {self.url} (HTTP {self.status}, {token}): {model} is gated, private "
                f"or not there{invalid}; check the name, and if it is gated {steps}.")


@dataclass(frozen=True)
class RemoteFile:
    url: str
    path: str  # relative to <DIR>/<Model>/
    sha256: str | None = None
    hub: bool = False  # on the Hugging Face endpoint: send the user's token


def hub_authorization() -> str | None:
    """The Authorization header huggingface_hub itself would send (HF_TOKEN, else the `hf auth login`
    token file; None without a token or with HF_HUB_DISABLE_IMPLICIT_TOKEN)."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers().get("authorization")


def endpoints(overrides: dict[str, str] | None = None) -> dict[str, str]:
    found = {
        "hf": os.environ.get(HF_ENDPOINT_ENV) or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINTS["hf"],
        "openai": os.environ.get(OPENAI_ENDPOINT_ENV) or DEFAULT_ENDPOINTS["openai"],
    }
    found.update({k: v for k, v in (overrides or {}).items() if v})
    return {k: v.rstrip("/") for k, v in found.items()}


def downloadable_models() -> list[str]:
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
    return [n for n in names if load_family_config(n).get("files")]


def family_files(model: str, overrides: dict[str, str] | None = None) -> list[RemoteFile]:
    """The files `model` needs, with their URLs resolved against the current endpoints."""
    if model not in downloadable_models():
        raise UserError(f"No downloadable weights for '{model}'. Choose from: {', '.join(downloadable_models())} "
                        f"(the Tiny* twins need no weights).")
    base = endpoints(overrides)
    return [RemoteFile(spec["url"].format(**base), spec["path"], spec.get("sha256"), spec["url"].startswith("{hf}"))
            for spec in load_family_config(model)["files"]]


# ----- manifest --------------------------------------------------------------------------------
def read_manifest(folder: str) -> dict:
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _record(folder: str, remote: RemoteFile, size: int, sha256: str) -> None:
    manifest = read_manifest(folder)
    manifest[remote.path] = {"size": size, "sha256": sha256, "url": remote.url}
    write_json(manifest, os.path.join(folder, MANIFEST))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(folder: str, remote: RemoteFile) -> bool:
    """True when the file is present and matches what was verified when it was downloaded."""
    target = os.path.join(folder, remote.path)
    if not os.path.isfile(target):
        return False
    entry = read_manifest(folder).get(remote.path)
    size = os.path.getsize(target)
    if remote.sha256:
        if entry and entry.get("sha256") == remote.sha256 and entry.get("size") == size:
            return True
        if file_sha256(target) == remote.sha256:  # e.g. copied in by hand: hash once, then trust
            _record(folder, remote, size, remote.sha256)
            return True
        return False
    return bool(entry) and entry.get("size") == size


# ----- fetching --------------------------------------------------------------------------------
class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Keeps the hub's X-Linked-* headers (size and SHA-256 of LFS files), sent only on the redirect, and
    the token on redirects within the same host (a renamed repository), never to another (the CDN)."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, str] = {}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        for key in ("X-Linked-Etag", "X-Linked-Size"):
            if headers.get(key):
                self.seen[key] = headers[key]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        here, there = urlparse(req.full_url), urlparse(new.full_url) if new is not None else None
        if token and there is not None and (here.scheme, here.netloc) == (there.scheme, there.netloc):
            new.add_unredirected_header("Authorization", token)
        return new


def fetch(remote: RemoteFile, folder: str, progress: bool = True, timeout: float = 60.0) -> str:
    """Download one file into `folder` atomically and verify it; returns its path."""
    target = os.path.join(folder, remote.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = f"{target}.{os.getpid()}.part"  # per process: two runs filling one cache do not collide
    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(remote.url, headers={"User-Agent": "biomedcoop-toolkit"})
    token = hub_authorization() if remote.hub else None
    if token:
        request.add_unredirected_header("Authorization", token)  # _RecordingRedirects decides on redirects
    digest, received = hashlib.sha256(), 0
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = {**{k: v for k, v in response.headers.items()}, **redirects.seen}
            size_header = headers.get("X-Linked-Size") or headers.get("Content-Length")
            expected_size = int(size_header) if size_header else None
            linked = (headers.get("X-Linked-Etag") or "").strip('"').lower()
            expected_sha = remote.sha256 or (linked if _SHA256.match(linked) else None)
            with open(part, "wb") as out, tqdm(total=expected_size, unit="B", unit_scale=True, unit_divisor=1024,
                                               desc=remote.path, disable=not progress, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_size is not None and received != expected_size:
            raise DownloadError(f"{remote.url}: received {received} bytes, expected {expected_size}; run again.")
        sha = digest.hexdigest()
        if expected_sha and sha != expected_sha:
            raise DownloadError(f"{remote.url}: SHA-256 {sha} does not match the expected {expected_sha}; "
                                "the download is corrupt, run again.")
        os.replace(part, target)
    except urllib.error.HTTPError as err:
        if remote.hub and err.code in (401, 403):
            gated = (err.headers.get("X-Error-Code") or "") == "GatedRepo"
            raise AccessRefused(remote.url, err.code, gated, token_sent=bool(token)) from err
        raise DownloadError(f"{remote.url}: HTTP {err.code} {err.reason}", status=err.code) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DownloadError(f"{remote.url}: {getattr(err, 'reason', err)}") from err
    finally:
        if os.path.exists(part):
            os.remove(part)
    _record(folder, remote, received, sha)
    return target


def _fetch_if_needed(remote: RemoteFile, folder: str, progress: bool, required: bool = True) -> bool:
    """Fetch `remote` unless it is complete; False when an optional file is absent (HTTP 404)."""
    if is_complete(folder, remote):
        log.info("%s is complete, skipped", os.path.join(folder, remote.path))
        return True
    log.info("Downloading %s -> %s", remote.url, os.path.join(folder, remote.path))
    try:
        fetch(remote, folder, progress=progress)
    except DownloadError as err:
        if required or err.status != 404:
            raise
        return False
    return True


def _have_one_of(candidates: list[RemoteFile], folder: str, progress: bool) -> bool:
    """One of several alternative files (e.g. safetensors or .bin weights) is complete, or fetched now."""
    return any(is_complete(folder, c) for c in candidates) or any(
        _fetch_if_needed(c, folder, progress, required=False) for c in candidates)


def download(model: str, root: str, overrides: dict[str, str] | None = None, progress: bool = True) -> str:
    """Fetch every file `model` needs into <root>/<model>/, skipping complete ones; returns that folder.
    `model` is a preset name (backbones/configs/<model>.json), an open_clip hub id / ARCH:TAG, or a
    transformers repository 'org/name' (a CLIP or SigLIP checkpoint). A failed download takes back the
    folders it made while they are still empty (offline, nothing is left behind); refused by the hub
    (gated, no access), it takes them back whole and says in one line what to do."""
    try:
        with _no_new_empty_folders(root):
            if ":" in model:
                return download_open_clip(model, root, overrides, progress)
            if "/" in model:
                return download_transformers(model, root, overrides, progress)
            folder = os.path.join(root, model)
            os.makedirs(folder, exist_ok=True)
            for remote in family_files(model, overrides):
                _fetch_if_needed(remote, folder, progress)
            return folder
    except AccessRefused as err:
        raise DownloadError(err.explain(model), status=err.status) from None


@contextmanager
def _no_new_empty_folders(root: str) -> Iterator[None]:
    """On an exception, remove the folders made inside the block (root, its new parents and anything new
    below it) that hold no file; a partly filled folder is kept, so the next run skips what it has.
    Refused by the hub (AccessRefused), the new folders go with their files: without access to the
    rest, what came before the refusal (a config, a tokenizer) is no usable model."""
    root = os.path.abspath(root)
    made_above, path = [], root  # root and the parents of it that do not exist yet, deepest first
    while not os.path.exists(path) and os.path.dirname(path) != path:
        made_above.append(path)
        path = os.path.dirname(path)
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    try:
        yield
    except BaseException as failure:
        new = [os.path.join(root, e) for e in (set(os.listdir(root)) if os.path.isdir(root) else set()) - before]
        for top in new:
            if isinstance(failure, AccessRefused) and os.path.isdir(top) and not os.path.islink(top):
                shutil.rmtree(top, ignore_errors=True)
            elif os.path.isdir(top) and not os.path.islink(top):
                for here, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):  # deepest first
                    with suppress(OSError):  # not empty: something landed there
                        os.rmdir(here)
        for path in made_above:
            with suppress(OSError):
                os.rmdir(path)
        raise


# Files open_clip repositories and HF text models keep their tokenizer in (each optional).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _builtin_open_clip_config(source: str) -> tuple[dict, str, str]:
    """(open_clip_config.json content, hub repo, weights file) for an open_clip built-in 'ARCH:TAG'."""
    import open_clip

    arch, _, tag = source.partition(":")
    model_cfg = open_clip.get_model_config(arch)
    pretrained = open_clip.get_pretrained_cfg(arch, tag) if model_cfg else {}
    repo, filename = os.path.split(pretrained.get("hf_hub", "")) if pretrained else ("", "")
    if not repo:
        raise UserError(f"'{source}' is not an open_clip name:tag with weights on the hub "
                        f"(see open_clip.list_pretrained()); use hf-hub:org/name for other models.")
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    preprocess = {k: pretrained[k] for k in ("mean", "std", "interpolation", "resize_mode") if pretrained.get(k)}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, repo, filename


def download_open_clip(source: str, root: str, overrides: dict[str, str] | None = None, progress: bool = True) -> str:
    """Fetch an open_clip model into <root>/<safe_name(source)>/ so that MODEL.BACKBONE.PATH loads it offline:
    open_clip_config.json, its weights file, its tokenizer files and, for an HF text tower, that
    model's config.json (and tokenizer) in text/. `source`: 'hf-hub:org/name' or 'ARCH:TAG'."""
    from backbones.base import safe_name

    hf = endpoints(overrides)["hf"]
    folder = os.path.join(root, safe_name(source))
    os.makedirs(folder, exist_ok=True)

    def remote(repo: str, name: str, path: str | None = None) -> RemoteFile:
        return RemoteFile(f"{hf}/{repo}/resolve/main/{name}", path or name, hub=True)

    if source.startswith("hf-hub:"):
        repo, weight_names = source.removeprefix("hf-hub:"), OPEN_CLIP_WEIGHTS
        _fetch_if_needed(remote(repo, "open_clip_config.json"), folder, progress)
        with open(os.path.join(folder, "open_clip_config.json"), encoding="utf-8") as f:
            config = json.load(f)
    else:
        config, repo, filename = _builtin_open_clip_config(source)
        write_json(config, os.path.join(folder, "open_clip_config.json"))
        weight_names = (filename,) if filename else OPEN_CLIP_WEIGHTS
    # Stored under open_clip's own names, which the loader looks for (the suffix says how to read it).
    local_name = {True: OPEN_CLIP_WEIGHTS[0], False: OPEN_CLIP_WEIGHTS[1]}
    candidates = [remote(repo, name, local_name[name.endswith(".safetensors")]) for name in weight_names]
    if not _have_one_of(candidates, folder, progress):
        raise DownloadError(f"{hf}/{repo} has none of the weights files {', '.join(weight_names)}.")
    for name in TOKENIZER_FILES:
        _fetch_if_needed(remote(repo, name), folder, progress, required=False)
    text_cfg = config.get("model_cfg", config).get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        _fetch_if_needed(remote(text_cfg["hf_model_name"], "config.json", "text/config.json"), folder, progress)
    tokenizer_repo = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    if tokenizer_repo:
        for name in TOKENIZER_FILES:
            _fetch_if_needed(remote(tokenizer_repo, name, f"text/{name}"), folder, progress, required=False)
    return folder


# What a transformers CLIP / SigLIP folder holds besides its weights (each optional but config.json).
TRANSFORMERS_FILES = ("preprocessor_config.json", "added_tokens.json", "tokenizer.model", *TOKENIZER_FILES)
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def download_transformers(repo: str, root: str, overrides: dict[str, str] | None = None,
                          progress: bool = True) -> str:
    """Fetch a transformers checkpoint 'org/name' into <root>/<org--name>/, the folder HFCLIP / HFSigLIP
    load with MODEL.BACKBONE.PATH (or find under it by MODEL.BACKBONE.HUB): config.json, the weights
    (one file, or the shards a *.index.json lists), tokenizer and image-processor files."""
    from backbones.base import safe_name

    hf = endpoints(overrides)["hf"]
    folder = os.path.join(root, safe_name(repo))
    os.makedirs(folder, exist_ok=True)

    def remote(name: str) -> RemoteFile:
        return RemoteFile(f"{hf}/{repo}/resolve/main/{name}", name, hub=True)

    _fetch_if_needed(remote("config.json"), folder, progress)
    single = [remote(name) for name in TRANSFORMERS_WEIGHTS]
    if not _have_one_of(single, folder, progress):
        index = next((name for name in (f"{w}.index.json" for w in TRANSFORMERS_WEIGHTS)
                      if _fetch_if_needed(remote(name), folder, progress, required=False)), None)
        if index is None:
            raise DownloadError(f"{hf}/{repo} has none of the weights files "
                                f"{', '.join(TRANSFORMERS_WEIGHTS)} (nor a sharded index).")
        with open(os.path.join(folder, index), encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        for shard in shards:
            _fetch_if_needed(remote(shard), folder, progress)
    for name in TRANSFORMERS_FILES:
        _fetch_if_needed(remote(name), folder, progress, required=False)
    return folder


def locate_weights(cfg, model: str) -> str:
    """The folder holding `model`'s files: MODEL.BACKBONE.PATH / $BIOMEDCOOP_WEIGHTS_DIR, else the
    download cache, which is filled now if the source is reachable. Offline with nothing local:
    the one clear error naming tools/download_weights.py, within seconds."""
    folder = weights_dir(cfg, model)
    if folder:
        return folder
    root = os.path.join(cache_root(), "weights")
    cached = os.path.join(root, model)
    files = family_files(model)
    if all(is_complete(cached, remote) for remote in files):
        return cached
    host = urlparse(files[0].url).hostname or files[0].url
    if hub_offline():
        raise missing_weights_error(model, "no local copy was found and HF_HUB_OFFLINE=1 forbids downloading it")
    if not hub_reachable(host):
        raise missing_weights_error(model, f"no local copy was found and {host} cannot be reached")
    try:
        return download(model, root)
    except DownloadError as err:
        raise missing_weights_error(model, str(err)) from err


def torch_load(path: str):
    """torch.load of a plain checkpoint onto the CPU (torch imported here: the download tool does not need it)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _where(path: str) -> str:
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return f"  folder: {os.path.dirname(os.path.abspath(path))}\n  file:   {os.path.basename(path)} ({size:,} bytes)"


def _keys(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"\n  {label} ({len(keys)}): {shown}"


def _download_fix(model: str) -> str:
    return f"download it again with `python tools/download_weights.py {model} --dir WEIGHTS`"


def read_weights(path: str, model: str, read: Callable[[str], dict] | None = None, fix: str = "") -> dict:
    """The tensors stored in `path` (read with `read`, default torch.load), or a short UserError
    saying the file is damaged: an unreadable weights file is almost always an interrupted download."""
    try:
        return (read or torch_load)(path)
    except Exception as err:  # pickle, zip, safetensors-header and EOF errors all mean the same thing here
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{model}: the weights file cannot be read.\n{_where(path)}\n  error:  {err.__class__.__name__}: {first}\n"
            f"Likely cause: the file is incomplete or damaged (a truncated or interrupted download).\n"
            f"Fix: {fix or _download_fix(model)}."
        ) from err


def load_state_or_explain(module, state: dict, path: str, model: str, *, architecture: str = "",
                          fix: str = "", prepare: Callable | None = None) -> None:
    """Load every tensor of `state` into `module`, or stop with a few lines naming the folder, the file,
    the first missing, unexpected and resized keys, and the likely cause.

    `prepare(module, state) -> state` adapts a layout first (open_clip's older and third-party
    formats); `architecture` names where the model's shape came from (a config file).
    """
    architecture = architecture or "the model's configuration"
    if prepare:
        state = prepare(module, state)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
               for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or resized):
        module.load_state_dict(state, strict=True)
        return
    detail = "".join(_keys(label, keys) for label, keys in
                     (("missing", missing), ("unexpected", unexpected), ("size mismatch", resized)) if keys)
    if len(state) - len(unexpected) <= 0:
        cause = f"this file holds another kind of model (the wrong model for {model})"
    elif resized and not (missing or unexpected):
        cause = (f"the layer names match but their sizes do not: {architecture} describes another size "
                 f"(width, heads, patch, embedding) than the weights were saved from")
    elif unexpected or resized:
        cause = f"{architecture} describes a different architecture than the one these weights were saved from"
    else:
        cause = "the file holds only part of the model (the wrong file, or a partial save)"
    fix = fix or f"use the weights that belong to this model, or {_download_fix(model)}"
    raise UserError(f"{model}: the weights do not fit the model.\n{_where(path)}{detail}\n"
                    f"Likely cause: {cause}.\nFix: {fix}.")


def load_weights(module, path: str, model: str, *, read: Callable[[str], dict] | None = None,
                 prepare: Callable | None = None, architecture: str = "", fix: str = "") -> None:
    """The one way every family loads a weights file: read it (a damaged file is named), then load it
    (a mismatch is explained); see read_weights and load_state_or_explain."""
    state = read_weights(path, model, read, fix)
    load_state_or_explain(module, state, path, model, architecture=architecture, fix=fix, prepare=prepare)


def require(folder: str, model: str, *paths: str) -> list[str]:
    """Full paths of files a loader needs in `folder`, or the missing-weights error naming the first absent one."""
    full = [os.path.join(folder, p) for p in paths]
    for path in full:
        if not os.path.isfile(path):
            raise missing_weights_error(model, f"{path} does not exist")
    return full
