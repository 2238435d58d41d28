"""Turn a tree of runs into the paper's tables: few-shot (method x K) and base-to-novel (base, novel, HM).

    python tools/make_tables.py output                      # terminal tables
    python tools/make_tables.py output --format markdown --paper --out results.md

Reads every results.json under OUTPUT_DIR (seed folders in the scripts' layout). Each cell is the
mean +- population std over seeds, with the number of seeds: "61.20 +- 0.80 (3)". A cell that lacks
a seed of its row's grid, or holds a failed run (log.txt without results.json), shows "(2/3)" and `*`,
and the notes list exactly which runs; a run whose predictions collapsed onto one class is marked `C`.
A row's seed grid is the seeds found for its method and model; --seeds sets one grid and leaves
other seeds out (listed in the notes).

Rows: one per method, run label (TRAINER.RUN_LABEL, e.g. the rows of scripts/biomedcoop/ablation.sh;
"BiomedCoOp [ce]"), few-shot protocol and model. Runs of one cell made with different settings are
never averaged together: the row splits and names the keys that differ ("CoOp [OPTIM.MAX_EPOCH=200]").
Two folders holding the same run and seed are reported; only one is averaged.

Averages over datasets: mean of the per-dataset seed means; the std is over seeds of the
dataset-averaged accuracy. Base-to-novel tables carry K and give both HM conventions found in
published tables: the HM of the averaged base and novel accuracies, and the mean of the per-dataset HMs.
Domain-generalisation runs (scripts/<method>/dg.sh) get one table per source: in-distribution (the
source's test accuracy), out-of-distribution (mean over the targets), their HM (mean over seeds of
the per-seed HM) and one column per target.
--paper adds the paper's published averages and the difference (a Tiny twin is compared with its
full model's numbers only to show the layout). --format csv writes one long table of raw numbers.

    python tools/make_tables.py output/tau_sweep --against TRAINER.BIOMEDCOOP.TAU --also prompts_kept_share

--against KEY instead tabulates accuracy against the value of one config key (one row per value, per
series: method, model, dataset, K and every other setting), with the mean over seeds of each --also
results.json field beside it.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from results.files import emit_table

FORMATS = ("csv", "latex", "markdown", "terminal")


def make_tables(root: str, fmt: str = "terminal", paper: bool = False, seeds: list[int] | None = None,
                against: str | None = None, also: tuple[str, ...] = ()) -> str:
    """The whole report as text; raises FileNotFoundError when there is nothing to tabulate."""
    from results.tables import build_tables, render, render_csv

    report = build_tables(root, paper, seeds, against, tuple(also))
    if fmt == "csv":
        if report.notes:
            print("\n".join(report.notes), file=sys.stderr)
        return render_csv(report.csv_rows)
    return render(report.tables, report.notes, fmt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the runs (searched recursively for seed*/results.json)")
    p.add_argument("--format", choices=FORMATS, default="terminal", help="table layout (default terminal)")
    p.add_argument("--paper", action="store_true", help="add the paper's published numbers and the difference")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="the seed grid of every row; other seeds are left out (default: each row's own seeds)")
    p.add_argument("--against", metavar="KEY",
                   help="tabulate accuracy against this config key's value, e.g. TRAINER.BIOMEDCOOP.TAU")
    p.add_argument("--also", nargs="+", default=[], metavar="FIELD",
                   help="with --against: results.json fields to average beside it, e.g. prompts_kept_share")
    p.add_argument("--out", help="write to this file instead of the terminal")
    args = p.parse_args(argv)
    if args.also and not args.against:
        p.error("--also needs --against KEY")
    return emit_table(lambda: make_tables(args.output_dir, args.format, args.paper, args.seeds, args.against,
                                          tuple(args.also)), args.out)


if __name__ == "__main__":
    sys.exit(main())
