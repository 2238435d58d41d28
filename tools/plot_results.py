"""Plot a tree of runs: accuracy against shots per method (average and one panel per dataset), and a
base-to-novel bar chart.

    python tools/plot_results.py output --out results.png      # .png, .pdf or .svg

Lines are the mean over seeds, bands the population std over seeds, one line per row as make_tables
names them (method, variant, model; settings that differ within a cell split the row); zero-shot
methods, which do not depend on K, are dashed horizontal lines. A point whose cell lacks a seed of the grid (or holds a
failed run) is drawn as an "x", as make_tables marks it with "*". The base-to-novel chart shows the
averaged base and novel accuracies and the HM of those averages per method, with std error bars.
--paper adds the paper's published average curves (thin dotted lines) to the first panel.
Runs on tiny random twins are labelled as such in the title.

    python tools/plot_results.py output/tau_sweep --against TRAINER.BIOMEDCOOP.TAU --out tau.png

--against KEY instead draws accuracy against the value of one config key (mean ± std over seeds), one
line per series (method, model, dataset, K and every other setting); the values sit evenly spaced
in order, so "none" (no pruning) and numbers share one axis.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from results.plots import plot_against, plot_results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the runs (searched recursively for seed*/results.json)")
    p.add_argument("--out", required=True, help="figure file: .png, .pdf or .svg")
    p.add_argument("--paper", action="store_true", help="add the paper's published average curves")
    p.add_argument("--title", help="figure title")
    p.add_argument("--max-datasets", type=int, help="draw at most this many per-dataset panels")
    p.add_argument("--against", metavar="KEY",
                   help="draw accuracy against this config key's value instead, e.g. TRAINER.BIOMEDCOOP.TAU")
    args = p.parse_args(argv)
    try:
        if args.against:
            path = plot_against(args.output_dir, args.against, args.out, args.title)
        else:
            path = plot_results(args.output_dir, args.out, args.paper, args.title, args.max_datasets)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
