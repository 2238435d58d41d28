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
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
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
    """A file could not be fetched or did not verify."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    path: str  # relative to <DIR>/<Model>/
    sha256: str | None = None


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
    return [RemoteFile(spec["url"].format(**base), spec["path"], spec.get("sha256"))
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
    """Keeps the hub's X-Linked-* headers (size and SHA-256 of LFS files), sent only on the redirect."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, str] = {}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        for key in ("X-Linked-Etag", "X-Linked-Size"):
            if headers.get(key):
                self.seen[key] = headers[key]
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(remote: RemoteFile, folder: str, progress: bool = True, timeout: float = 60.0) -> str:
    """Download one file into `folder` atomically and verify it; returns its path."""
    target = os.path.join(folder, remote.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = f"{target}.{os.getpid()}.part"  # per process: two runs filling one cache do not collide
    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(remote.url, headers={"User-Agent": "biomedcoop-toolkit"})
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
        raise DownloadError(f"{remote.url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DownloadError(f"{remote.url}: {getattr(err, 'reason', err)}") from err
    finally:
        if os.path.exists(part):
            os.remove(part)
    _record(folder, remote, received, sha)
    return target


def download(model: str, root: str, overrides: dict[str, str] | None = None, progress: bool = True) -> str:
    """Fetch every file `model` needs into <root>/<model>/, skipping complete ones; returns that folder."""
    folder = os.path.join(root, model)
    os.makedirs(folder, exist_ok=True)
    for remote in family_files(model, overrides):
        if is_complete(folder, remote):
            log.info("%s/%s is complete, skipped", model, remote.path)
            continue
        log.info("Downloading %s -> %s", remote.url, os.path.join(folder, remote.path))
        fetch(remote, folder, progress=progress)
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


def load_state_or_explain(module, state: dict, what: str, name: str) -> None:
    """Load every tensor of `state` into `module`, or stop with a message naming the file and the fix."""
    try:
        result = module.load_state_dict(state, strict=False)
        problem = (f"missing: {result.missing_keys[:5]}, unexpected: {result.unexpected_keys[:5]}"
                   if result.missing_keys or result.unexpected_keys else "")
    except RuntimeError as err:  # shape mismatches
        lines = str(err).splitlines()
        problem = lines[1].strip() if len(lines) > 1 else str(err)
    if problem:
        raise UserError(f"{name}: the weights in {what} do not fit the {name} architecture ({problem}). "
                        f"Re-download them with tools/download_weights.py {name}.")


def require(folder: str, model: str, *paths: str) -> list[str]:
    """Full paths of files a loader needs in `folder`, or the missing-weights error naming the first absent one."""
    full = [os.path.join(folder, p) for p in paths]
    for path in full:
        if not os.path.isfile(path):
            raise missing_weights_error(model, f"{path} does not exist")
    return full
