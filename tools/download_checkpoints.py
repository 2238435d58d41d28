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
import sys

import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["few_shot", "base2new", "all"], default="all")
    p.add_argument("--datasets", nargs="+", default=["all"], help="config names (btmri ...) or all")
    p.add_argument("--shots", type=int, nargs="+", help="few-shot K values (default: every released one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--dir", default="released", help="where to put them (default: released)")
    args = p.parse_args(argv)
    # after parsing: importing backbones/ loads torch, and --help should not wait for it
    from backbones.released import DownloadError, fetch, summarize_missing, wanted
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
