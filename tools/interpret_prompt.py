"""Read learned context vectors as words: the nearest vocabulary tokens to each one.

    python tools/interpret_prompt.py output/btmri/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1
    python tools/interpret_prompt.py released/few_shot/btmri/.../seed1 --model BiomedCLIP --topk 5

RUN_DIR is a seed folder (its newest prompt_learner/model.pth.tar-<E>, or --epoch) or a checkpoint file.
This toolkit's checkpoints ({"ctx": ...}) and the reference's full-model ones ("prompt_learner.ctx")
both work. Distances are Euclidean between a context vector and each token embedding of the
backbone's vocabulary, as the reference's interpret_prompt does; the last line reads the nearest
token of every slot as a phrase. Learned vectors usually sit far from every token, so read the
distances too: a phrase made of distant tokens is a loose reading, not what the model "says".
The backbone comes from --model, else from the run's results.json, else from the folder name.
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from prompts.interpret import InterpretError, backbone_name, find_checkpoint, load_ctx, nearest_tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run's seed folder, or a checkpoint file")
    p.add_argument("--topk", type=int, default=3, help="tokens to show per context vector (default 3)")
    p.add_argument("--model", help="backbone, e.g. BiomedCLIP (default: from the run)")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the newest)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import backbones  # noqa: F401  (registers the model families)
    from engine.config import get_cfg_default
    from engine.errors import UserError
    from engine.registry import BACKBONE_REGISTRY

    try:
        checkpoint = find_checkpoint(args.run_dir, args.epoch)
        name = backbone_name(args.run_dir, args.model).removesuffix("-random")
        ctx = load_ctx(checkpoint)
        cfg = get_cfg_default()
        cfg.MODEL.BACKBONE.NAME = name
        backbone = BACKBONE_REGISTRY.get(name)(cfg)
        rows = nearest_tokens(ctx, backbone, args.topk)
    except (InterpretError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{checkpoint} ({len(rows)} context vectors, {name} vocabulary)")
    for i, row in enumerate(rows, start=1):
        print(f"ctx {i}: " + ", ".join(f"{token} ({dist:.4f})" for token, dist in row))
    print("nearest reading: " + " ".join(row[0][0] for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
