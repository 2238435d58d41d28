"""How good is a prompt ensemble? Per class: diversity, alignment with the images, margin, and
what the outlier test keeps; two ensembles for the same classes side by side.

    python tools/analyze_prompts.py BTMRI --root DATA --model BiomedCLIP --shots 16
    python tools/analyze_prompts.py BTMRI --root DATA --model BiomedCLIP --compare other_llm/BTMRI.json

Measured on the few-shot training images of --shots/--seed (test transform, no random crop), with
the frozen model, for the first N_PROMPTS sentences of each class:
- diversity: mean pairwise cosine among a class's sentences (lower = more varied descriptions);
- alignment: mean cosine between a class's sentences and that class's images;
- margin: over a class's images, mean of cos(image, own ensemble mean) minus the largest
  cos(image, another class's ensemble mean); positive = the ensemble alone ranks the class first;
- kept: share of prompt indices BiomedCoOp's outlier test keeps when it scores them on that
  class's images (the "all" row scores them on every image, as a training batch would).
"""

from __future__ import annotations

import os
import sys

import _bootstrap  # noqa: F401

from engine.errors import UserError
from engine.utils import write_json
from prompts.analysis import analyze, format_table
from prompts.inspection import build_cfg, common_parser


def parse_args(argv=None):
    p = common_parser(__doc__)
    p.add_argument("--prompts", default="", help="the ensemble to analyse (default clip_prompts/<DATASET>.json)")
    p.add_argument("--compare", default="", help="a second ensemble for the same classes, shown beside the first")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_cfg(args)
        result = analyze(cfg, [args.prompts] + ([args.compare] if args.compare else []))
        print(format_table(result))
        if args.json_out:
            write_json(result, args.json_out)
            print(f"\nwrote {args.json_out}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
