"""Fetch every file a model family needs into DIR/<Model>/, on a machine with internet.

    python tools/download_weights.py BiomedCLIP CLIP --dir WEIGHTS
    python tools/download_weights.py all --dir WEIGHTS
    python tools/download_weights.py hf-hub:org/name ViT-B-16:openai --dir WEIGHTS   # any open_clip model
    python tools/download_weights.py google/medsiglip-448 --dir WEIGHTS              # a transformers CLIP/SigLIP

Then copy WEIGHTS to the offline machine and `export BIOMEDCOOP_WEIGHTS_DIR=WEIGHTS` (or pass
`MODEL.BACKBONE.PATH WEIGHTS` to train.py). An open_clip hub id or ARCH:TAG goes to
WEIGHTS/<org--name>/ (open_clip_config.json, weights, tokenizer, an HF text tower's config in
text/): run it with `_OpenCLIP` and `MODEL.BACKBONE.PATH WEIGHTS/<org--name>`. A transformers
repository org/name goes to WEIGHTS/<org--name>/ too (config.json, weights, tokenizer and
preprocessor files): run it with `_HFCLIP` or `_HFSigLIP` and that folder. Files already
complete are skipped, so an interrupted run can simply be repeated. Sizes are checked, and SHA-256
where the source publishes it. The folder layout and the sources are listed in docs/offline.md and
backbones/configs/<Model>.json.

Gated models (google/medsiglip-448): accept the licence on the model's page while logged in, run
`hf auth login` (or set HF_TOKEN), then run this. Requests to the Hugging Face hub carry the token
huggingface_hub finds (HF_TOKEN, else the login's token file); a refusal stops with one line of steps
and leaves no folder of that run behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import _bootstrap  # noqa: F401

# backbones/ registers every model family on import (torch, open_clip), so it is imported after parsing:
# --help answers at once.


def presets() -> list[str]:
    """The presets of backbones/configs/ that list files to download (backbones.weights.downloadable_models,
    read from the same JSON files without importing the model families)."""
    folder = os.path.join(_bootstrap.REPO, "backbones", "configs")
    names = []
    for name in sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")):
        with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as f:
            if json.load(f).get("files"):
                names.append(name)
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    models = presets()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=f"one or more of: {', '.join(models)}, or all; or an open_clip model as "
                             "hf-hub:org/name or ARCH:TAG (e.g. ViT-B-16:openai); or a transformers CLIP/SigLIP "
                             "repository org/name (e.g. google/medsiglip-448)")
    parser.add_argument("--dir", required=True, help="folder to write <MODEL>/ (or <org--name>/) folders into")
    parser.add_argument("--hf-endpoint", default="", help="Hugging Face base URL (default $BIOMEDCOOP_HF_ENDPOINT, "
                        "$HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--openai-endpoint", default="", help="base URL of OpenAI's CLIP files (default "
                        "$BIOMEDCOOP_OPENAI_ENDPOINT or https://openaipublic.azureedge.net)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if "all" in args.models:
        args.models = models
    unknown = [m for m in args.models if m not in models and ":" not in m and m.count("/") != 1]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models)}, all, "
                     "an open_clip hf-hub:org/name or ARCH:TAG, or a transformers org/name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from backbones.base import WEIGHTS_ENV
    from backbones.weights import download
    from engine.errors import UserError

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    root = os.path.abspath(os.path.expanduser(args.dir))
    overrides = {"hf": args.hf_endpoint, "openai": args.openai_endpoint}
    try:
        for model in args.models:
            folder = download(model, root, overrides, progress=not args.quiet)
            print(f"{model}: complete in {folder}")
            if ":" in model:
                print(f"  use it with --trainer <METHOD>_OpenCLIP ... MODEL.BACKBONE.PATH {folder}")
            elif "/" in model:
                print(f"  use it with --trainer <METHOD>_HFCLIP or <METHOD>_HFSigLIP (as config.json's "
                      f"model_type says) ... MODEL.BACKBONE.PATH {folder}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Copy {root} to the offline machine, then: export {WEIGHTS_ENV}={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
