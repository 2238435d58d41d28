"""Fetch the BiomedCoOp authors' released checkpoints (BiomedCLIP backbone), every seed that exists.

    python tools/download_checkpoints.py                                   # everything released
    python tools/download_checkpoints.py --task few_shot --datasets btmri --shots 16 --seeds 1 2 3

Files land in DIR (default `released/`) in the authors' layout (T = BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend):
    DIR/few_shot/<dataset>/shots_<K>/T/seed<S>/prompt_learner/model.pth.tar-100
    DIR/base2new/train_base/<dataset>/shots_16/T/seed<S>/prompt_learner/model.pth.tar-50
which is what scripts/biomedcoop/eval_fewshot.sh and eval_base2new.sh read. The repository's file
list is read first, so only checkpoints that were actually released are fetched, and the ones that
were not are named at the end (the reference's own downloader fetched seed 1 only, so its seed-2
and seed-3 evaluations failed). Files already present are skipped and an interrupted download
resumes, so the command can simply be repeated. Datasets use the config names (btmri, busi,
chmnist, covid, ctkidney, dermamnist, kneexray, kvasir, lungcolon, octmnist, retina); base-to-novel
has no BUSI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import _bootstrap  # noqa: F401

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


def wanted(tasks: list[str], datasets: list[str], shots: list[int], seeds: list[int]) -> list[str]:
    from datasets.benchmarks import BENCHMARKS

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
    pass


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["few_shot", "base2new", "all"], default="all")
    p.add_argument("--datasets", nargs="+", default=["all"], help="config names (btmri ...) or all")
    p.add_argument("--shots", type=int, nargs="+", default=list(ALL_SHOTS), help="few-shot K values")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--dir", default="released", help="where to put them (default: released)")
    args = p.parse_args(argv)
    from datasets.benchmarks import BENCHMARKS

    names = sorted(spec.config for spec in BENCHMARKS.values())
    datasets = names if "all" in args.datasets else [d.lower() for d in args.datasets]
    unknown = [d for d in datasets if d not in names]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(names)} or all")
    tasks = ["few_shot", "base2new"] if args.task == "all" else [args.task]
    paths = wanted(tasks, datasets, args.shots, args.seeds)
    folder = os.path.abspath(args.dir)
    try:
        report = fetch(paths, folder)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(report['downloaded'])} downloaded, {len(report['present'])} already present in {folder}")
    if report["not_released"]:
        print(f"not released by the authors ({len(report['not_released'])} checkpoint(s)); evaluation scripts "
              "skip these seeds:")
        for line in summarize_missing(report["not_released"]):
            print(f"  {line}")
    if report["failed"]:
        print("failed (run the command again to resume):", file=sys.stderr)
        for line in report["failed"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
