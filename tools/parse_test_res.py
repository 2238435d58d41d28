"""Print each seed's test accuracy in a run folder, then mean +- std over seeds.

    python tools/parse_test_res.py output/btmri/shots_4/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend

Reads results.json in each seed folder; falls back to the last "* accuracy: X%" after "=> result"
in log.txt (so reference-style logs work too). std is numpy's population std, as in the reference;
--ci95 prints 1.96*std/sqrt(n) instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import _bootstrap  # noqa: F401

from engine.utils import read_json

METRIC_LINE = re.compile(r"^\* (\w+): ([\d.]+)%")


def read_metric(folder: str, keyword: str = "accuracy") -> float | None:
    results = os.path.join(folder, "results.json")
    if os.path.isfile(results):
        try:
            record = read_json(results)
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: {results} is empty or not valid JSON ({err}); rerun that seed "
                             "(FORCE=1 for the scripts) or delete the file") from err
        if not isinstance(record, dict):
            raise SystemExit(f"error: {results} does not hold a results record; rerun that seed or delete the file")
        value = record.get(keyword)
        return None if value is None else float(value)
    log = os.path.join(folder, "log.txt")
    if not os.path.isfile(log):
        return None
    value, seen_result = None, False
    with open(log, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "=> result":
                seen_result = True
            match = METRIC_LINE.match(line)
            if seen_result and match and match.group(1) == keyword:
                value = float(match.group(2))
    return value


def summarize(directory: str, keyword: str = "accuracy", ci95: bool = False) -> tuple[list, float, float]:
    if not os.path.isdir(directory):
        raise SystemExit(f"error: {directory} is not a folder")
    rows = []
    for name in sorted(os.listdir(directory)):
        sub = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isdir(sub):
            continue
        value = read_metric(sub, keyword)
        if value is not None:
            rows.append((sub, value))
    if not rows:
        raise SystemExit(f"error: no results.json or finished log.txt under {directory}")
    import numpy as np  # here, not at the top: --help answers at once

    values = np.array([v for _, v in rows])
    spread = values.std()
    if ci95:
        spread = 1.96 * spread / np.sqrt(len(values))
    return rows, float(values.mean()), float(spread)


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
    rows, mean, spread = summarize(directory, args.keyword, args.ci95)
    for path, value in rows:
        print(f"file: {path}\n{args.keyword}: {value:.2f}%")
    print("===")
    print(f"Summary of directory: {directory}")
    print(f"* {args.keyword}: {mean:.2f}% +- {spread:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
