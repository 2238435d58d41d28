r"""Apply a trained run to new images: class probabilities and the top-1 label, one row per image.

    python tools/predict.py --run-dir output/btmri/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1 \
        scan1.png more_scans/ --out predictions.csv

RUN_DIR is a seed folder written by train.py (any method), or `--run hf-hub:ORG/NAME` for a run
shared with tools/push_to_hub.py (downloaded into the Hugging Face cache once; offline afterwards).
Its results.json records the settings the run was made with; the trainer is rebuilt from them (the
run's dataset must still be readable, or give --root), its last checkpoint is loaded (for an
eval-only run, the checkpoint it evaluated) and each image goes through the same test-time transform as
the test set. Folders are searched recursively for images. An image that cannot be read gets a row
with its error and the others go on; the exit status is then 1. Without --out the CSV goes to the
terminal.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", "--run", dest="run_dir", required=True,
                   help="a finished run's seed folder (holds results.json), or a run pushed with "
                        "tools/push_to_hub.py: hf-hub:ORG/NAME[/SUB/FOLDER] (downloaded once, then cached)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--out", help="write the CSV here (default: print it)")
    p.add_argument("--root", help="dataset root, if the run's data moved")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the run's last)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import backbones  # noqa: F401  (registers the model families)
    import datasets  # noqa: F401  (registers the dataset readers)
    import trainers  # noqa: F401  (registers the methods and their config keys)
    from engine.errors import UserError
    from engine.predict import PredictError, Predictor, find_images, to_csv
    from engine.utils import atomic_write_bytes

    paths = find_images(args.images)
    if not paths:
        print(f"error: no image files in {' '.join(args.images)}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(args.run_dir, args.root, args.epoch)
        rows = predictor.predict(paths, args.batch_size)
    except (PredictError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = to_csv(rows, predictor.classnames)
    failed = [r for r in rows if "error" in r]
    for row in failed:
        print(f"error: {row['error']}", file=sys.stderr)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {len(rows) - len(failed)} prediction(s) to {os.path.abspath(args.out)}"
              + (f"; {len(failed)} image(s) could not be read" if failed else ""))
    else:
        sys.stdout.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
