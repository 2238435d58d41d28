"""Check LLM prompt ensembles against the rules in clip_prompts/README.md.

    python tools/check_prompts.py                  # all 11 benchmark files in clip_prompts/
    python tools/check_prompts.py BTMRI Kvasir     # some of them
    python tools/check_prompts.py MyData --file my_prompts.json --split DATA/MyData/split_MyData.json

For each file: every class of the dataset is present under its exact string, each class has at
least --min sentences, each sentence is one sentence that fits CLIP's 77 tokens (and BiomedCLIP's
BERT context where that vocabulary is on this machine), no exact or near duplicates within a class,
and no sentence that is another class's sentence with the class name swapped. The share of
sentences that name their class is reported for information. Exit code: 0 all rules hold, 1 a rule
is broken, 2 the command itself is wrong (unknown dataset, missing file).
"""

from __future__ import annotations

import argparse
import sys
import time

import _bootstrap  # noqa: F401

from engine.errors import UserError
from engine.prompts import PROMPTS_DIR
from prompts.checks import (
    ACROSS_NEAR,
    DEFAULT_MIN,
    NEAR,
    Report,
    check_file,
    check_jobs,
    default_counters,
    format_report,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="*", metavar="DATASET", help="dataset names (default: the 11 benchmarks)")
    p.add_argument("--dir", default=PROMPTS_DIR, help="folder of <DATASET>.json files (default: clip_prompts/)")
    p.add_argument("--file", help="check this file (one DATASET only) instead of <dir>/<DATASET>.json")
    p.add_argument("--split", help="split JSON whose classes the file must cover (for non-benchmark datasets)")
    p.add_argument("--root", help="data root: check a non-benchmark DATASET against ROOT/DATASET/split_DATASET.json")
    p.add_argument("--min", type=int, default=DEFAULT_MIN, help=f"sentences needed per class (default {DEFAULT_MIN})")
    p.add_argument("--near", type=float, default=NEAR,
                   help=f"similarity at which two sentences of a class are near-duplicates (default {NEAR})")
    p.add_argument("--across-near", type=float, default=ACROSS_NEAR,
                   help=f"similarity across classes, names replaced, that is warned about (default {ACROSS_NEAR})")
    p.add_argument("--bert-vocab", action="append", default=[], metavar="PATH",
                   help="also count tokens with this BERT vocab.txt (or its folder); repeatable")
    p.add_argument("--no-warnings", action="store_true", help="list errors only")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        if not 0 < args.near <= 1 or not 0 < args.across_near <= 1:
            raise UserError("--near and --across-near are similarities in (0, 1].")
        if args.min < 1:
            raise UserError("--min must be at least 1.")
        jobs = check_jobs(args.datasets, args.dir, args.file, args.split, args.root)
        counters, notes = default_counters(args.bert_vocab)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports: list[Report] = []
    for name, path, expected, note in jobs:
        report = check_file(path, name, expected, counters, min_count=args.min, near=args.near,
                            across_near=args.across_near)
        if note:
            report.notes.append(note)
        reports.append(report)
        print(format_report(report, show_warnings=not args.no_warnings))
        print()
    for note in notes:
        print(f"note: {note}")
    n_classes = sum(len(r.classes) for r in reports)
    n_sentences = sum(c.count for r in reports for c in r.classes)
    n_err = sum(len(r.errors) for r in reports)
    n_warn = sum(len(r.warnings) for r in reports)
    bad = [r.dataset for r in reports if not r.ok]
    verdict = "OK" if not bad else f"FAILED ({', '.join(bad)})"
    print(f"{len(reports)} file(s), {n_classes} classes, {n_sentences} sentences: {n_err} error(s), "
          f"{n_warn} warning(s) in {time.time() - start:.1f} s -> {verdict}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
