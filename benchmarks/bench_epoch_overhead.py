"""Where an epoch's time goes beyond its training steps (BiomedCoOp on cached features, warm cache).

    python benchmarks/bench_epoch_overhead.py [--tiny] [--epochs 4] [--shots 4] [--profile]

Builds one run (full BiomedCLIP architecture with random weights, or the tiny twin with --tiny),
extracts its features, then trains `--epochs` epochs and splits each epoch's wall time into the
training steps (forward_backward), the rest of the loop (batches, logging, mode switches) and what
after_epoch does: curves (TRAIN.REPORT_TO), checkpoints, the resume state. The first epoch also
pays one-off costs (a tracker's import and file, first-call warm-up), so the per-epoch cost is the
median over the later epochs. --profile prints the cProfile of the epochs, heaviest first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tools")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import _bootstrap  # noqa: E402,F401

PARTS = ("steps", "loop", "curves", "checkpoint", "resume")


def instrument(trainer) -> tuple[dict[str, float], list[float]]:
    """Wrap the trainer's per-epoch work so each call adds its wall time to a part of `spent`; each
    step's own time also goes to the list returned with it."""
    spent = dict.fromkeys(PARTS, 0.0)
    steps: list[float] = []

    def timed(part: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start
                if part == "steps":
                    steps.append(time.perf_counter() - start)
        return wrapper

    trainer.forward_backward = timed("steps", trainer.forward_backward)
    trainer.track_epoch = timed("curves", trainer.track_epoch)
    trainer.save_model = timed("checkpoint", trainer.save_model)
    trainer.save_resume_state = timed("resume", trainer.save_resume_state)
    return spent, steps


def epoch_costs(trainer, epochs: int) -> list[dict[str, float]]:
    """Train `epochs` epochs of a trainer whose before_train has run; one dict of seconds per epoch:
    wall (run_epoch + after_epoch), steps, loop (run_epoch minus its steps), curves, checkpoint, resume,
    overhead (wall minus steps) and fastest_step (the epoch's quickest step)."""
    spent, step_times = instrument(trainer)
    rows = []
    for epoch in range(trainer.start_epoch, trainer.start_epoch + epochs):
        trainer.epoch = epoch
        before, first = dict(spent), len(step_times)
        start = time.perf_counter()
        trainer.run_epoch()
        loop_end = time.perf_counter()
        trainer.after_epoch()
        end = time.perf_counter()
        row = {k: spent[k] - before[k] for k in PARTS}
        row["loop"] = loop_end - start - row["steps"]
        row["wall"] = end - start
        row["overhead"] = row["wall"] - row["steps"]
        row["n_steps"] = trainer.num_batches
        row["fastest_step"] = min(step_times[first:], default=0.0)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per step: total step time / steps. Per epoch: the median overhead of the epochs after the first
    (the first pays one-off costs, reported as first_extra); one epoch alone gives its own overhead."""
    later = rows[1:] or rows
    per_epoch = statistics.median(r["overhead"] for r in later)
    out = {
        "per_step": sum(r["steps"] for r in rows) / sum(r["n_steps"] for r in rows),
        "per_epoch": per_epoch,
        "first_extra": max(rows[0]["overhead"] - per_epoch, 0.0),
        "fastest_step": min(r["fastest_step"] for r in rows),
    }
    for part in ("loop", "curves", "checkpoint", "resume"):
        out[part] = statistics.median(r[part] for r in later)
    return out


def build_run(root: str, tmp: str, tiny: bool, epochs: int, shots: int, extra: list[str] = ()):
    """A BiomedCoOp trainer on a synthetic BTMRI whose features are cached (before_train done)."""
    from run_all import biomedcoop_cfg, write_btmri

    from engine.trainer import build_trainer

    if not os.path.isdir(os.path.join(root, "BTMRI")):
        write_btmri(root, test_per_class=2)
    cfg = biomedcoop_cfg(root, os.path.join(tmp, "run"), os.path.join(tmp, "cache"), epochs, n_prompts=5,
                         shots=shots)
    cfg.defrost()
    if tiny:
        cfg.TRAINER.NAME, cfg.MODEL.BACKBONE.NAME = "BiomedCoOp_TinyBiomedCLIP", "TinyBiomedCLIP"
    cfg.merge_from_list(list(extra))
    cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.before_train()
    return trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tiny twin instead of full-size BiomedCLIP")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--shots", type=int, default=4, help="4 shots x 4 classes = 4 steps an epoch")
    p.add_argument("--profile", action="store_true", help="print the cProfile of the epochs")
    p.add_argument("opts", nargs="*", help="config overrides, e.g. TRAIN.RESUME_EVERY 0")
    args = p.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_run(os.path.join(tmp, "data"), tmp, args.tiny, args.epochs, args.shots, args.opts)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        rows = epoch_costs(trainer, args.epochs)
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    print(f"{'tiny twin' if args.tiny else 'full-size BiomedCLIP (random weights)'}, {torch.get_num_threads()} "
          f"thread(s), load average {os.getloadavg()[0]:.1f}; {rows[0]['n_steps']} steps an epoch")
    print("epoch  wall     steps    loop     curves   checkpoint  resume   overhead")
    for i, r in enumerate(rows, 1):
        print(f"{i:5d}  {r['wall']:7.3f}  {r['steps']:7.3f}  {r['loop']:7.3f}  {r['curves']:7.3f}  "
              f"{r['checkpoint']:10.3f}  {r['resume']:7.3f}  {r['overhead']:7.3f}")
    s = summarize(rows)
    print(f"per step {s['per_step']:.3f} s; per epoch beyond its steps {s['per_epoch']:.3f} s (median of the later "
          f"epochs); the first epoch's one-off extra {s['first_extra']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
