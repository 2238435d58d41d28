"""Check a dataset before training: every problem at once, each naming the file or class.

    python tools/check_data.py BTMRI --root DATA
    python tools/check_data.py MyScans --root DATA      # a dataset made by tools/prepare_dataset.py

Reads DATA/NAME/split_NAME.json and reports missing images, images that cannot be decoded (PIL verify,
then a full load, so truncated files are caught), label/class-string inconsistencies, class strings that
differ from the benchmark declaration (datasets/benchmarks.py), and classes without prompts in
clip_prompts/NAME.json (needed by BiomedCoOp), and few-shot subsets cached in NAME/split_fewshot/ that name
images the split no longer has. Exit status: 0 no problems (warnings allowed),
1 problems found, 2 the check could not run (no such dataset folder or split file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import _bootstrap  # noqa: F401

from datasets.check import check_dataset
from engine.errors import UserError


def print_report(report, out=None) -> None:
    out = out or sys.stdout
    print(f"{report.name}: {report.n_listed} images listed in {report.dataset_dir}", file=out)
    for title, items in (("problems", report.problems), ("warnings", report.warnings)):
        if items:
            print(f"{len(items)} {title}:", file=out)
            for item in items:
                print(f"  {item}", file=out)
    if report.ok:
        print("OK: no problems found.", file=out)
    else:
        kinds = Counter(p.split(":", 1)[0] if p.startswith(("missing file", "unreadable image")) else "other"
                        for p in report.problems)
        print(f"FAILED: {len(report.problems)} problem(s) ({dict(kinds)}); fix them before training.", file=out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="benchmark (BTMRI, busi, ...) or your own dataset's NAME")
    p.add_argument("--root", required=True, help="data root that holds NAME/")
    p.add_argument("--no-images", action="store_true", help="only check that files exist (skip decoding)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads decoding images")
    p.add_argument("--prompts-dir", default=None, help="folder of prompt ensembles (default clip_prompts/)")
    args = p.parse_args(argv)
    try:
        report = check_dataset(args.dataset, args.root, not args.no_images, args.workers, args.prompts_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
