"""Print each seed's test accuracy in a run folder, then mean +- std over seeds.

    python tools/parse_test_res.py output/btmri/shots_4/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend

Reads results.json in each seed folder; falls back to the last "* accuracy: X%" after "=> result"
in log.txt (so reference-style logs work too). std is numpy's population std, as in the reference;
--ci95 prints 1.96*std/sqrt(n) instead. Seeds whose results.json name different runs (another
method, model, dataset, K or settings) are not averaged: the tool stops and names the two folders.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from results.seed_summary import BrokenRecord, SummaryError, summarize


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", nargs="?", help="run folder holding seed*/ subfolders")
    p.add_argument("--directory", dest="directory_opt", help="same, as the reference spells it")
    p.add_argument("--keyword", default="accuracy", help="accuracy, error or macro_f1")
    p.add_argument("--ci95", action="store_true", help="print the 95%% confidence half-width instead of std")
    p.add_argument("--test-log", action="store_true", help="accepted for compatibility; always on")
    args = p.parse_args(argv)
    directory = args.directory or args.directory_opt
    if not directory:
        p.error("give the run folder")
    try:
        rows, mean, spread = summarize(directory, args.keyword, args.ci95)
    except BrokenRecord as err:
        if err.unreadable:
            print(f"error: {err.path} is empty or not valid JSON ({err.why}); rerun that seed "
                  "(FORCE=1 for the scripts) or delete the file", file=sys.stderr)
        else:
            print(f"error: {err}; rerun that seed or delete the file", file=sys.stderr)
        return 1
    except SummaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for row in rows:
        print(f"file: {row.folder}\n{args.keyword}: {row.value:.2f}%")
    print("===")
    print(f"Summary of directory: {directory}")
    print(f"* {args.keyword}: {mean:.2f}% +- {spread:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
