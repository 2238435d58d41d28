"""Show which ensemble prompts BiomedCoOp's outlier test keeps or drops on a few training images.

    python tools/inspect_prompts.py BTMRI --root DATA --model BiomedCLIP --shots 16 --seed 1
    python tools/inspect_prompts.py BTMRI --root DATA --model TinyBiomedCLIP --images 8 --tau 1.0

Prompt i of the ensemble is the i-th sentence of every class. For a batch of training images of the
few-shot subset (the one train.py draws for --shots/--seed), each prompt gets the trainer's score
(mean over images of the best class similarity, trainers.prompt_bank.prompt_scores) and the trainer's
rule decides keep/drop (trainers.prompt_bank.select_prompts at --tau). Images go through the test
transform (no random crop), so the table is reproducible; during training each step scores its own
augmented batch, so a prompt near the threshold may be kept on some steps and dropped on others.
Dropped prompts are listed in full: rewrite or replace those sentences to curate the ensemble, and
check the file again with tools/check_prompts.py.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from engine.errors import UserError
from engine.prompts import PROMPTS_DIR
from engine.utils import write_json
from prompts.inspection import build_cfg, common_parser, format_table, inspect


def parse_args(argv=None) -> argparse.Namespace:
    p = common_parser(__doc__)
    p.add_argument("--images", type=int, default=32,
                   help="images scored together, taken class by class from the subset (default 32, the batch size)")
    p.add_argument("--prompts-dir", default=PROMPTS_DIR, help="folder of <DATASET>.json (to inspect a draft)")
    p.add_argument("--show-class", default=None, help="class whose sentence the table shows (default: the first)")
    p.add_argument("--no-cache", action="store_true", help="encode the images now instead of via the feature cache")
    return p.parse_args(argv)


def report(table: str, result: dict, json_out: str | None) -> None:
    """Print the table; with --json, also write the numbers behind it."""
    print(table)
    if json_out:
        write_json(result, json_out)
        print(f"\nwrote {json_out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_cfg(args)
        result = inspect(cfg, args.prompts_dir, args.images, use_cache=not args.no_cache)
        report(format_table(result, args.show_class), result, args.json_out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
