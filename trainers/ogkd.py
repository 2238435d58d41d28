"""OGKD (Tran and Shen, arXiv 2606.04922): BiomedCoOp's prompt learner distilled through a class graph.

The LLM prompt ensemble gives one prototype per class (mean of the unit prompt features, renormalised);
the class graph is W = softmax(ALPHA * P P^T) over rows, built once. The teacher is BiomedCoOp's
selected-prompt teacher; its log-probabilities are smoothed along W with strength GAMMA,
log q~ = (1 - GAMMA) log q + GAMMA (log q) W, and the student is pulled toward q~ twice:

- GAD at the global image feature: KL(q~ || p) summed and divided by B x C;
- LGD at the patch tokens: on the TOP_K_RATIO share of patches whose teacher logit for the true class
  is largest in magnitude, the KL term of the true-class channel alone, divided by B x K.

Loss = CE + LAMBDA_SCCM * MSE(text, prototypes) + LAMBDA_GAD * GAD + LAMBDA_LGD * LGD, as the
authors' code computes it (docs/ogkd.md lists the settings and where they come from). Patch tokens are
frozen features, cached per training view beside the global ones; with LAMBDA_LGD 0 they are never
computed. A zero MAD in the prompt selection, which made the reference's teacher NaN, is handled as in
BiomedCoOp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backbones.base import Backbone
from engine.config import prompt_cfg, register_method_cfg
from engine.data import stack_labels, transform_spec
from engine.errors import UserError
from engine.features import PatchViews
from engine.prompts import load_ensemble
from engine.registry import TRAINER_REGISTRY
from engine.trainer import FeatureBatches
from trainers.biomedcoop import sccm_loss
from trainers.coop import PromptTrainer
from trainers.prompt_bank import encode_prompt_bank, prompt_scores, select_prompts


@register_method_cfg("OGKD")
def ogkd_cfg():
    # The authors' extend_cfg defaults; the per-dataset configs override most of them.
    node = prompt_cfg("a photo of a")
    node.N_PROMPTS = 50
    node.TAU = 1.5
    node.LAMBDA_SCCM = 1.0
    node.LAMBDA_GAD = 1.0
    node.LAMBDA_LGD = 0.0
    node.GAMMA = 0.3
    node.ALPHA = 4.0
    node.TOP_K_RATIO = 0.3
    return node


def class_graph(prototypes: torch.Tensor, alpha: float) -> torch.Tensor:
    """(C, C) row-stochastic graph softmax(alpha * cos(p_i, p_j)) over j."""
    unit = F.normalize(prototypes.float(), dim=-1)
    return torch.softmax(alpha * unit @ unit.t(), dim=-1)


def smoothed_teacher(teacher_logits: torch.Tensor, graph: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - gamma) log q + gamma (log q) W over the last axis: the teacher's log-probabilities
    diffused along the graph. Kept unnormalised, as the authors do."""
    log_q = F.log_softmax(teacher_logits.detach(), dim=-1)
    return (1.0 - gamma) * log_q + gamma * log_q @ graph


def _kl_sum(log_student: torch.Tensor, log_target: torch.Tensor) -> torch.Tensor:
    """sum exp(t) (t - s): torch's kl_div with a log target, summed."""
    return F.kl_div(log_student, log_target, reduction="sum", log_target=True)


def gad_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, graph: torch.Tensor,
             gamma: float) -> torch.Tensor:
    """Global geometry-aware distillation on (B, C) logits, divided by B x C."""
    log_p = F.log_softmax(student_logits, dim=-1)
    return _kl_sum(log_p, smoothed_teacher(teacher_logits, graph, gamma)) / log_p.numel()


def lgd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, graph: torch.Tensor,
             labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Label-guided distillation on (B, K, C) patch logits: only the true class's channel, divided by B x K."""
    index = labels.view(-1, 1, 1).expand(-1, student_logits.shape[1], 1)
    log_p = F.log_softmax(student_logits, dim=-1).gather(-1, index).squeeze(-1)
    log_q = smoothed_teacher(teacher_logits, graph, gamma).gather(-1, index).squeeze(-1)
    return _kl_sum(log_p, log_q) / log_p.numel()


def top_patches(patch_teacher: torch.Tensor, labels: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, K) indices of the patches whose teacher logit for the true class is largest in magnitude,
    K = max(1, round(P * ratio))."""
    batch, patches, _ = patch_teacher.shape
    k = max(1, int(round(patches * ratio)))
    true_class = patch_teacher.gather(-1, labels.view(-1, 1, 1).expand(batch, patches, 1)).squeeze(-1)
    return true_class.abs().topk(k, dim=1).indices


class PatchFeatureBatches(FeatureBatches):
    """FeatureBatches that also hand out each item's cached patch tokens: the epoch's view is read from
    disk once (engine.features.PatchViews), each batch converted to fp32."""

    def __init__(self, feats: torch.Tensor, patches: PatchViews, labels: torch.Tensor, batch_size: int):
        super().__init__(feats, labels, batch_size)
        self.patches = patches

    def __iter__(self):
        for batch in super().__iter__():
            batch["patches"] = self.patches[self.view][batch["index"]].float()
            yield batch


@TRAINER_REGISTRY.register()
class OGKD(PromptTrainer):
    cfg_key = "OGKD"

    def check_cfg(self, cfg) -> None:
        mcfg = cfg.TRAINER.OGKD
        if not 0.0 <= mcfg.GAMMA <= 1.0:
            raise UserError(f"TRAINER.OGKD.GAMMA must lie in [0, 1] (the share of graph smoothing); got {mcfg.GAMMA}.")
        if not 0.0 < mcfg.TOP_K_RATIO <= 1.0:
            raise UserError(f"TRAINER.OGKD.TOP_K_RATIO must lie in (0, 1] (the share of patches LGD reads); "
                            f"got {mcfg.TOP_K_RATIO}.")

    @property
    def needs_patches(self) -> bool:
        return self.method_cfg.LAMBDA_LGD != 0

    def build_model(self) -> None:
        if self.needs_patches and type(self.backbone).encode_image_tokens is Backbone.encode_image_tokens:
            raise UserError(f"OGKD's LGD term reads patch tokens, which {self.backbone.name} does not give (its image "
                            f"tower is not a ViT). Use a ViT backbone, or train without LGD: add "
                            f"`TRAINER.OGKD.LAMBDA_LGD 0` (GAD and SCCM only).")
        super().build_model()
        mcfg = self.method_cfg
        ensemble = load_ensemble(self.cfg.DATASET.NAME, self.classnames, mcfg.N_PROMPTS)
        self.prompt_bank = encode_prompt_bank(self.backbone, ensemble, self.feature_cache.dir)
        self.ensemble_mean = F.normalize(self.prompt_bank.mean(dim=1), dim=-1)
        # Built once from the classes this run trains on (the base classes in base-to-novel).
        self.graph = class_graph(self.ensemble_mean, mcfg.ALPHA)

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        super().set_model_mode(mode, names)
        # As in BiomedCoOp, the authors train with the whole model in train mode: text dropout is active.
        self.backbone.text_train(mode == "train")

    def train_batches(self):
        if not (self.needs_patches and self.use_feature_cache):
            return super().train_batches()
        items = self.dm.dataset.train_x
        feats, patches = self.feature_cache.get_with_patches(
            items, self.dm.tfm_train, transform_spec(self.cfg, True), views=self.train_view_count(),
            desc="train views with patch tokens",
        )
        return PatchFeatureBatches(feats, patches, stack_labels(items), self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)

    def batch_tokens(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(global features, patch tokens or None) of a batch, from the cache or from pixels."""
        if "feat" in batch:
            patches = batch.get("patches")
            return batch["feat"].to(self.device), None if patches is None else patches.to(self.device)
        if not self.needs_patches:
            return self.image_features(batch), None
        with torch.no_grad():
            return self.backbone.encode_image_tokens(batch["img"].to(self.device))

    def teacher_text(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(C, D) unit text features of the prompts BiomedCoOp's outlier test keeps on this batch."""
        keep = select_prompts(prompt_scores(image, self.prompt_bank, scale), self.method_cfg.TAU)
        return F.normalize(self.prompt_bank[:, keep].mean(dim=1), dim=-1)

    def result_fields(self) -> dict:
        return {**super().result_fields(), "n_prompts": int(self.prompt_bank.shape[1])}

    def forward_backward(self, batch: dict) -> dict:
        mcfg = self.method_cfg
        features, patches = self.batch_tokens(batch)
        label = batch["label"].to(self.device)
        logits, text = self.student_logits(features)
        scale = self.backbone.logit_scale.detach()
        image = F.normalize(features, dim=-1)
        with torch.no_grad():
            teacher_text = self.teacher_text(image, scale)
            teacher = scale * image @ teacher_text.t()
        loss_ce = F.cross_entropy(logits, label)
        loss_sccm = mcfg.LAMBDA_SCCM * sccm_loss(text, self.ensemble_mean)
        loss_gad = mcfg.LAMBDA_GAD * gad_loss(logits, teacher, self.graph, mcfg.GAMMA)
        loss = loss_ce + loss_sccm + loss_gad
        summary_extra = {"loss_ce": loss_ce.item(), "loss_sccm": loss_sccm.item(), "loss_gad": loss_gad.item()}
        if patches is not None:
            tokens = F.normalize(patches.float(), dim=-1)
            with torch.no_grad():
                patch_teacher = scale * tokens @ teacher_text.t()
                index = top_patches(patch_teacher, label, mcfg.TOP_K_RATIO)
            # Only the K kept patches are scored by the student: same values, less work.
            kept = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            patch_student = scale * kept @ text.t()
            kept_teacher = patch_teacher.gather(1, index.unsqueeze(-1).expand(-1, -1, patch_teacher.shape[-1]))
            loss_lgd = mcfg.LAMBDA_LGD * lgd_loss(patch_student, kept_teacher, self.graph, label, mcfg.GAMMA)
            loss = loss + loss_lgd
            summary_extra["loss_lgd"] = loss_lgd.item()
        summary = self.finish_step(loss, logits, label)
        summary.update(summary_extra)
        return summary
