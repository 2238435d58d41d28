r"""Share learned weights on the Hugging Face Hub, with a model card that carries the results.

    python tools/push_to_hub.py output/btmri/shots_4/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1 \
        --repo my-org/biomedcoop-btmri-k4-seed1
    python tools/push_to_hub.py output --grid --org my-org      # one repository per method and dataset

One run: its learned tensors (<model>/model.safetensors: only what the method learns, never the
backbone), config.json (the effective config), results.json and README.md (method, paper, backbone
and its hub id, dataset, K, seed, accuracy, settings digest, how to load and evaluate, citation; the
accuracy also as model-index metadata). --grid scans an output folder and pushes ORG/<Method>-<Dataset>
holding every finished run with learned weights at its path under that folder (training-free and
eval-only runs are left out). Load a pushed run with `tools/predict.py --run hf-hub:ORG/NAME` or
`train.py --eval-only --model-dir hf-hub:ORG/NAME[/SUB/FOLDER]`.

Needs a token with write access (`hf auth login`, or HF_TOKEN); HF_ENDPOINT picks another hub.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="RUN_DIR", help="a finished seed folder, or an output folder with --grid")
    p.add_argument("--repo", help="ORG/NAME of the model repository (one run)")
    p.add_argument("--grid", action="store_true", help="push every finished run under RUN_DIR, grouped")
    p.add_argument("--org", help="with --grid: the user or organisation the repositories go to")
    p.add_argument("--private", action="store_true", help="create the repositories as private")
    p.add_argument("--token", help="Hub token (default: the one `hf auth login` saved, or HF_TOKEN)")
    args = p.parse_args(argv)
    from engine.errors import UserError
    from results.hub import push_grid, push_run

    try:
        if args.grid:
            if not args.org or args.repo:
                raise UserError("--grid takes --org ORG (repositories ORG/<Method>-<Dataset>), not --repo.")
            done = push_grid(args.path, args.org, args.private, args.token,
                             on_repo=lambda repo, n: print(f"pushed {n} run(s) to {repo}", flush=True))
            print(f"{sum(done.values())} run(s) in {len(done)} repositories")
            return 0
        if not args.repo:
            raise UserError("Give --repo ORG/NAME for one run (or --grid --org ORG for an output folder).")
        commit, record = push_run(args.path, args.repo, args.private, args.token)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {record['method']} on {record['dataset']} (K={record['num_shots']}, seed {record['seed']}, "
          f"accuracy {record['accuracy']:.2f}) to {args.repo}" + (f" at {commit[:12]}" if commit else ""))
    print(f"load it with: python tools/predict.py --run hf-hub:{args.repo} IMAGES")
    return 0


if __name__ == "__main__":
    sys.exit(main())
