"""Learned weights on the Hugging Face Hub: a run's checkpoints as safetensors, and back.

A pushed run (results/hub.py writes it, tools/push_to_hub.py is the command) is a folder holding
results.json, config.json (the effective config) and `<model>/model.safetensors` for each learned
module (its tensors; the epoch and the method / backbone it was trained with in the metadata). A grid
repository holds such folders at their paths under the output root.

`hf-hub:ORG/NAME[@REVISION][/SUB/FOLDER]` names one of them wherever a run folder is expected
(train.py --model-dir, tools/predict.py --run). `local_run` downloads the repository (or just the
sub-folder) into the HF cache with snapshot_download, then writes the Dassl layout the trainer loads
(`<model>/model.pth.tar-<E>`) into <user cache>/hub_runs/, once per commit: afterwards it works
offline (HF_HUB_OFFLINE=1) from the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from engine.errors import UserError

HUB_PREFIX = "hf-hub:"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
_CHECKPOINT = re.compile(r"^model\.pth\.tar-(\d+)$")


def is_hub_ref(value) -> bool:
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_ref(ref: str) -> tuple[str, str | None, str]:
    """'hf-hub:org/name@rev/a/b' -> ('org/name', 'rev', 'a/b'); revision None = the main branch."""
    parts = [p for p in ref[len(HUB_PREFIX):].split("/") if p]
    if len(parts) < 2:
        raise UserError(f"{ref!r} is not a hub run: write hf-hub:ORG/NAME (optionally @REVISION after the name "
                        "and /SUB/FOLDER for one run of a grid repository).")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, "/".join(parts[2:])


def endpoint() -> str | None:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def checkpoint_files(model_dir: str, epoch: int | None = None) -> dict[str, str]:
    """{model name: path of its model.pth.tar-<E>} in a folder of Dassl checkpoints (the newest, or `epoch`)."""
    found = {}
    if not os.path.isdir(model_dir):
        return found
    for name in sorted(os.listdir(model_dir)):
        folder = os.path.join(model_dir, name)
        if not os.path.isdir(folder):
            continue
        epochs = sorted(int(m.group(1)) for f in os.listdir(folder) if (m := _CHECKPOINT.match(f)))
        if epochs:
            chosen = epoch if epoch is not None else epochs[-1]
            if chosen in epochs:
                found[name] = os.path.join(folder, f"model.pth.tar-{chosen}")
    return found


def export_weights(checkpoint: str, dest: str) -> int:
    """One Dassl checkpoint's learned tensors as safetensors at `dest`; returns how many values it holds."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tensors = {k: v.detach().clone().contiguous() for k, v in state["state_dict"].items() if torch.is_tensor(v)}
    metadata = {"format": "pt", "epoch": str(state.get("epoch")),
                "trained_with": json.dumps(state.get("trained_with") or {}, sort_keys=True)}
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    save_file(tensors, dest, metadata=metadata)
    return sum(t.numel() for t in tensors.values())


def import_weights(source: str, model_dir: str, name: str) -> str:
    """A pushed `<name>/model.safetensors` back into `<model_dir>/<name>/model.pth.tar-<E>`; returns its path."""
    from safetensors import safe_open

    from engine.utils import torch_save_atomic

    with safe_open(source, framework="pt") as f:
        metadata = f.metadata() or {}
        state_dict = {key: f.get_tensor(key) for key in f.keys()}
    epoch = int(metadata["epoch"]) if str(metadata.get("epoch", "")).isdigit() else 1
    trained_with = json.loads(metadata.get("trained_with") or "{}")
    state = {"state_dict": state_dict, "epoch": epoch, "optimizer": None, "scheduler": None,
             **({"trained_with": trained_with} if trained_with else {})}
    path = os.path.join(model_dir, name, f"model.pth.tar-{epoch}")
    torch_save_atomic(state, path)
    return path


def local_run(ref: str) -> str:
    """The local run folder (results.json + Dassl checkpoints) of a hub run, downloaded once per commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from engine.utils import user_cache_dir

    repo_id, revision, sub = parse_ref(ref)
    try:
        snapshot = snapshot_download(repo_id, revision=revision, endpoint=endpoint(),
                                     allow_patterns=[f"{sub}/*", f"{sub}/*/*"] if sub else None)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        hint = ("HF_HUB_OFFLINE is set and it is not in the cache yet: download it once online"
                if offline else "check the name, the revision, your token (hf auth login) and the connection")
        raise UserError(f"Cannot get {ref} from the hub ({err.__class__.__name__}): {hint}.") from None
    source = os.path.join(snapshot, sub) if sub else snapshot
    if not os.path.isfile(os.path.join(source, RESULTS_FILE)):
        raise UserError(f"{ref} holds no {RESULTS_FILE}: not a run pushed by tools/push_to_hub.py (a grid repository "
                        "needs the run's folder after the name, e.g. hf-hub:ORG/NAME/btmri/shots_4/.../seed1).")
    commit = os.path.basename(os.path.normpath(snapshot))
    dest = os.path.join(user_cache_dir(), "hub_runs", f"{repo_id.replace('/', '--')}--{commit}", sub)
    done = os.path.join(dest, ".complete")
    if not os.path.isfile(done):
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(source)):
            weights = os.path.join(source, name, WEIGHTS_FILE)
            if os.path.isfile(weights):
                import_weights(weights, dest, name)
        for name in (RESULTS_FILE, CONFIG_FILE):
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(dest, name))
        with open(done, "w", encoding="utf-8") as f:
            f.write(ref + "\n")
    return dest
