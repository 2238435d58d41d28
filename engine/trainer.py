"""TrainerX: Dassl's trainer loop and hooks over cached frozen-tower features.

Subclasses (one per method, in trainers/) override `build_model`, `forward_backward` and, where
inference differs from `self.model(features)`, `model_inference`. They register their learnable
modules with `register_model`; only those are optimised and checkpointed, so a checkpoint holds the
learned context (a few KB), not a copy of the backbone.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import RandomSampler
from tqdm import tqdm

from engine import distributed, preempt
from engine.config import epoch_budget, flat_config
from engine.data import DataManager, stack_labels, transform_spec
from engine.errors import UserError
from engine.evaluation import classification_report, report_lines
from engine.features import FeatureCache, FeatureVariant, feature_cache_dir
from engine.optim import build_lr_scheduler, build_optimizer
from engine.precision import autocast, autocast_dtype, precision_name
from engine.registry import BACKBONE_REGISTRY, TRAINER_REGISTRY
from engine.runs import RESUME_FILE, RESUME_NOTE, difference_lines, drop_resume_state, setting_differences
from engine.threads import StepThreads, step_threads
from engine.tracking import Tracker, report_targets, settings_params
from engine.utils import get_logger, torch_save_atomic, write_json


def split_trainer_name(name: str) -> tuple[str, str | None]:
    """'BiomedCoOp_TinyBiomedCLIP' -> ('BiomedCoOp', 'TinyBiomedCLIP'); a bare method name has no backbone."""
    if name in TRAINER_REGISTRY:
        return name, None
    method, _, backbone = name.rpartition("_")
    if method in TRAINER_REGISTRY and backbone in BACKBONE_REGISTRY:
        return method, backbone
    if method in TRAINER_REGISTRY:
        BACKBONE_REGISTRY.get(backbone)  # raises with the list of valid backbones
    methods = ", ".join(TRAINER_REGISTRY.registered_names())
    backbones = ", ".join(BACKBONE_REGISTRY.registered_names())
    raise UserError(
        f"Unknown trainer '{name}'. Use <METHOD>_<MODEL> with METHOD in: {methods}; MODEL in: {backbones}."
    )


def backbone_label(cfg) -> str:
    """The model name as results report it; random weights are never labelled as the real model.

    A generic family (one name, many models) gives its builder a `label(cfg)`, e.g. the hub id or
    folder name, appended here so that two such models never share a label.
    """
    name = cfg.MODEL.BACKBONE.NAME
    label = getattr(BACKBONE_REGISTRY.get(name), "label", None) if name in BACKBONE_REGISTRY else None
    which = label(cfg) if label else ""
    name = f"{name}-{which}" if which else name
    return name if cfg.MODEL.BACKBONE.PRETRAINED else f"{name}-random"


def build_trainer(cfg):
    method, _ = split_trainer_name(cfg.TRAINER.NAME)
    return TRAINER_REGISTRY.get(method)(cfg)


def build_backbone(cfg):
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg)


class FeatureBatches:
    """Mini-batches of cached features; epoch e reads augmented view e (mod the number of views).

    Length and sampling follow Dassl's train loader: a RandomSampler permutation from torch's global
    RNG, and drop_last when there are at least `batch_size` items. That is Dassl's distribution of
    batches, not its exact order (Dassl's loader makes one more random draw), so a seed's batch order
    here differs from the reference's.
    """

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.feats, self.labels, self.batch_size = feats, labels, batch_size
        self.view = 0

    def set_epoch(self, epoch: int) -> None:
        self.view = epoch % self.feats.shape[0]

    def __len__(self) -> int:
        n = self.labels.numel()
        return n // self.batch_size if n >= self.batch_size else 1

    def __iter__(self):
        order = torch.tensor(list(RandomSampler(range(self.labels.numel()))))
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {"feat": self.feats[self.view, idx], "label": self.labels[idx], "index": idx}


class TrainerX:
    """Base trainer for labelled data ("X" as in Dassl)."""

    # Methods that tune the image tower (CLIP-LoRA, CLIP-SVD) set this False and receive pixels; a method
    # whose answer depends on its config overrides frozen_image_path (an instance holds its config's).
    uses_frozen_image_features = True
    # Whether TrainerX applies TRAINER.<METHOD>.PREC (autocast + gradient scaler) around
    # forward_backward; methods that manage their own precision set this False.
    engine_mixed_precision = True
    # Scoring on another dataset's test split (TEST.DATASET, datasets/domain_generalization.py sets
    # these): the output columns its labels 0.. name, its class names, and what results.json adds.
    eval_columns: list[int] | None = None
    eval_classnames: list[str] | None = None
    eval_record: dict = {}
    # False: once a cached-feature run has its features, the engine frees the image tower before
    # training (release_image_tower). A method that encodes images after that sets it True.
    keeps_image_tower = False
    step_plan: StepThreads | None = None  # the step's thread count under TRAIN.THREADS (CPU only)

    def __init__(self, cfg):
        self.cfg = cfg
        self.logger = get_logger()
        use_cuda = torch.cuda.is_available() and cfg.USE_CUDA
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.output_dir = cfg.OUTPUT_DIR
        self.start_epoch = self.epoch = 0
        self.max_epoch = epoch_budget(cfg)  # OPTIM.MAX_EPOCH, or fewer in a trial run (TRAIN.TRIAL_EPOCHS)
        self._models: dict[str, nn.Module] = {}
        self._optims: dict[str, torch.optim.Optimizer | None] = {}
        self._scheds: dict[str, object] = {}
        self._test_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        # Command-line choices outside the config that change the numbers (set by train.py for
        # --eval-only: which checkpoint was tested); recorded with the config in results.json.
        self.run_options: dict = {}
        self.check_cfg(cfg)
        self.uses_frozen_image_features = self.frozen_image_path(cfg)
        # The backbone first: a run that stops at its weights (offline, none on disk) has then written
        # nothing, not even the few-shot split. Neither step draws from the other's RNG (the draw uses
        # Python's random, weight initialisation torch's), so the order changes no number.
        self.backbone = build_backbone(cfg).to(self.device)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.build_data_loader()
        self.feature_cache = FeatureCache(
            self.feature_cache_dir(),
            self.backbone, self.device, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
            workers=cfg.DATALOADER.NUM_WORKERS, precision=cfg.FEATURES.PRECISION, store=cfg.FEATURES.STORE_DTYPE,
            threads=cfg.TRAIN.THREADS,
            variant=self.feature_variant(cfg, self.backbone) if self.use_feature_cache else None,
        )
        self.setup_mixed_precision()
        self.build_model()

    def setup_mixed_precision(self) -> None:
        """Autocast for the training step from TRAINER.<METHOD>.PREC (methods whose config has one).

        fp32 (the default) trains in fp32. amp/auto: on CUDA, bf16 autocast where supported, else fp16
        autocast with a gradient scaler; on CPU it stays fp32 (said in the log). bf16 or fp16 given
        explicitly autocast on any device, CPU included. Evaluation always runs in fp32.
        """
        self.train_amp_dtype = None
        key = getattr(self, "cfg_key", "")
        node = self.cfg.TRAINER.get(key) if key else None
        if not self.engine_mixed_precision or node is None or "PREC" not in node:
            self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=False)
            return
        where = f"TRAINER.{key}.PREC"
        self.train_amp_dtype = autocast_dtype(node.PREC, self.device, where)
        if self.train_amp_dtype is None and str(node.PREC).lower() in ("amp", "auto") and self.device.type != "cuda":
            self.logger.info(f"{where} {node.PREC}: mixed precision is for CUDA; training in fp32 on "
                             f"{self.device.type} (set {where} bf16 to autocast on the CPU)")
        elif self.train_amp_dtype is not None:
            self.logger.info(f"{where} {node.PREC}: training step under {precision_name(self.train_amp_dtype)} "
                             f"autocast on {self.device.type}")
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.train_amp_dtype == torch.float16)

    def feature_cache_dir(self) -> str:
        """FEATURES.CACHE_DIR, else <dataset dir>/feature_cache, else (read-only data) a per-user folder."""
        return feature_cache_dir(self.cfg, self.dm.dataset.dataset_dir)

    # ----- hooks -------------------------------------------------------------------------------
    def check_cfg(self, cfg) -> None:
        pass

    @classmethod
    def frozen_image_path(cls, cfg) -> bool:
        """Whether, under cfg, nothing in this method's image path trains, so a view's image feature is a
        fixed function of its pixels and the feature cache can serve it (FEATURES.ENABLED permitting)."""
        return cls.uses_frozen_image_features

    @classmethod
    def feature_variant_key(cls, cfg) -> dict | None:
        """The settings by which this method's frozen image path differs from the plain tower's, or None
        (the plain tower). They name its cache files; sweeps count its passes apart from the shared ones."""
        return None

    @classmethod
    def feature_variant(cls, cfg, backbone) -> FeatureVariant | None:
        """The feature cache's variant for a method whose frozen image path is not `encode_image`: its
        key (`feature_variant_key`) and its forward. None: the plain tower's features, shared by all."""
        return None

    def build_data_loader(self) -> None:
        self.dm = DataManager(self.cfg)
        self.num_classes = self.dm.num_classes
        self.lab2cname = self.dm.lab2cname
        self.classnames = self.dm.classnames

    def build_model(self) -> None:
        raise NotImplementedError

    def forward_backward(self, batch: dict) -> dict:
        raise NotImplementedError

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)

    def parse_batch_train(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_features(batch), batch["label"].to(self.device)

    # ----- features ---------------------------------------------------------------------------
    @property
    def use_feature_cache(self) -> bool:
        return self.uses_frozen_image_features and self.cfg.FEATURES.ENABLED

    def image_features(self, batch: dict) -> torch.Tensor:
        """Frozen image-tower features of a batch: from the cache, or encoded now from pixels."""
        if "feat" in batch:
            return batch["feat"].to(self.device)
        images = batch["img"].to(self.device)
        if self.uses_frozen_image_features:
            with torch.no_grad():
                return self.backbone.encode_image(images)
        return self.backbone.encode_image(images)

    def train_view_count(self) -> int:
        """Augmented views cached per training image (results.json records it): one per epoch unless
        FEATURES.TRAIN_VIEWS caps it; methods that read a fixed number of views override this."""
        return self.cfg.FEATURES.TRAIN_VIEWS or self.max_epoch

    def train_batches(self):
        cfg = self.cfg
        if not self.use_feature_cache:
            return distributed.shard_loader(self.dm.train_loader_x)  # under torchrun: this process's share
        items = self.dm.dataset.train_x
        views = self.train_view_count()
        feats = self.feature_cache.get(
            items, self.dm.tfm_train, transform_spec(cfg, True), views=views, desc="train views"
        )
        return FeatureBatches(feats, stack_labels(items), cfg.DATALOADER.TRAIN_X.BATCH_SIZE)

    def test_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test_cache is None:
            split = self.cfg.TEST.SPLIT
            items = self.dm.dataset.val if split == "val" else self.dm.dataset.test
            if not items:
                raise UserError(f"The {split} split of {self.cfg.DATASET.NAME} is empty; nothing to evaluate.")
            if self.use_feature_cache:
                feats = self.feature_cache.get(
                    items, self.dm.tfm_test, transform_spec(self.cfg, False), desc=f"{split} set"
                )[0]
            else:
                feats = None
            self._test_cache = (feats, stack_labels(items))
        return self._test_cache

    # ----- models, optimisers, checkpoints ---------------------------------------------------------
    def register_model(self, name: str, model: nn.Module, optim=None, sched=None) -> None:
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None) -> list[str]:
        names = names if names is not None else list(self._models)
        return [names] if isinstance(names, str) else list(names)

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        for name in self.get_model_names(names):
            self._models[name].train(mode == "train")

    def update_lr(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def get_current_lr(self, names=None) -> float:
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise self.non_finite_loss(float(loss.detach().float().reshape(-1)[0]))

    def non_finite_loss(self, value: float, name: str = "loss") -> UserError:
        """Stop at a NaN/inf loss with one line, and drop the resume state so a rerun cannot replay it."""
        self.drop_resume_state()
        batch = getattr(self, "batch_idx", 0) + 1
        batches = getattr(self, "num_batches", "?")
        return UserError(
            f"The {name} became {value} at epoch {self.epoch + 1}/{self.max_epoch}, batch {batch}/{batches}. "
            f"Likely causes: a learning rate too high (OPTIM.LR is {self.cfg.OPTIM.LR}) or loss weights too large. "
            "Lower it and rerun; the run starts afresh (no resume state was kept)."
        )

    def _scaler(self):
        """The fp16 gradient scaler when one is in use, else None (fp32 and bf16 need none)."""
        scaler = getattr(self, "grad_scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        scaler = self._scaler()  # fp16 only: scales the loss so small gradients do not underflow
        # Backward outside autocast: its ops follow the dtypes the forward chose.
        with torch.autocast(loss.device.type, enabled=False):
            (scaler.scale(loss) if scaler else loss).backward()

    def sync_gradients(self) -> None:
        """Under torchrun: each learned gradient becomes the mean over the processes, weighted by their
        share of the batch (engine/distributed.py); a single process is left alone."""
        if distributed.is_distributed():
            params = [p for m in self._models.values() for p in m.parameters() if p.requires_grad]
            distributed.average_gradients(params, self.local_items)

    def model_update(self, names=None) -> None:
        self.sync_gradients()
        scaler = self._scaler()
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                if scaler:
                    scaler.step(self._optims[name])  # unscales; skips the step if a gradient overflowed
                else:
                    self._optims[name].step()
        if scaler:
            scaler.update()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def build_optim_sched(self, module: nn.Module):
        optim = build_optimizer(module, self.cfg.OPTIM)
        return optim, build_lr_scheduler(optim, self.cfg.OPTIM)

    def _state(self, name: str) -> dict:
        optim, sched = self._optims[name], self._scheds[name]
        return {
            "state_dict": self._models[name].state_dict(),
            "epoch": self.epoch + 1,
            "optimizer": optim.state_dict() if optim else None,
            "scheduler": sched.state_dict() if sched else None,
        }

    def save_model(self, epoch: int, directory: str) -> None:
        """Dassl layout: <dir>/<model name>/model.pth.tar-<epoch>, recording what it was trained with."""
        if not distributed.is_main():  # under torchrun rank 0 alone writes
            return
        for name in self._models:
            state = {**self._state(name), "trained_with": self.checkpoint_identity()}
            torch_save_atomic(state, os.path.join(directory, name, f"model.pth.tar-{epoch}"))

    def checkpoint_identity(self) -> dict:
        """Method and backbone (family and model label: hub id or folder for the generic families,
        "-random" for random weights) a checkpoint belongs to; loading checks them."""
        method, _ = split_trainer_name(self.cfg.TRAINER.NAME)
        return {"method": method, "backbone": self.cfg.MODEL.BACKBONE.NAME, "model": backbone_label(self.cfg)}

    def check_checkpoint_identity(self, path: str, ckpt: dict) -> None:
        """Stop when `path` was trained with another method or backbone (their widths can agree, so
        the tensors would load and the results be filed under the wrong model), unless
        MODEL.ALLOW_CHECKPOINT_MISMATCH says it is deliberate. Checkpoints from before the record
        (the authors' released ones) load unchecked, with a note."""
        mine = self.checkpoint_identity()
        saved = ckpt.get("trained_with")
        if not isinstance(saved, dict):
            self.logger.info(f"note: {path} does not record the method and backbone it was trained with "
                             f"(an older or released checkpoint); loading it into {mine['method']} on "
                             f"{mine['model']} without that check")
            return
        differs = [k for k in ("method", "model") if saved.get(k) != mine[k]]
        if not differs:
            return
        what = " and ".join(f"{k} {saved.get(k)} (this run: {mine[k]})" for k in differs)
        if self.cfg.MODEL.ALLOW_CHECKPOINT_MISMATCH:
            self.logger.info(f"note: {path} was trained with {what}; loaded anyway (MODEL.ALLOW_CHECKPOINT_MISMATCH)")
            return
        raise UserError(
            f"{path} was trained with {what}. Evaluate it with the trainer it was trained with "
            f"({saved.get('method')}_{saved.get('backbone')}), or add MODEL.ALLOW_CHECKPOINT_MISMATCH True "
            "to load it into this one on purpose."
        )

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        if not directory:
            return
        for name, model in self._models.items():
            folder = os.path.join(directory, name)
            if epoch is None:
                found = sorted(
                    (int(f.rsplit("-", 1)[1]) for f in os.listdir(folder) if f.startswith("model.pth.tar-")),
                ) if os.path.isdir(folder) else []
                if not found:
                    raise UserError(
                        f"No checkpoint model.pth.tar-<epoch> in {folder}; pass --model-dir and --load-epoch."
                    )
                epoch_ = found[-1]
            else:
                epoch_ = epoch
            path = os.path.join(folder, f"model.pth.tar-{epoch_}")
            if not os.path.isfile(path):
                raise UserError(f"Checkpoint not found: {path}. Check --model-dir and --load-epoch.")
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            self.check_checkpoint_identity(path, ckpt)
            self.logger.info(f"Loading weights to {name} from {path} (epoch = {ckpt.get('epoch')})")
            self.load_state(name, model, ckpt["state_dict"])

    def load_state(self, name: str, model: nn.Module, state: dict) -> None:
        """Load learnable tensors; methods override to map reference checkpoint keys."""
        model.load_state_dict(state, strict=True)

    # ----- resume ---------------------------------------------------------------------------------
    def _resume_path(self) -> str:
        return os.path.join(self.cfg.RESUME or self.output_dir, RESUME_FILE)

    def save_resume_state(self) -> None:
        if not distributed.is_main():
            return
        state = {name: self._state(name) for name in self._models}
        state["_config"] = self.effective_config()
        state["_rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }
        torch_save_atomic(state, os.path.join(self.output_dir, RESUME_FILE))
        # Its epoch and settings where tools read them without torch (engine.runs.run_status: interrupted
        # or stale). Written after the state, so it never claims an epoch the state does not hold.
        write_json({"epoch": self.epoch + 1, "max_epoch": self.max_epoch, "config": state["_config"]},
                   os.path.join(self.output_dir, RESUME_NOTE))

    def drop_resume_state(self) -> None:
        if distributed.is_main():
            drop_resume_state(self.output_dir)

    def resume_if_possible(self) -> int:
        path = self._resume_path()
        if not os.path.isfile(path):
            return 0
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved = state.get("_config")
        differences = None
        if isinstance(saved, dict):  # compared as results.json is (engine.runs): locations play no part
            requested = self.effective_config()
            differences = difference_lines(saved, requested, setting_differences(saved, requested), limit=8)
        if differences != []:
            what = ("was saved with other settings (saved -> requested):\n  " + "\n  ".join(differences)
                    if differences else "does not record the settings it was saved with.")
            raise UserError(
                f"The resume state {path} {what}\nTo continue that run, rerun it with its own settings; "
                f"to start this one afresh, delete {path} (or write to another --output-dir / OUTPUT_ROOT)."
            )
        for name, model in self._models.items():
            model.load_state_dict(state[name]["state_dict"])
            if self._optims[name] is not None and state[name]["optimizer"]:
                self._optims[name].load_state_dict(state[name]["optimizer"])
            if self._scheds[name] is not None and state[name]["scheduler"]:
                self._scheds[name].load_state_dict(state[name]["scheduler"])
        rng = state["_rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        epoch = next(iter(state[n]["epoch"] for n in self._models))
        self.logger.info(f"Resuming from {path}: {epoch} of {self.max_epoch} epochs already done")
        return epoch

    # ----- loop ---------------------------------------------------------------------------------
    def train(self) -> dict | None:
        self.before_train()
        epochs = tqdm(range(self.start_epoch, self.max_epoch), desc="epochs", unit="epoch", leave=False, disable=None,
                      initial=self.start_epoch, total=self.max_epoch)
        for self.epoch in epochs:
            losses = self.run_epoch()
            epochs.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
            self.after_epoch()
        return self.after_train()

    def before_train(self) -> None:
        self.time_start = time.time()
        self.start_epoch = self.resume_if_possible()
        if distributed.is_main():
            self.tracker(fresh=self.start_epoch == 0)  # a resumed run adds to its curves; a new one replaces them
        self.train_loader_x = self.train_batches()
        self.num_batches = len(self.train_loader_x)
        if self.device.type == "cpu":  # TRAIN.THREADS (engine/threads.py); on CUDA the step is on the GPU
            count = self.step_thread_count()
            torch.set_num_threads(count)
            self.step_plan = StepThreads(self.cfg.TRAIN.THREADS, self.step_key(), count, self.logger.info)
        self.release_image_tower()

    def release_image_tower(self) -> None:
        """A run on cached features never runs the image tower once its training views and test features
        are cached: extract the test features now (not after training), drop the cache's in-memory
        tables, and free the tower (a third of BiomedCLIP's weights) before the first step. A method
        that encodes images later sets `keeps_image_tower`; pixel methods keep theirs anyway."""
        if self.keeps_image_tower or not self.use_feature_cache or not isinstance(self.train_loader_x, FeatureBatches):
            return
        if not self.cfg.TEST.NO_TEST:
            self.test_features()
        self.feature_cache.forget()
        freed = self.backbone.release_image_tower()
        self.logger.info(f"Image features cached: the image tower is released before training ({freed / 1e6:.0f} MB)")

    def step_thread_count(self) -> int:
        """CPU threads the training step starts at: TRAIN.THREADS, or under auto the fastest for this step's
        size (training then re-checks: step_plan)."""
        return step_threads(self.cfg.TRAIN.THREADS, self.step_key(), self.thread_probe(), self.logger.info)

    def step_key(self) -> tuple:
        """What the step's thread choice is remembered by within a process: method, model and size."""
        return (type(self).__name__, self.cfg.MODEL.BACKBONE.NAME, self.num_classes,
                self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)

    def thread_probe(self):
        """A forward pass the size of one training step, for timing thread counts: evaluation mode, no
        gradient, the RNG state put back (so a run's numbers never depend on the probe); None when the
        method has nothing to time before training."""
        loader = self.train_loader_x
        bs = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        if isinstance(loader, FeatureBatches):
            feats = loader.feats[0, :bs].to(self.device)
            run = lambda: self.model_inference(feats)  # noqa: E731
        elif not self.uses_frozen_image_features:  # pixel methods: the image-tower pass of a blank batch
            pixels = torch.zeros(bs, 3, *self.cfg.INPUT.SIZE, device=self.device)
            run = lambda: self.backbone.encode_image(pixels)  # noqa: E731
        else:
            return None

        def probe():
            modules = [self.backbone, *self._models.values()]
            modes = [(m, m.training) for module in modules for m in module.modules()]
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                try:
                    for module in modules:
                        module.eval()
                    run()
                finally:
                    for m, training in modes:
                        m.training = training
        return probe

    def run_epoch(self) -> dict:
        self.set_model_mode("train")
        if isinstance(self.train_loader_x, FeatureBatches):
            self.train_loader_x.set_epoch(self.epoch)
        self.epoch_lr = self.tracked_lr()
        totals: dict[str, float] = {}
        full_items = 0
        for batch_idx, batch in enumerate(self.train_loader_x):
            self.batch_idx = batch_idx
            self.local_items = len(batch["label"]) if "label" in batch else 1  # weights this share's gradients
            full_items = max(full_items, self.local_items)
            # Every method's step runs here: under TRAIN.THREADS auto it is timed, and now and then run at
            # another thread count to re-check the choice (engine/threads.py StepThreads).
            timing = (self.step_plan.step(full=self.local_items == full_items) if self.step_plan is not None
                      else contextlib.nullcontext())
            with timing, autocast(self.device, self.train_amp_dtype):
                summary = self.forward_backward(batch)
            for k, v in summary.items():
                if not math.isfinite(float(v)) and k.startswith("loss"):
                    raise self.non_finite_loss(float(v), k)  # for methods that step without detect_anomaly
                totals[k] = totals.get(k, 0.0) + float(v)
            # Dassl prints every PRINT_FREQ batches; short epochs print their last batch.
            freq, step = self.cfg.TRAIN.PRINT_FREQ, self.batch_idx + 1
            if freq > 0 and (step % freq == 0 or (self.num_batches < freq and step == self.num_batches)):
                loss_txt = " ".join(f"{k} {float(v):.4f}" for k, v in summary.items())
                self.logger.info(
                    f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{step}/{self.num_batches}] "
                    f"{loss_txt} lr {self.get_current_lr():.4e}"
                )
        if self.step_plan is not None:  # a re-check may have run the last step at another count
            torch.set_num_threads(self.step_plan.choice)
        self.epoch_summary = {k: v / max(self.num_batches, 1) for k, v in totals.items()}
        return self.epoch_summary

    def after_epoch(self) -> None:
        self.track_epoch()
        last = self.epoch + 1 == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        if last or (freq > 0 and (self.epoch + 1) % freq == 0):
            self.save_model(self.epoch + 1, self.output_dir)
        if not last:
            self.save_resume_state()
            # A pre-termination signal (engine/preempt.py): stop here, resumable; every process agrees.
            if distributed.any_rank(preempt.requested()):
                raise preempt.Preempted(self.epoch + 1)

    def after_train(self) -> dict | None:
        self.logger.info("Finished training")
        if not distributed.is_main():  # under torchrun rank 0 evaluates and writes the results
            return None
        result = None
        if not self.cfg.TEST.NO_TEST:
            self.logger.info("Deploy the last-epoch model")
            result = self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        self.logger.info(f"Elapsed: {elapsed}")
        if result is not None:
            self.write_results(result, elapsed_s=time.time() - self.time_start)
        self.drop_resume_state()
        return result

    @torch.no_grad()
    def test(self, split: str | None = None) -> dict:
        self.set_model_mode("eval")
        split = split or self.cfg.TEST.SPLIT
        feats, labels = self.test_features()
        bs = self.cfg.DATALOADER.TEST.BATCH_SIZE
        outputs = []
        if feats is not None:
            for start in range(0, len(labels), bs):
                outputs.append(self.model_inference(feats[start : start + bs].to(self.device)).float().cpu())
        else:
            loader = self.dm.val_loader if split == "val" else self.dm.test_loader
            for batch in tqdm(loader, desc=f"{split} set", leave=False, disable=None):
                outputs.append(self.model_inference(self.image_features(batch)).float().cpu())
        logits = torch.cat(outputs)
        if self.eval_columns is not None:
            logits = logits[:, self.eval_columns]
        report = classification_report(logits, labels, self.eval_classnames or self.classnames)
        self.logger.info(f"Evaluate on the *{split}* set")
        for line in report_lines(report, self.cfg.TEST.PER_CLASS_RESULT):
            self.logger.info(line)
        return report

    def validation_items(self) -> list:
        """The images a method chooses its hyper-parameters on: the few-shot val split, or, under
        DATASET.FEWSHOT_PROTOCOL imbalanced (which has none by design), the few-shot training images,
        said once in the log and recorded in results.json as "validation"."""
        items = self.dm.dataset.val
        if items or self.cfg.DATASET.FEWSHOT_PROTOCOL == "balanced":
            self.validation_source = "val"
            return items
        if getattr(self, "validation_source", None) != "train":
            self.logger.info(
                f"No val split under DATASET.FEWSHOT_PROTOCOL {self.cfg.DATASET.FEWSHOT_PROTOCOL}: "
                f"{self.cfg.TRAINER.NAME} chooses its hyper-parameters on the few-shot training images instead"
            )
        self.validation_source = "train"
        return self.dm.dataset.train_x

    def result_fields(self) -> dict:
        """Method-specific facts results.json records beside the accuracy; JSON-ready. Methods that
        add their own extend this one's: which split chose the hyper-parameters, when any did."""
        source = getattr(self, "validation_source", None)
        return {**({"validation": source} if source else {}), **self.eval_record}

    def effective_config(self) -> dict:
        """What results.json records and scripts compare before skipping a seed (see train.py)."""
        return {**flat_config(self.cfg), **self.run_options}

    def write_results(self, report: dict, elapsed_s: float | None = None, eval_only: bool = False) -> None:
        cfg = self.cfg
        method, _ = split_trainer_name(cfg.TRAINER.NAME)
        record = {
            "trainer": cfg.TRAINER.NAME,
            "method": method,
            "backbone": backbone_label(cfg),
            "dataset": cfg.DATASET.NAME,
            "num_shots": cfg.DATASET.NUM_SHOTS,
            "seed": cfg.SEED,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "split": cfg.TEST.SPLIT,
            "eval_only": eval_only,
            "epochs": self.max_epoch,
            "train_views": self.train_view_count(),
            "elapsed_s": None if elapsed_s is None else round(elapsed_s, 2),
            "classnames": self.classnames,
            "pretrained": bool(cfg.MODEL.BACKBONE.PRETRAINED),
            "label": cfg.TRAINER.RUN_LABEL,
            "fewshot_protocol": cfg.DATASET.FEWSHOT_PROTOCOL,
            **self.result_fields(),
            **report,
            "config": self.effective_config(),
        }
        write_json(record, os.path.join(self.output_dir, "results.json"))
        self.track_final(record)

    # ----- curves (engine/tracking.py: TRAIN.REPORT_TO) ------------------------------------------------
    def tracker(self, fresh: bool = True) -> Tracker:
        """This run's trackers; made at the start of training, or by the first value (eval-only runs)."""
        if getattr(self, "_tracker", None) is None:
            cfg = self.cfg
            name = f"{cfg.TRAINER.NAME}/{cfg.DATASET.NAME}/shots_{cfg.DATASET.NUM_SHOTS}/seed{cfg.SEED}"
            self._tracker = Tracker(self.output_dir, report_targets(cfg.TRAIN.REPORT_TO),
                                    name + (f"/{cfg.TRAINER.RUN_LABEL}" if cfg.TRAINER.RUN_LABEL else ""),
                                    fresh=fresh, log=self.logger.info)
        return self._tracker

    def track(self, values: dict, step: int | None = None) -> None:
        """Scalars for the trackers at `step` (default: this epoch, counted from 1). Methods that score
        their own epochs call it too, e.g. `self.track({"val/acc": acc})`."""
        if not distributed.is_main():
            return
        self.tracker().scalars(values, self.epoch + 1 if step is None else step)

    def tracked_lr(self) -> float | None:
        """The learning rate this epoch trains with (the first registered optimiser's), if any."""
        optim = next((o for o in self._optims.values() if o is not None), None)
        return float(optim.param_groups[0]["lr"]) if optim is not None else None

    def track_epoch(self) -> None:
        """After each epoch: the step summaries the loop averaged as train/<key>, and train/lr."""
        values = {f"train/{k}": v for k, v in getattr(self, "epoch_summary", {}).items()}
        if getattr(self, "epoch_lr", None) is not None:
            values["train/lr"] = self.epoch_lr
        if values:
            self.track(values)

    def track_final(self, record: dict) -> None:
        """The evaluation's accuracy and macro-F1 at the last step, the run's settings as hparams; closes."""
        if not distributed.is_main():
            return
        if not self.tracker().targets:  # TRAIN.REPORT_TO none
            return
        split = record["split"]
        metrics = {f"{split}/acc": record["accuracy"], f"{split}/macro_f1": record["macro_f1"]}
        identity = {k: record[k] for k in ("method", "backbone", "dataset", "num_shots", "seed")}
        self.tracker().final(metrics, self.max_epoch, settings_params(identity, record["config"]))
