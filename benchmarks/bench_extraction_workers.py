"""Feature extraction on this machine's cores: loader workers against decoding in the extracting process,
and in-process decoding at one torch thread against the caller's count.

    python benchmarks/bench_extraction_workers.py [--rounds 3] [--views 36] [--batch 12]

Full BiomedCLIP architecture (random weights), a synthetic BTMRI, one FeatureCache job of `--views`
training views in loader batches of `--batch` (so several batches: workers have something to overlap).
Each setting is timed once per round, interleaved over the rounds, so a change in the machine's load
falls on every setting alike; seconds per image view, median of the rounds. The toolkit decides
workers itself (engine/features.py: none on a CPU with CPU_IN_PROCESS_CORES cores or fewer); here that
rule is lifted so both sides can be measured.
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

OLD = "in process, decoding at the caller's 2 threads (the toolkit before DECODE_THREADS), tower at 2"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--views", type=int, default=36, help="image views in the job (even: two views per image)")
    p.add_argument("--batch", type=int, default=12, help="loader batch size (the tower takes a batch at once)")
    args = p.parse_args(argv)
    import run_all
    import torch
    from bench_biomedcoop_step import full_size_biomedclip

    from engine import features, threads
    from engine.data import transform_spec
    from engine.trainer import build_trainer

    bb = full_size_biomedclip()
    run_all.use_backbone(bb)
    features.CPU_IN_PROCESS_CORES = 0  # let the loader have its workers, to measure them
    settings = {  # label: (loader workers, torch threads for in-process decoding, TRAIN.THREADS)
        "2 workers, tower at 2 threads": (2, 1, "2"),
        "in process, tower at 2 threads": (0, 1, "2"),
        "2 workers, TRAIN.THREADS auto": (2, 1, "auto"),
        "in process, TRAIN.THREADS auto": (0, 1, "auto"),
        OLD: (0, None, "2"),
    }
    times: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        run_all.write_btmri(data, test_per_class=2)
        cfg = run_all.biomedcoop_cfg(data, os.path.join(tmp, "out"), os.path.join(tmp, "unused"), 2, n_prompts=5)
        trainer = build_trainer(cfg)
        items = trainer.dm.dataset.train_x[: args.views // 2]
        print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start; a job of "
              f"{2 * len(items)} image views ({len(items)} images x 2 views) in loader batches of {args.batch}")
        for r in range(args.rounds):
            for i, (label, (workers, decode, count)) in enumerate(settings.items()):
                features.DECODE_THREADS = decode
                threads._chosen.clear()  # auto measures afresh in each job, as a new run would
                before = torch.get_num_threads()
                cache = features.FeatureCache(os.path.join(tmp, f"cache-{r}-{i}"), bb,
                                              "cpu", batch_size=args.batch, workers=workers, threads=count)
                start = time.perf_counter()
                cache.get(items, trainer.dm.tfm_train, transform_spec(cfg, True), views=2, desc="bench")
                times[label].append((time.perf_counter() - start) / (2 * len(items)))
                assert torch.get_num_threads() == before  # the job put the caller's count back
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items())
                  + f" (load average {os.getloadavg()[0]:.1f})", flush=True)
    print("seconds per image view, median of the rounds:")
    med = {k: statistics.median(v) for k, v in times.items()}
    for label, m in med.items():
        print(f"  {label}: {m:.3f} s")
    base = med["in process, tower at 2 threads"]
    print(f"2 workers / in process, tower at 2 threads: {med['2 workers, tower at 2 threads'] / base:.2f}; "
          f"under auto: {med['2 workers, TRAIN.THREADS auto'] / med['in process, TRAIN.THREADS auto']:.2f}; "
          f"decoding at 2 threads / at 1: "
          f"{med[OLD] / base:.2f}")
    print(f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
