"""What a grid of train.py runs will cost: the runs, and how many image-tower passes they need.

    python tools/plan_grid.py COMMANDS_FILE

COMMANDS_FILE holds one train.py command per line, NUL-separated arguments (what
`scripts/reproduce_paper.sh --dry-run` records). Each command is turned into its config exactly as
train.py would (no data is read). Image counts come from the benchmarks' published split sizes.

Counting, per image and per pass through the image tower:
- frozen-feature methods: the feature cache encodes each test image once per backbone and dataset,
  and each training image once per augmented view (FEATURES.TRAIN_VIEWS, by default one per
  epoch); views are shared by every method and seed that draws the same image, so the count given
  is an upper bound. "Without the cache" is what re-encoding every image every epoch would cost.
- methods that tune the image tower: every training image, every epoch, forward and backward
  (MAX_EPOCH x images; methods with an iteration budget differ), plus one test pass each.
A run counts as finished when its results.json records the settings its command asks for.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from engine.errors import UserError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commands", help="file of recorded train.py commands (NUL-separated arguments per line)")
    p.add_argument("--quiet", action="store_true", help="only the totals")
    args = p.parse_args(argv)
    from sweeps.cost import cost_lines, count_passes, read_commands

    try:
        totals = count_passes(read_commands(args.commands))
    except (UserError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print("\n".join(totals["lines"]))
    print("\n".join(cost_lines(totals)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
