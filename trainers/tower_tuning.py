"""Shared by the methods that tune the towers themselves (CLIP-LoRA, CLIP-SVD).

Three things live here:
- `find_weights`: the weight matrices of every attention and MLP block of a tower, found by module
  structure (timm's fused qkv, nn.MultiheadAttention's packed in_proj, HF BERT's query/key/value,
  a ResNet's attention pool), so a method never needs to know which model family it runs on;
- `tower_cfg`: the config keys both methods share;
- `TowerTuningTrainer`: training on pixels (no feature cache), the text classifier recomputed
  through the adapted text tower at every step, a per-iteration cosine schedule over a fixed
  number of iterations, bf16/fp16 autocast on CUDA, and checkpoints that hold only the learned tensors.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader
from yacs.config import CfgNode as CN

from engine import distributed
from engine.data import DatasetWrapper, num_workers
from engine.errors import UserError
from engine.optim import build_optimizer
from engine.precision import autocast_dtype
from engine.trainer import TrainerX

ROLES = ("q", "k", "v", "o", "mlp")


def tower_cfg(params: tuple[str, ...], iters_per_shot: int, cosine_period: str) -> CN:
    """TRAINER.<METHOD> keys both tower-tuning methods share; each method adds its own."""
    node = CN()
    node.TEMPLATE = "a photo of a {}."  # one prompt per class, recomputed through the text tower each step
    node.TOWERS = "both"  # both, image or text
    node.LAYERS = "all"  # all, a range "4-11" or a list "0,1,2" (block indices, 0-based)
    node.PARAMS = params  # any of q, k, v, o (attention projections) and mlp (both MLP matrices)
    # Iterations = ITERS_PER_SHOT x shots (CLIP-LoRA); 0 = OPTIM.MAX_EPOCH epochs (CLIP-SVD).
    node.ITERS_PER_SHOT = iters_per_shot
    # Cosine period: "iterations" (the whole run) or "epochs" (T_max = OPTIM.MAX_EPOCH while still
    # stepping every iteration, so the rate rises again after MAX_EPOCH steps: CLIP-SVD's schedule).
    node.COSINE_PERIOD = cosine_period
    node.ETA_MIN = 1e-6
    node.LOGIT_SCALE = 0.0  # 0 = the backbone's own (100 for OpenAI CLIP)
    # auto: bf16 autocast on CUDA (fp16 + gradient scaling where bf16 is unsupported), fp32 on CPU.
    node.PREC = "auto"
    return node


# ----- where the weights are ---------------------------------------------------------------------
@dataclass
class TowerWeight:
    """One weight matrix a method may adapt (or one q/k/v row block of a fused one)."""

    tower: str  # "image" or "text"
    layer: int | None  # block index; None for a ResNet's attention pool (no blocks)
    role: str  # q, k, v, o or mlp
    name: str  # qualified name of the owning module inside the backbone
    owner: nn.Module  # module holding the parameter
    param: str  # "weight", or "in_proj_weight" for nn.MultiheadAttention
    block: int = 0  # row block of a fused q/k/v matrix
    blocks: int = 1  # 3 for a fused q/k/v matrix

    @property
    def shape(self) -> tuple[int, int]:
        out, inp = getattr(self.owner, self.param).shape
        return out // self.blocks, inp


def _linear(module: nn.Module, *path: str) -> nn.Linear | None:
    for attr in path:
        module = getattr(module, attr, None)
    return module if isinstance(module, nn.Linear) else None


def _first_int(name: str) -> int | None:
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else None


def _module_weights(m: nn.Module, name: str) -> list[tuple]:
    """(role, owner, param, block, blocks, owner name) of the weights module `m` itself holds."""
    if isinstance(m, nn.MultiheadAttention):  # open_clip / OpenAI CLIP blocks (packed q/k/v)
        return [(r, m, "in_proj_weight", i, 3, name) for i, r in enumerate("qkv")] + [
            ("o", m.out_proj, "weight", 0, 1, f"{name}.out_proj")]
    if _linear(m, "qkv") and _linear(m, "proj"):  # timm ViT attention (fused qkv Linear)
        return [(r, m.qkv, "weight", i, 3, f"{name}.qkv") for i, r in enumerate("qkv")] + [
            ("o", m.proj, "weight", 0, 1, f"{name}.proj")]
    pairs: list[tuple[str, tuple[str, ...]]] = []
    if all(_linear(m, a) for a in ("query", "key", "value")):  # HF BERT self-attention
        pairs = [("q", ("query",)), ("k", ("key",)), ("v", ("value",))]
    elif _linear(m, "self", "query") and _linear(m, "output", "dense"):  # HF BERT attention output
        pairs = [("o", ("output", "dense"))]
    elif all(_linear(m, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj")):  # HF CLIP / SigLIP attention
        pairs = [("q", ("q_proj",)), ("k", ("k_proj",)), ("v", ("v_proj",)), ("o", ("out_proj",))]
    elif all(_linear(m, a) for a in ("q_proj", "k_proj", "v_proj", "c_proj")):  # ResNet attention pool
        pairs = [("q", ("q_proj",)), ("k", ("k_proj",)), ("v", ("v_proj",)), ("o", ("c_proj",))]
    elif _linear(m, "fc1") and _linear(m, "fc2"):  # timm MLP
        pairs = [("mlp", ("fc1",)), ("mlp", ("fc2",))]
    elif _linear(m, "c_fc") and _linear(m, "c_proj"):  # open_clip MLP
        pairs = [("mlp", ("c_fc",)), ("mlp", ("c_proj",))]
    elif _linear(m, "intermediate", "dense") and _linear(m, "output", "dense"):  # HF BERT layer MLP
        pairs = [("mlp", ("intermediate", "dense")), ("mlp", ("output", "dense"))]
    return [(role, _linear(m, *path), "weight", 0, 1, ".".join((name, *path))) for role, path in pairs]


def find_weights(backbone) -> list[TowerWeight]:
    """Every attention projection and MLP matrix of both towers, in module order.

    The layer index is the first integer in the module's name inside its tower (how the CLIP-SVD
    reference assigns layers). A ResNet image tower has no blocks; its attention pool's q/k/v/out
    projections are its only attention weights and carry layer None. A tower that has blocks keeps
    only those: a pooling head after them (SigLIP's attention-pooling probe, a cross-attention) is
    not one of the transformer's layers.
    """
    full_names = {id(m): n for n, m in backbone.named_modules()}
    found = []
    for tower, root in (("image", backbone.image_tower), ("text", backbone.text_tower)):
        weights = [TowerWeight(tower, _first_int(rel), role, owner_name, owner, param, block, blocks)
                   for rel, m in root.named_modules()
                   for role, owner, param, block, blocks, owner_name in _module_weights(m, full_names[id(m)])]
        if any(w.layer is not None for w in weights):
            weights = [w for w in weights if w.layer is not None]
        found += weights
    return found


def parse_layers(spec: str, key: str) -> set[int] | None:
    """'all' -> None (every block); '4-11' -> {4..11}; '0,1,2' -> {0, 1, 2}."""
    spec = str(spec).strip().lower()
    if spec == "all":
        return None
    try:
        if "-" in spec:
            lo, hi = (int(p) for p in spec.split("-"))
            return set(range(lo, hi + 1))
        return {int(p) for p in spec.split(",") if p.strip()}
    except ValueError as err:
        raise UserError(f"{key} must be 'all', a range like '4-11' or a list like '0,1,2'; got '{spec}'.") from err


def select_weights(backbone, mcfg, key: str) -> list[TowerWeight]:
    """The weights TOWERS / LAYERS / PARAMS of TRAINER.<key> pick, or a UserError when none."""
    towers = {"both": ("image", "text"), "image": ("image",), "text": ("text",)}.get(str(mcfg.TOWERS).lower())
    if towers is None:
        raise UserError(f"TRAINER.{key}.TOWERS must be both, image or text; got '{mcfg.TOWERS}'.")
    roles = tuple(mcfg.PARAMS)
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UserError(f"TRAINER.{key}.PARAMS must be a non-empty list of {', '.join(ROLES)}; got {list(roles)}.")
    layers = parse_layers(mcfg.LAYERS, f"TRAINER.{key}.LAYERS")
    chosen = [
        w for w in find_weights(backbone)
        if w.tower in towers and w.role in roles and (layers is None or w.layer is None or w.layer in layers)
    ]
    if not chosen:
        raise UserError(f"TRAINER.{key}: TOWERS={mcfg.TOWERS}, LAYERS={mcfg.LAYERS}, PARAMS={list(roles)} select "
                        f"no weight of {backbone.name}. Widen the selection.")
    return chosen


# ----- the learned tensors -------------------------------------------------------------------------
class LearnedTensors(nn.Module):
    """Shares exactly the tensors a method trains, so its state_dict is the whole checkpoint.

    Names are the dotted names inside the backbone with '/' for '.', e.g.
    `model/visual/trunk/blocks/0/attn/qkv/lora_q/lora_A`.
    """

    def __init__(self, named: dict[str, nn.Parameter]):
        super().__init__()
        for name, param in named.items():
            self.register_parameter(name.replace(".", "/"), param)


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


# ----- the trainer -------------------------------------------------------------------------------------
class TowerTuningTrainer(TrainerX):
    """Trains tensors inside both towers on pixels; subclasses implement `adapt`."""

    uses_frozen_image_features = False
    engine_mixed_precision = False  # forward_context and its own scaler apply TRAINER.<KEY>.PREC
    cfg_key = ""
    model_name = "adapter"  # folder of the checkpoints: <output>/<model_name>/model.pth.tar-<epoch>

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.cfg_key]

    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER[self.cfg_key]
        where = f"TRAINER.{self.cfg_key}"
        if "{}" not in mcfg.TEMPLATE:
            raise UserError(f"{where}.TEMPLATE must contain '{{}}' where the class name goes; got '{mcfg.TEMPLATE}'.")
        if mcfg.COSINE_PERIOD not in ("iterations", "epochs"):
            raise UserError(f"{where}.COSINE_PERIOD must be iterations or epochs; got '{mcfg.COSINE_PERIOD}'.")
        if cfg.OPTIM.LR_SCHEDULER != "cosine":
            raise UserError(f"{where}: these methods step a cosine schedule every iteration; set OPTIM.LR_SCHEDULER "
                            f"cosine (got '{cfg.OPTIM.LR_SCHEDULER}').")
        autocast_dtype(mcfg.PREC, torch.device("cpu"), f"{where}.PREC")  # validate now

    def adapt(self, backbone) -> dict[str, nn.Parameter]:
        """Change the backbone in place; return the tensors to train by name (all else stays frozen)."""
        raise NotImplementedError

    def build_model(self) -> None:
        cfg, mcfg = self.cfg, self.method_cfg
        self.amp_dtype = autocast_dtype(mcfg.PREC, self.device, f"TRAINER.{self.cfg_key}.PREC")
        self.learned = LearnedTensors(self.adapt(self.backbone))
        self.learned.to(self.device)
        texts = [mcfg.TEMPLATE.format(c.replace("_", " ")) for c in self.classnames]
        self.text_ids = self.backbone.trim(self.backbone.tokenize(texts)).to(self.device)
        scale = mcfg.LOGIT_SCALE if mcfg.LOGIT_SCALE > 0 else float(self.backbone.logit_scale)
        self.scale = scale
        self._classifier: torch.Tensor | None = None

        n = len(self.dm.dataset.train_x)
        self.iters_per_epoch = max(1, math.ceil(n / cfg.DATALOADER.TRAIN_X.BATCH_SIZE))
        shots = cfg.DATASET.NUM_SHOTS
        if mcfg.ITERS_PER_SHOT > 0 and shots > 0:
            self.total_iters = mcfg.ITERS_PER_SHOT * shots
        else:
            self.total_iters = cfg.OPTIM.MAX_EPOCH * self.iters_per_epoch
        if cfg.TRAIN.TRIAL_EPOCHS > 0:  # a trial run: at most that many epochs, whatever the budget's unit
            self.total_iters = min(self.total_iters, cfg.TRAIN.TRIAL_EPOCHS * self.iters_per_epoch)
        self.max_epoch = math.ceil(self.total_iters / self.iters_per_epoch)
        optim = build_optimizer(self.learned, cfg.OPTIM)
        period = self.total_iters if mcfg.COSINE_PERIOD == "iterations" else cfg.OPTIM.MAX_EPOCH
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=period, eta_min=mcfg.ETA_MIN)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.register_model(self.model_name, self.learned, optim, sched)
        count = sum(p.numel() for p in self.learned.parameters())
        self.logger.info(f"{self.cfg_key}: {count:,} learned values in {len(list(self.learned.parameters()))} "
                         f"tensors; {self.total_iters} iterations ({self.iters_per_epoch} per epoch, "
                         f"{self.max_epoch} epochs); precision {self.amp_dtype or torch.float32}")

    # ----- forward ---------------------------------------------------------------------------------
    def forward_context(self):
        """Autocast (when enabled) and one reconstruction of each parametrised weight per pass."""
        stack = contextlib.ExitStack()
        if self.amp_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.amp_dtype))
        stack.enter_context(parametrize.cached())
        return stack

    def class_text_features(self) -> torch.Tensor:
        return F.normalize(self.backbone.encode_text(self.text_ids).float(), dim=-1)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """scale * cos(image, text), in fp32 even when the towers ran under autocast."""
        with torch.autocast(self.device.type, enabled=False):
            return self.scale * F.normalize(image_features.float(), dim=-1) @ text_features.float().t()

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        """Towers in train mode while training (BERT's dropout active, as in both references);
        BatchNorm always in eval mode, so its running statistics stay the pretrained ones."""
        super().set_model_mode(mode, names)
        self.backbone.train(mode == "train")
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    # ----- training --------------------------------------------------------------------------------
    def train_batches(self):
        """Shuffled pixel batches that keep the last partial batch, as both references' loaders do."""
        cfg = self.cfg
        loader = DataLoader(
            DatasetWrapper(self.dm.dataset.train_x, self.dm.tfm_train),
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, shuffle=True, drop_last=False,
            num_workers=num_workers(cfg),
        )
        return IterationBudget(distributed.shard_loader(loader), self)  # under torchrun: this process's share

    def forward_backward(self, batch: dict) -> dict:
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.forward_context():
            text = self.class_text_features()
            logits = self.logits(self.backbone.encode_image(images), text)
            loss = F.cross_entropy(logits, labels)
        self.step_on(loss)
        return {"loss": loss.item(), "acc": (logits.argmax(1) == labels).float().mean().item() * 100}

    def step_on(self, loss: torch.Tensor) -> None:
        """One optimiser and scheduler step on `loss` (scaled for fp16; averaged over processes under torchrun)."""
        optim, sched = self._optims[self.model_name], self._scheds[self.model_name]
        self.detect_anomaly(loss)
        optim.zero_grad()
        self.scaler.scale(loss).backward()
        self.sync_gradients()  # under torchrun: the whole batch's gradient
        self.scaler.step(optim)
        self.scaler.update()
        sched.step()

    # ----- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split: str | None = None) -> dict:
        """The class prompts are encoded once by the adapted text tower, then every test batch."""
        self.set_model_mode("eval")
        with self.forward_context():
            self._classifier = self.class_text_features()
            try:
                return super().test(split)
            finally:
                self._classifier = None

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features, self._classifier)

    def load_state(self, name: str, model: nn.Module, state: dict) -> None:
        expected = set(model.state_dict())
        if set(state) != expected or any(state[k].shape != p.shape for k, p in model.state_dict().items()):
            raise UserError(
                f"The checkpoint's {name} tensors do not match this run's {self.cfg_key} settings "
                f"({len(state)} tensors saved, {len(expected)} expected). Evaluate with the settings "
                f"(TOWERS, LAYERS, PARAMS, RANK) and model the checkpoint was trained with."
            )
        model.load_state_dict(state, strict=True)


class IterationBudget:
    """The pixel loader, cut so training stops after exactly `trainer.total_iters` iterations."""

    def __init__(self, loader: DataLoader, trainer: TowerTuningTrainer):
        self.loader, self.trainer = loader, trainer

    def __len__(self) -> int:
        return self.trainer.iters_per_epoch

    def __iter__(self):
        t = self.trainer
        left = t.total_iters - t.epoch * t.iters_per_epoch
        for i, batch in enumerate(self.loader):
            if i >= left:
                return
            yield batch
