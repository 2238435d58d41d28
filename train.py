r"""Train and/or evaluate one run, with the reference's command line (see docs/DESIGN.md).

    python train.py --root DATA --seed 1 --trainer BiomedCoOp_BiomedCLIP \
        --dataset-config-file configs/datasets/btmri.yaml \
        --config-file configs/trainers/BiomedCoOp/few_shot/btmri.yaml \
        --output-dir output/btmri/shots_4/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1 \
        DATASET.NUM_SHOTS 4
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from engine.config import (
    check_config_values,
    flat_config,
    get_cfg_default,
    merge_from_file,
    merge_from_list,
)
from engine.errors import UserError
from engine.utils import set_random_seed, setup_logger


def load_registries() -> None:
    """Import the model families, dataset readers and methods (torch and friends: seconds), so that
    --help answers at once."""
    import backbones  # noqa: F401
    import datasets  # noqa: F401
    import trainers  # noqa: F401


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="path to the dataset root")
    p.add_argument("--output-dir", default="", help="output directory")
    p.add_argument("--resume", default="", help="directory to resume from (default: the output directory)")
    p.add_argument("--seed", type=int, default=-1, help="seed; negative = unseeded")
    p.add_argument("--source-domains", nargs="+", help="unused by these benchmarks (Dassl compatibility)")
    p.add_argument("--target-domains", nargs="+", help="unused by these benchmarks (Dassl compatibility)")
    p.add_argument("--transforms", nargs="+", help="training transforms, e.g. random_resized_crop normalize")
    p.add_argument("--config-file", default="",
                   help="method config: configs/trainers/<Method>/..., the file scripts/<method>/*.sh pass "
                        "(README.md, Methods, lists each method's layout)")
    p.add_argument("--dataset-config-file", default="", help="dataset config (configs/datasets/...)")
    p.add_argument("--trainer", default="", help="<METHOD>_<MODEL>, e.g. BiomedCoOp_BiomedCLIP")
    p.add_argument("--backbone", default="", help="model family, when --trainer has no _<MODEL> suffix")
    p.add_argument("--head", default="", help="unused (Dassl compatibility)")
    p.add_argument("--eval-only", action="store_true", help="evaluate only")
    p.add_argument("--model-dir", default="",
                   help="load the model from this directory for --eval-only, or from a pushed run: "
                        "hf-hub:ORG/NAME[/SUB/FOLDER] (tools/push_to_hub.py; downloaded once, then cached)")
    p.add_argument("--load-epoch", type=int, help="load the checkpoint of this epoch")
    p.add_argument("--no-train", action="store_true", help="build the trainer, do not train")
    p.add_argument("--skip-finished", action="store_true",
                   help="exit 0 when OUTPUT_DIR/results.json holds this exact config; stop when it holds another")
    p.add_argument("--wait-for-lock", action="store_true",
                   help="when another run is writing to OUTPUT_DIR, wait for it to end instead of stopping")
    p.add_argument("--print-model-label", action="store_true",
                   help="print the model label results use (e.g. OpenCLIP-org--name, BiomedCLIP-random) and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, applied last")
    return p.parse_args(argv)


def setup_cfg(args: argparse.Namespace):
    load_registries()
    from engine.trainer import split_trainer_name

    cfg = get_cfg_default()
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file(cfg, args.config_file)
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.transforms:
        cfg.INPUT.TRANSFORMS = tuple(args.transforms)
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    merge_from_list(cfg, args.opts)
    if not cfg.TRAINER.NAME:
        raise UserError("No trainer given: pass --trainer <METHOD>_<MODEL>, e.g. BiomedCoOp_BiomedCLIP.")
    _, backbone = split_trainer_name(cfg.TRAINER.NAME)
    if backbone:
        cfg.MODEL.BACKBONE.NAME = backbone
    from backbones.base import preset_input

    preset_input(cfg, set(args.opts[0::2]))  # a named preset's own image size, mean and std
    check_config_values(cfg)
    cfg.freeze()
    return cfg


def run_options(args: argparse.Namespace, cfg=None) -> dict:
    """Choices outside the config keys that change the numbers: which checkpoint is tested, and which
    model a generic family (OpenCLIP, HFCLIP, HFSigLIP) loaded, whose MODEL.BACKBONE.PATH (for the
    named families only a location) picks the model: "run.model" is its label (hub id or folder name)."""
    options = {}
    if cfg is not None:
        from engine.registry import BACKBONE_REGISTRY
        from engine.trainer import backbone_label

        name = cfg.MODEL.BACKBONE.NAME
        if name in BACKBONE_REGISTRY and getattr(BACKBONE_REGISTRY.get(name), "label", None):
            options["run.model"] = backbone_label(cfg)
    if not args.eval_only:
        return options
    from engine.hub import is_hub_ref

    model_dir = os.path.abspath(args.model_dir) if args.model_dir else ""
    if is_hub_ref(args.model_dir):  # a pushed run is named by its hub id, not the cache folder it lands in
        model_dir = args.model_dir
    return {**options, "run.eval_only": True, "run.model_dir": model_dir, "run.load_epoch": args.load_epoch}


def finished_run_matches(output_dir: str, requested: dict) -> bool:
    """True when output_dir/results.json was written with `requested`; raises a UserError when it was
    written with other settings. The states come from engine.runs.run_status (shared with the sweep)."""
    from engine.runs import FAILED, FINISHED, INTERRUPTED, RESUME_FILE, STALE, run_status, stopped_at

    status = run_status(output_dir, requested)
    path = os.path.join(output_dir, "results.json")
    if status.state == FAILED and status.unreadable:
        raise UserError(f"{status.reason}; delete it, or rerun with FORCE=1, to redo this seed.")
    if status.state == FINISHED:
        return True
    if status.state == INTERRUPTED:
        print(f"note: resuming {output_dir} ({stopped_at(status.resume)})", flush=True)
    if status.state != STALE:
        return False  # nothing finished there (a live writer is stopped by the run lock)
    if status.resume is not None:  # no results.json, but a resume state the trainer would refuse
        resume = os.path.join(output_dir, RESUME_FILE)
        raise UserError(
            f"{resume} ({stopped_at(status.resume)}) was saved with other settings (saved -> requested):\n  "
            + "\n  ".join(status.differences[:8]) + "\nTo continue that run, rerun it with its own settings; to start "
            f"this one afresh, delete {resume} (the sweep: --redo-stale), or write elsewhere (another OUTPUT_ROOT / "
            "--output-dir)."
        )
    if status.differences:
        shown = status.differences[:8] + ([f"... and {len(status.differences) - 8} more"]
                                          if len(status.differences) > 8 else [])
        what = "was made with other settings (finished -> requested):\n  " + "\n  ".join(shown)
    else:
        what = "does not record the settings it was made with, so it cannot be matched to this run."
    raise UserError(
        f"{path} {what}\n"
        "To keep both, write elsewhere: OUTPUT_ROOT=<another folder> for the scripts (another --output-dir "
        "for train.py). To replace it: FORCE=1 for the scripts (train.py without --skip-finished)."
    )


def run(args: argparse.Namespace, cfg) -> int:
    """Build the trainer, then train or evaluate; log.txt starts once the run has what it needs."""
    from engine.utils import discard_held_records, open_log_file

    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    logger = setup_logger(cfg.OUTPUT_DIR, defer=True)
    logger.info(f"** Arguments **\n{vars(args)}", extra={"file_only": True})
    logger.info(f"** Config **\n{cfg.dump()}", extra={"file_only": True})
    from engine import distributed, preempt
    from engine.trainer import build_trainer

    if not distributed.is_main():  # under torchrun rank 0 logs; the others speak only of trouble
        logger.setLevel("WARNING")
    trainer = None
    try:
        with distributed.main_first():  # rank 0 may write the few-shot split the others then read
            trainer = build_trainer(cfg)  # data, weights and checkpoint checks: a run that stops here leaves no log
        trainer.run_options = run_options(args, cfg)
        if args.eval_only:
            from engine.hub import is_hub_ref, local_run

            model_dir = local_run(args.model_dir) if is_hub_ref(args.model_dir) else args.model_dir
            trainer.load_model(model_dir, epoch=args.load_epoch)
            if cfg.TEST.DATASET:  # domain generalisation: score another benchmark's test split
                from datasets.domain_generalization import retarget

                retarget(trainer, cfg.TEST.DATASET)
        if cfg.OUTPUT_DIR and distributed.is_main():
            open_log_file(cfg.OUTPUT_DIR)
            logger.info(f"Output: {cfg.OUTPUT_DIR} (log.txt there holds the full config)")
        if args.eval_only:
            report = trainer.test()
            trainer.write_results(report, eval_only=True)
            return 0
        if not args.no_train:
            trainer.train()
    except KeyboardInterrupt:
        print(f"\n{interrupted_line(trainer, args)}", file=sys.stderr)
        return 130
    except preempt.Preempted as stop:  # a pre-termination signal (SLURM --signal, submitit): resumable
        if distributed.is_main():
            print(f"\nstopped after epoch {stop.epochs_done} of {trainer.max_epoch} on a pre-termination signal "
                  f"({preempt.STOP_SIGNAL.name}); its resume state is saved: run the same command again to resume",
                  file=sys.stderr)
        return preempt.PREEMPTED
    except SystemExit as stop:  # SIGTERM (a cluster's time limit, kill): the same line, its own status
        from engine.run_lock import TERMINATED

        if stop.code != TERMINATED:
            raise
        print(f"\n{interrupted_line(trainer, args).replace('interrupted', 'terminated', 1)}", file=sys.stderr)
        return TERMINATED
    except Exception as err:  # the log says the run crashed, so status tools do not take it for interrupted
        from engine.runs import CRASH_LINE

        logger.error(f"{traceback.format_exc().rstrip()}\n{CRASH_LINE} ({type(err).__name__}, above)",
                     extra={"file_only": True})
        raise
    finally:
        discard_held_records()  # a run that stopped before its log file opened leaves no lines behind
    return 0


def distributed_main(args: argparse.Namespace, cfg) -> int:
    """Under torchrun: one of WORLD_SIZE processes (engine/distributed.py); rank 0 holds the lock and writes."""
    from engine import distributed
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import split_trainer_name

    method, _ = split_trainer_name(cfg.TRAINER.NAME)
    distributed.check_method(TRAINER_REGISTRY.get(method), cfg, method)
    if args.eval_only or args.no_train or args.print_model_label:
        raise UserError("--eval-only, --no-train and --print-model-label run as one process: drop torchrun.")
    distributed.init(cfg.USE_CUDA)
    try:
        if args.skip_finished and finished_run_matches(cfg.OUTPUT_DIR, {**flat_config(cfg), **run_options(args, cfg)}):
            print(f"Results are available in {cfg.OUTPUT_DIR}. Skip this job.")
            return 0
        if not cfg.OUTPUT_DIR or not distributed.is_main():
            return run(args, cfg)
        from engine.run_lock import RunLock

        with RunLock(cfg.OUTPUT_DIR, wait=args.wait_for_lock):
            return run(args, cfg)
    finally:
        distributed.close()


def interrupted_line(trainer, args: argparse.Namespace) -> str:
    """The one line a Ctrl-C gets: where the run stopped, and that the same command picks it up."""
    if trainer is None:
        return "interrupted before the run started; run the same command again to start it"
    if args.eval_only:
        return "interrupted during evaluation; run the same command again to evaluate"
    if getattr(trainer, "time_start", None) is None:
        return "interrupted before training started; run the same command again to start it"
    epoch = max(trainer.epoch, trainer.start_epoch) + 1
    return f"interrupted at epoch {min(epoch, trainer.max_epoch)}; run the same command again to resume"


def trial_load_epoch(args: argparse.Namespace, cfg) -> None:
    """A trial run (TRAIN.TRIAL_EPOCHS) saved no checkpoint past its last trial epoch, so the --load-epoch
    the scripts pass for the full run (base2new.sh: 50 for CoOp) is capped at it, with a note."""
    trial = cfg.TRAIN.TRIAL_EPOCHS
    if args.eval_only and args.load_epoch and trial > 0 and args.load_epoch > trial:
        print(f"note: trial run (TRAIN.TRIAL_EPOCHS {trial}): testing the checkpoint of epoch {trial}, "
              f"not {args.load_epoch}", flush=True)
        args.load_epoch = trial


def main(argv=None) -> int:
    from engine import preempt  # no torch: --help stays instant

    preempt.install()  # SIGUSR2 (SLURM's pre-termination warning): finish the epoch, save, exit resumable
    args = parse_args(argv)
    try:
        cfg = setup_cfg(args)
        trial_load_epoch(args, cfg)
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # started by torchrun (engine/distributed.py)
            return distributed_main(args, cfg)
        if cfg.TEST.DATASET and not args.eval_only:
            raise UserError(f"TEST.DATASET {cfg.TEST.DATASET} scores a trained run on another dataset: pass "
                            "--eval-only --model-dir <the trained run's folder> with it.")
        if args.print_model_label:  # the scripts name a run's folder by it
            from engine.trainer import backbone_label

            print(backbone_label(cfg))
            return 0
        requested = {**flat_config(cfg), **run_options(args, cfg)}
        if args.skip_finished and finished_run_matches(cfg.OUTPUT_DIR, requested):
            print(f"Results are available in {cfg.OUTPUT_DIR}. Skip this job.")
            return 0
        if not cfg.OUTPUT_DIR:
            return run(args, cfg)
        from engine.run_lock import RunLock

        note = lambda line: print(f"note: {line}", flush=True)  # noqa: E731
        with RunLock(cfg.OUTPUT_DIR, wait=args.wait_for_lock, on_wait=note) as lock:
            # The run we waited for may have finished this very run.
            if lock.waited and args.skip_finished and finished_run_matches(cfg.OUTPUT_DIR, requested):
                print(f"Results are available in {cfg.OUTPUT_DIR}. Skip this job.")
                return 0
            return run(args, cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while waiting for the lock, or before the run began
        print("\ninterrupted before the run started; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
