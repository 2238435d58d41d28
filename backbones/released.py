"""The BiomedCoOp authors' released checkpoints (BiomedCLIP backbone): where each one lives and fetching
every seed that exists (tools/download_checkpoints.py is the command).

The hub repository's file list is read first, so only checkpoints that were released are fetched and
the others are named; files already present are skipped. huggingface_hub is imported when used.
"""

from __future__ import annotations

import os
import shutil

REPO_ID = "TahaKoleilat/BiomedCoOp"
TAG = "nctx4_cscFalse_ctpend"
TRAINER = "BiomedCoOp_BiomedCLIP"
FEW_SHOT_EPOCH, BASE2NEW_EPOCH = 100, 50
ALL_SHOTS = (1, 2, 4, 8, 16)


def checkpoint_path(task: str, dataset: str, seed: int, shots: int = 16) -> str:
    """Relative path of one released checkpoint (the same inside the hub repository and under DIR)."""
    if task == "few_shot":
        return (f"few_shot/{dataset}/shots_{shots}/{TRAINER}/{TAG}/seed{seed}/prompt_learner/"
                f"model.pth.tar-{FEW_SHOT_EPOCH}")
    return (f"base2new/train_base/{dataset}/shots_16/{TRAINER}/{TAG}/seed{seed}/prompt_learner/"
            f"model.pth.tar-{BASE2NEW_EPOCH}")


def wanted(tasks: list[str], datasets: list[str], shots: list[int] | None, seeds: list[int]) -> list[str]:
    """Relative paths of the checkpoints asked for (`shots` None: every released K); base-to-novel skips the
    datasets without a class split."""
    from datasets.benchmarks import BENCHMARKS

    shots = list(ALL_SHOTS) if shots is None else shots
    no_split = {spec.config for spec in BENCHMARKS.values() if not spec.has_base2new}
    paths = []
    for task in tasks:
        for ds in datasets:
            if task == "base2new" and ds in no_split:
                continue
            for seed in seeds:
                if task == "few_shot":
                    paths += [checkpoint_path(task, ds, seed, k) for k in shots]
                else:
                    paths.append(checkpoint_path(task, ds, seed))
    return paths


class DownloadError(Exception):
    """The hub's file list could not be read (offline, no network): nothing was fetched."""


def released_files(repo_id: str = REPO_ID) -> dict[str, str]:
    """Lower-cased path -> path as spelled in the repository."""
    import huggingface_hub as hub

    try:
        files = hub.HfApi().list_repo_files(repo_id, repo_type="model")
    except Exception as err:  # offline mode, no network, proxy, hub down: all end the same way
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else f"{err.__class__.__name__}: {err}"
        raise DownloadError(
            f"cannot list the checkpoints of {repo_id} on the Hugging Face hub ({why}). On a machine with "
            "internet run this command, then copy the folder here (files already present are not fetched again)."
        ) from err
    return {f.lower(): f for f in files}


def fetch(paths: list[str], folder: str, repo_id: str = REPO_ID) -> dict[str, list[str]]:
    """Download what is missing under `folder`. Returns {"present", "downloaded", "not_released", "failed"}."""
    report: dict[str, list[str]] = {"present": [], "downloaded": [], "not_released": [], "failed": []}
    todo = []
    for rel in paths:
        target = os.path.join(folder, rel)
        (report["present"] if os.path.isfile(target) and os.path.getsize(target) > 0 else todo).append(rel)
    if not todo:
        return report
    released = released_files(repo_id)
    import huggingface_hub as hub

    for rel in todo:
        remote = released.get(rel.lower())
        if remote is None:
            report["not_released"].append(rel)
            continue
        try:
            got = hub.hf_hub_download(repo_id, remote, repo_type="model", local_dir=folder)
        except Exception as err:
            report["failed"].append(f"{rel} ({err.__class__.__name__}: {err})")
            continue
        target = os.path.join(folder, rel)
        if os.path.abspath(got) != os.path.abspath(target):  # the repository spells the path differently
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(got, target)
        report["downloaded"].append(rel)
    return report


def summarize_missing(paths: list[str]) -> list[str]:
    """'few_shot btmri K=16: seeds 2, 3' lines instead of one path per checkpoint."""
    groups: dict[str, list[str]] = {}
    for rel in paths:
        parts = rel.split("/")
        if parts[0] == "few_shot":
            key, seed = f"few_shot {parts[1]} K={parts[2].removeprefix('shots_')}", parts[5]
        else:
            key, seed = f"base2new {parts[2]}", parts[6]
        groups.setdefault(key, []).append(seed.removeprefix("seed"))
    return [f"{key}: seed {', '.join(seeds)}" for key, seeds in groups.items()]
