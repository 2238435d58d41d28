"""yacs configuration: Dassl's key names and defaults, plus the TRAINER.<METHOD> subtrees.

Unknown keys in a YAML file or on the command line raise a UserError that lists the valid keys of
that level, so a typo never silently trains with a default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from engine.errors import UserError


def get_cfg_default() -> CN:
    _C = CN()
    _C.VERSION = 1
    _C.OUTPUT_DIR = "./output"
    _C.RESUME = ""
    _C.SEED = -1
    _C.USE_CUDA = True
    _C.VERBOSE = True

    _C.INPUT = CN()
    _C.INPUT.SIZE = (224, 224)
    _C.INPUT.INTERPOLATION = "bicubic"
    _C.INPUT.TRANSFORMS = ("random_resized_crop", "normalize")
    _C.INPUT.NO_TRANSFORM = False
    _C.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    _C.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    _C.INPUT.CROP_PADDING = 4
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)

    _C.DATASET = CN()
    _C.DATASET.ROOT = ""
    _C.DATASET.NAME = ""
    _C.DATASET.SOURCE_DOMAINS = ()
    _C.DATASET.TARGET_DOMAINS = ()
    _C.DATASET.NUM_SHOTS = -1
    _C.DATASET.SUBSAMPLE_CLASSES = "all"
    # Own-data datasets: folder of class folders or a CSV (see datasets/).
    _C.DATASET.PATH = ""
    # Where few-shot subsets are cached; "" = <dataset dir>/split_fewshot, or a per-user cache
    # folder when the dataset folder is read-only.
    _C.DATASET.FEWSHOT_CACHE_DIR = ""
    # How the few-shot support set is drawn: "balanced" = K images per class plus a min(K, 4)-per-class
    # val split (Dassl's draw); "imbalanced" = K x C images in the training split's own class
    # proportions (at least one per class) and no val split (docs/experiments.md).
    _C.DATASET.FEWSHOT_PROTOCOL = "balanced"

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = 8
    _C.DATALOADER.K_TRANSFORMS = 1
    _C.DATALOADER.RETURN_IMG0 = False
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_X.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_X.N_INS = 16
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    _C.DATALOADER.TEST.BATCH_SIZE = 100

    _C.MODEL = CN()
    _C.MODEL.INIT_WEIGHTS = ""
    _C.MODEL.BACKBONE = CN()
    # Model family (BiomedCLIP, CLIP, PubMedCLIP, PMCCLIP or a Tiny twin); set from the trainer
    # name suffix (e.g. BiomedCoOp_BiomedCLIP) when that has one.
    _C.MODEL.BACKBONE.NAME = "BiomedCLIP"
    _C.MODEL.BACKBONE.PRETRAINED = True
    # Local folder with the model's weights (see tools/download_weights.py); "" = environment
    # variable BIOMEDCOOP_WEIGHTS_DIR, then the hub.
    _C.MODEL.BACKBONE.PATH = ""
    # Which model a generic family (OpenCLIP, transformers CLIP/SigLIP) loads: an open_clip name
    # and pretrained tag ("ViT-B-16:openai"), an "hf-hub:org/name" id, or a transformers hub id.
    # Named families (BiomedCLIP, CLIP, ...) ignore it.
    _C.MODEL.BACKBONE.HUB = ""
    # A checkpoint records the method and backbone it was trained with; loading it into another
    # stops (same widths would load silently). True loads it anyway, for a deliberate transfer.
    _C.MODEL.ALLOW_CHECKPOINT_MISMATCH = False

    # Frozen image-tower features are computed once and reused (engine/features.py).
    _C.FEATURES = CN()
    _C.FEATURES.ENABLED = True
    _C.FEATURES.CACHE_DIR = ""  # "" = <dataset dir>/feature_cache (a per-user folder if read-only)
    # Augmented views cached per training image; view e is what epoch e sees. 0 = one per epoch
    # (the reference's augmentation distribution); fewer views is a documented speed option.
    _C.FEATURES.TRAIN_VIEWS = 0
    # Which seed draws view e's crop: "shared" (the image and e only: the same crop for every run
    # seed and K, so one cache serves a whole grid; seeds then differ by their few-shot draw, init
    # and batch order) or "run" (also the run's seed: as independent as the reference's
    # augmentation, at the cost of extracting each seed's views separately).
    _C.FEATURES.VIEW_SEED = "shared"
    # Precision of the frozen image tower while features are extracted: auto (bf16 autocast on a
    # GPU that supports it, else fp16 autocast; fp32 on CPU), fp32, bf16 or fp16. Part of the cache
    # file names, so features of different precisions never mix.
    _C.FEATURES.PRECISION = "auto"
    # How cached features are stored: fp32, or fp16 (half the disk and memory; read back as fp32).
    _C.FEATURES.STORE_DTYPE = "fp32"

    _C.OPTIM = CN()
    _C.OPTIM.NAME = "sgd"
    _C.OPTIM.LR = 0.0003
    _C.OPTIM.WEIGHT_DECAY = 5e-4
    _C.OPTIM.MOMENTUM = 0.9
    _C.OPTIM.SGD_DAMPNING = 0
    _C.OPTIM.SGD_NESTEROV = False
    _C.OPTIM.RMSPROP_ALPHA = 0.99
    _C.OPTIM.ADAM_BETA1 = 0.9
    _C.OPTIM.ADAM_BETA2 = 0.999
    _C.OPTIM.STAGED_LR = False
    _C.OPTIM.NEW_LAYERS = ()
    _C.OPTIM.BASE_LR_MULT = 0.1
    _C.OPTIM.LR_SCHEDULER = "single_step"
    _C.OPTIM.STEPSIZE = (-1,)
    _C.OPTIM.GAMMA = 0.1
    _C.OPTIM.MAX_EPOCH = 10
    _C.OPTIM.WARMUP_EPOCH = -1
    _C.OPTIM.WARMUP_TYPE = "linear"
    _C.OPTIM.WARMUP_CONS_LR = 1e-5
    _C.OPTIM.WARMUP_MIN_LR = 1e-5
    _C.OPTIM.WARMUP_RECOUNT = True

    _C.TRAIN = CN()
    _C.TRAIN.CHECKPOINT_FREQ = 0
    _C.TRAIN.PRINT_FREQ = 10
    _C.TRAIN.COUNT_ITER = "train_x"
    # A trial run (a smoke test, a sweep's --quick): every method trains at most this many epochs,
    # CLIP-LoRA (a budget of iterations per shot) at most this many epochs' worth of iterations.
    # 0 = off. A key of its own, so trial results never pass for runs of the real settings.
    _C.TRAIN.TRIAL_EPOCHS = 0
    # Where training curves and the run's settings go (engine/tracking.py, docs/tracking.md): any of
    # tensorboard (event files in the run folder), wandb (offline), mlflow (a local file store),
    # comma-separated, or none. Changes no number.
    _C.TRAIN.REPORT_TO = "tensorboard"
    # CPU threads of extraction and of the training step: auto (measure the fastest count for the
    # work's size on this machine, now: engine/threads.py) or a whole number. Changes no result.
    _C.TRAIN.THREADS = "auto"

    _C.TEST = CN()
    _C.TEST.EVALUATOR = "Classification"
    _C.TEST.PER_CLASS_RESULT = False
    _C.TEST.COMPUTE_CMAT = False
    _C.TEST.NO_TEST = False
    _C.TEST.SPLIT = "test"
    _C.TEST.FINAL_MODEL = "last_step"
    # Another benchmark whose test split an --eval-only run is scored on, in the trained model's label
    # space matched by class name (the domain-generalisation protocol: datasets/domain_generalization.py).
    _C.TEST.DATASET = ""

    _C.TRAINER = CN()
    _C.TRAINER.NAME = ""
    # A name for this run's variant (an ablation row, a swept value), recorded in results.json as
    # "label"; the result tables give each (method, label) its own row. Changes no number.
    _C.TRAINER.RUN_LABEL = ""
    _extend_trainer_cfg(_C)
    return _C


def prompt_cfg(ctx_init: str = "") -> CN:
    """The keys every CoOp-family method shares (the reference's extend_cfg defaults)."""
    node = CN()
    node.N_CTX = 4
    node.CSC = False
    node.CTX_INIT = ctx_init
    node.PREC = "fp32"
    node.CLASS_TOKEN_POSITION = "end"
    return node


# TRAINER.<KEY> subtrees, declared by each method in its own trainers/ file, so adding a method
# needs no change here.
METHOD_CFGS: dict[str, Callable[[], CN]] = {}


def register_method_cfg(key: str) -> Callable[[Callable[[], CN]], Callable[[], CN]]:
    """Decorator: `build()` returns the defaults of TRAINER.<key>; get_cfg_default adds them."""

    def add(build: Callable[[], CN]) -> Callable[[], CN]:
        if key in METHOD_CFGS and METHOD_CFGS[key] is not build:
            raise KeyError(f"TRAINER.{key} defaults are declared twice")
        METHOD_CFGS[key] = build
        return build

    return add


def _extend_trainer_cfg(cfg: CN) -> None:
    for key, build in METHOD_CFGS.items():
        cfg.TRAINER[key] = build()


def _check_keys(new: dict, ref: CN, where: str, prefix: str = "") -> None:
    for key, value in new.items():
        full = f"{prefix}{key}"
        if key not in ref:
            valid = ", ".join(f"{prefix}{k}" for k in sorted(ref.keys()))
            raise UserError(f"{where}: unknown config key '{full}'. Valid keys here: {valid}.")
        if isinstance(value, dict) and isinstance(ref[key], CN):
            _check_keys(value, ref[key], where, prefix=f"{full}.")


def merge_from_file(cfg: CN, path: str, _chain: tuple[str, ...] = ()) -> None:
    """Merge a YAML file; a top-level `_BASE_: other.yaml` (relative to the file) is merged first.

    `_BASE_` lets a per-dataset config state only what differs from its method's default.
    """
    if not os.path.isfile(path):
        raise UserError(f"Config file not found: {path}. Check the path (configs/ holds the shipped ones).")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML: {err}") from err
    base = data.pop("_BASE_", None) if isinstance(data, dict) else None
    if base is not None:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), str(base)))
        if base_path in _chain + (os.path.normpath(path),):
            raise UserError(f"{path}: _BASE_ '{base}' makes a cycle ({' -> '.join(_chain + (path, base_path))}).")
        merge_from_file(cfg, base_path, _chain + (os.path.normpath(path),))
    _check_keys(data, cfg, path)
    try:
        cfg.merge_from_other_cfg(CN(data))
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path}: {err}") from err


def merge_from_list(cfg: CN, opts: list[str]) -> None:
    if len(opts) % 2:
        raise UserError(f"Config overrides come as KEY VALUE pairs; got an odd list: {opts}")
    for key, _ in zip(opts[0::2], opts[1::2]):
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, CN) or part not in node:
                level = ".".join(parts[:i])
                valid = ", ".join(sorted(node.keys())) if isinstance(node, CN) else "(none)"
                raise UserError(
                    f"Unknown config key '{key}' on the command line. "
                    f"Valid keys under '{level or '<root>'}': {valid}."
                )
            node = node[part]
    # TRAIN.THREADS takes auto or a number: keep a number as text, the key's type.
    opts = [f"'{v}'" if i % 2 and opts[i - 1] == "TRAIN.THREADS" and str(v).strip().isdigit() else v
            for i, v in enumerate(opts)]
    try:
        cfg.merge_from_list(opts)
    except (ValueError, TypeError, AssertionError) as err:
        raise UserError(f"Bad command-line override: {err}") from err


# Keys that say where things live or how much is printed, not what is computed: two runs that differ
# only here produce the same numbers, so they are left out when a finished run or a resume state is
# matched against the requested config.
NON_RESULT_KEYS = frozenset({
    "OUTPUT_DIR", "RESUME", "VERBOSE", "DATALOADER.NUM_WORKERS", "FEATURES.CACHE_DIR",
    "DATASET.FEWSHOT_CACHE_DIR", "MODEL.BACKBONE.PATH", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
    "TRAINER.RUN_LABEL", "TRAIN.REPORT_TO", "TRAIN.THREADS",
})


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def flat_config(cfg: CN, prefix: str = "") -> dict[str, Any]:
    """{"OPTIM.LR": 0.002, ...}: every key that can change a run's numbers, JSON-ready."""
    out: dict[str, Any] = {}
    for key in sorted(cfg.keys()):
        full = f"{prefix}{key}"
        value = cfg[key]
        if isinstance(value, CN):
            out.update(flat_config(value, f"{full}."))
        elif full not in NON_RESULT_KEYS:
            out[full] = _plain(value)
    if not prefix and out.get("DATASET.ROOT") is not None:
        out["DATASET.ROOT"] = os.path.abspath(os.path.expanduser(out["DATASET.ROOT"] or "."))
    return out


def config_differences(old: dict, new: dict, limit: int = 8) -> list[str]:
    """'KEY: OLD -> NEW' for each key both configs have with different values.

    A key only one side has came with a code change (say a newly added method's TRAINER.<KEY>
    defaults) and played no part in the older run, so it does not count.
    """
    keys = [k for k in sorted(set(old) & set(new)) if old[k] != new[k]]
    lines = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"... and {len(keys) - limit} more")
    return lines


FEWSHOT_PROTOCOLS = ("balanced", "imbalanced")


def epoch_budget(cfg: CN) -> int:
    """Epochs a run trains: OPTIM.MAX_EPOCH, cut to TRAIN.TRIAL_EPOCHS in a trial run."""
    trial = cfg.TRAIN.TRIAL_EPOCHS
    return min(cfg.OPTIM.MAX_EPOCH, trial) if trial > 0 else cfg.OPTIM.MAX_EPOCH


def check_config_values(cfg: CN) -> None:
    """Refuse values that would otherwise crash later or silently do something else, one key each."""

    def positive_int(key: str, value: Any, extra: str = "") -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key} must be a whole number of at least 1{extra}; got {value!r}.")

    shots = cfg.DATASET.NUM_SHOTS
    if shots != -1:
        positive_int("DATASET.NUM_SHOTS", shots, " (images per class), or -1 for all training images")
    positive_int("OPTIM.MAX_EPOCH", cfg.OPTIM.MAX_EPOCH)
    trial = cfg.TRAIN.TRIAL_EPOCHS
    if trial != 0:
        positive_int("TRAIN.TRIAL_EPOCHS", trial, " (epochs of a trial run), or 0 for none")
    positive_int("DATALOADER.TRAIN_X.BATCH_SIZE", cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    positive_int("DATALOADER.TEST.BATCH_SIZE", cfg.DATALOADER.TEST.BATCH_SIZE)
    if cfg.TEST.SPLIT not in ("val", "test"):
        raise UserError(f"TEST.SPLIT must be val or test (the split that is evaluated); got {cfg.TEST.SPLIT!r}.")
    if cfg.DATASET.FEWSHOT_PROTOCOL not in FEWSHOT_PROTOCOLS:
        raise UserError(f"DATASET.FEWSHOT_PROTOCOL must be {' or '.join(FEWSHOT_PROTOCOLS)}; "
                        f"got {cfg.DATASET.FEWSHOT_PROTOCOL!r}.")
    if cfg.FEATURES.VIEW_SEED not in ("shared", "run"):
        raise UserError(f"FEATURES.VIEW_SEED must be shared (one crop per image and view for every run) or "
                        f"run (crops also depend on the run's seed); got {cfg.FEATURES.VIEW_SEED!r}.")
    from engine.tracking import TrackingError, check_installed, report_targets

    try:  # before anything is written: a tracker that is not installed stops the run here
        check_installed(report_targets(cfg.TRAIN.REPORT_TO))
    except TrackingError as err:
        raise UserError(str(err)) from None
    from engine.threads import parse_threads

    parse_threads(cfg.TRAIN.THREADS)
    if cfg.DATASET.SUBSAMPLE_CLASSES.lower() not in ("all", "base", "new"):
        raise UserError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got {cfg.DATASET.SUBSAMPLE_CLASSES!r}.")
