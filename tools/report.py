"""One self-contained HTML report of a tree of runs, to open offline or send to co-authors.

    python tools/report.py output --out report.html
    python tools/report.py output --out report.html --screenshot report.png   # the top of the page, headless

The page holds the few-shot tables (average and per dataset), accuracy against K, base-to-novel with
both HM conventions, the domain-generalisation tables when there are DG runs, the paper's numbers
and the differences, the settings that differ between rows of one method, failed and collapsed runs
with the end of their logs, and training curves from the TensorBoard event files in the run folders.
Every number is a row of `tools/make_tables.py ROOT --format csv` (same runs, same aggregation);
click a mean for the per-seed values behind it. Figures are inline SVG: nothing is fetched.
--screenshot drives the system Chromium through playwright (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="OUTPUT_ROOT of the runs (searched recursively for seed*/results.json)")
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's numbers and the differences")
    p.add_argument("--seeds", type=int, nargs="+", help="the seed grid of every row, as make_tables --seeds")
    p.add_argument("--title", help="the page's title (default: the folder's name)")
    p.add_argument("--max-curves", type=int, default=24, metavar="N",
                   help="draw at most N training-curve figures (one per row, model, K and task; default 24)")
    p.add_argument("--screenshot", metavar="PNG", help="also save the top of the page as a PNG (headless Chromium)")
    args = p.parse_args(argv)

    from results.files import write_text_atomic
    from results.report import build_report

    try:
        page = build_report(args.output_dir, paper=not args.no_paper, seeds=args.seeds, title=args.title,
                            max_curves=args.max_curves)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.out, page)
    print(f"wrote {os.path.abspath(args.out)} ({len(page.encode('utf-8')) // 1024} KB)")
    if args.screenshot:
        from results.report import screenshot

        try:
            screenshot(args.out, args.screenshot)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {os.path.abspath(args.screenshot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
