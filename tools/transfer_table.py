"""Cross-dataset transfer table: accuracy of weights trained on one dataset (rows) tested on each (columns).

    python tools/transfer_table.py output/transfer                 # terminal table
    python tools/transfer_table.py output/transfer --format markdown --out transfer.md

Reads every seed folder under OUTPUT_DIR (scripts/biomedcoop/transfer.sh writes them). A trained run
is its source's own test (the diagonal); an eval-only run's source is the dataset of the run whose
weights it loaded (its results.json in the recorded --model-dir). Each cell is the mean ± population
std over seeds, with the number of seeds; "*" marks a cell missing a seed of its table's grid (the
seeds found for it, or --seeds, which leaves other seeds out). One table per method, model and K.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from results.files import emit_table
from results.transfer import transfer_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the transfer runs (searched recursively)")
    p.add_argument("--format", choices=["terminal", "markdown"], default="terminal")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="the seed grid of every table; other seeds are left out (default: each table's own seeds)")
    p.add_argument("--out", help="write to this file instead of the terminal")
    args = p.parse_args(argv)
    return emit_table(lambda: transfer_table(args.output_dir, args.format, args.seeds), args.out)


if __name__ == "__main__":
    sys.exit(main())
