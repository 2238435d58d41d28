"""Where does a reproduction drift? From-scratch runs beside the released checkpoints and the paper.

    python tools/reproduction_report.py --ours output --released output_eval
    python tools/reproduction_report.py --ours output --released output_eval --format markdown --tolerance 1.5

--ours is the OUTPUT_ROOT of this toolkit's runs (scripts/biomedcoop/few_shot.sh, base2new.sh);
--released is the EVAL_ROOT of the released checkpoints' evaluations (scripts/biomedcoop/eval_fewshot.sh,
eval_base2new.sh). One row per dataset, K and seed (base-to-novel: per dataset, seed and class half):
the two accuracies and their difference; then one row per K (and per class half) averaged over the
datasets both sides have, beside the paper's published average. A row whose from-scratch accuracy
is more than --tolerance points from the released checkpoint's is marked "drift". The paper
publishes averages only, so per-dataset rows have no paper column; the paper's averages cover 11
datasets (10 for base-to-novel), so compare them with averages over the same datasets.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from results.reproduction import render, report_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True, help="OUTPUT_ROOT of the from-scratch runs")
    p.add_argument("--released", required=True, help="EVAL_ROOT of the released checkpoints' evaluations")
    p.add_argument("--method", default="BiomedCoOp", help="method to compare (default BiomedCoOp)")
    p.add_argument("--tolerance", type=float, default=2.0, help="accuracy points before a row is marked drift")
    p.add_argument("--format", choices=["terminal", "markdown", "csv", "latex"], default="terminal")
    args = p.parse_args(argv)
    try:
        rows = report_rows(args.ours, args.released, args.method, args.tolerance)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
