"""Turn your own images into a dataset every trainer and script can use (see docs/own_data.md).

    python tools/prepare_dataset.py --folder scans/ --name MyScans --root DATA
    python tools/prepare_dataset.py --csv labels.csv --classnames names.json --name MyScans --root DATA

--folder DIR: one sub-folder per class (images may sit deeper inside it); the class string is the folder
name with underscores as spaces, or what --classnames maps the folder name to.
--csv FILE: rows `path,label` (a header row `path,label` is optional; an optional third column `split`
with train/val/test fixes the split). Relative paths are relative to the CSV's folder. Labels are class
names, or keys of --classnames (e.g. 0, 1, 2 -> "benign tumor", ...).

Writes DATA/NAME/split_NAME.json and DATA/NAME/NAME/<class_folder>/<file> (hard links where possible,
else copies; --mode symlink or copy to choose), built in a temporary folder and renamed into place, and
DATA/NAME/dataset.yaml, the dataset config the scripts find there (nothing is written into the source
tree; --config-dir DIR writes DIR/<name>.yaml instead). Labels follow the --classnames file's order, else
sorted class keys. Each class is split 50/20/30 (--split) after a shuffle seeded by --seed.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from datasets.prepare import prepare, summary_lines
from engine.errors import UserError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="folder with one sub-folder of images per class")
    src.add_argument("--csv", help="CSV of path,label[,split] rows")
    p.add_argument("--name", required=True, help="dataset name (DATASET.NAME), e.g. MyScans")
    p.add_argument("--root", required=True, help="data root; NAME/ is created inside it")
    p.add_argument("--classnames", help='JSON {"folder or label": "class string"}; its order sets the labels')
    p.add_argument("--split", default="50/20/30", help="train/val/test proportions per class (default 50/20/30)")
    p.add_argument("--seed", type=int, default=1, help="seed of the per-class shuffle (default 1)")
    p.add_argument("--mode", choices=("link", "copy", "symlink"), default="link",
                   help="hard link (copy across file systems), copy, or symlink the images (default link)")
    p.add_argument("--force", action="store_true", help="replace an existing DATA/NAME and its config")
    p.add_argument("--config-dir", default=None,
                   help="write the dataset config as DIR/<name>.yaml (default: DATA/NAME/dataset.yaml)")
    args = p.parse_args(argv)
    try:
        summary = prepare(args.name, args.root, args.folder, args.csv, args.classnames, args.split, args.seed,
                          args.mode, args.force, args.config_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['dataset_dir']} and {summary['config']}")
    for line in summary_lines(summary):
        print(line)
    print(f"next: python tools/check_data.py {args.name} --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
