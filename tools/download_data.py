"""Download and unpack benchmarks into the layout the readers expect (docs/DESIGN.md describes it).

    python tools/download_data.py BTMRI BUSI --root DATA
    python tools/download_data.py all --root DATA

For each NAME: skip it when it is verified complete (every image DATA/NAME/split_NAME.json lists is present,
and the copy was unpacked and counted by this tool or matches the published image counts); otherwise
fetch DATA/NAME.zip from the HuggingFace mirror (falling back to the dataset's Google Drive id through
gdown), check the archive, unpack it into a temporary folder and move DATA/NAME/NAME and
DATA/NAME/split_NAME.json into place. The download goes to DATA/NAME.zip.part and resumes with an HTTP
Range request when rerun; the zip is only named DATA/NAME.zip once complete. A zip already at DATA/NAME.zip
(fetched by hand) is used as is. Base URL: --base-url or $BIOMEDCOOP_DATA_URL.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from datasets.download import BASE_URL_ENV, DEFAULT_BASE_URL, download, expand_names
from engine.errors import UserError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="benchmark names (BTMRI, busi, ...) or 'all'")
    p.add_argument("--root", required=True, help="data root; NAME/ is created inside it")
    p.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
                   help=f"where NAME.zip lives (default ${BASE_URL_ENV} or {DEFAULT_BASE_URL})")
    p.add_argument("--no-gdrive", action="store_true", help="do not fall back to Google Drive (gdown)")
    p.add_argument("--keep-zip", action="store_true", help="keep DATA/NAME.zip after unpacking")
    args = p.parse_args(argv)
    try:
        for name in expand_names(args.datasets):
            status = download(name, args.root, args.base_url, not args.no_gdrive, args.keep_zip)
            where = os.path.join(args.root, name)
            print(f"{name}: {'already complete' if status == 'present' else 'ready'} in {where}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
