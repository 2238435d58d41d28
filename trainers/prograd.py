"""ProGrad (Zhu et al., ICCV 2023): prompt gradients that never fight the zero-shot model.

Two losses on the same batch: cross-entropy, and a distillation loss toward the frozen zero-shot
model ("a photo of a {class}." prompts), soft-target cross-entropy at temperature T times T^2. When
the two gradients point apart (negative cosine), the cross-entropy gradient loses its component
along the distillation gradient before the SGD step; otherwise it is used as it is.

TRAINER.PROGRAD.TEACHER: "zeroshot" (default) is the method as published. "self" mimics the
reference's BiomedCLIP trainer, which used the student itself as the teacher (that is what produced
the reference's BiomedCLIP ProGrad numbers). There the teacher came from a second forward pass, so
the distillation gradient was rounding noise of arbitrary direction rather than zero, and the
projection still fired on most steps (measured against the reference's own code: 9 of 13 tried
contexts, removing 5-17% of the cross-entropy gradient). Here "self" reuses the student's logits,
detached: the distillation gradient is exactly zero and a step equals CoOp's (tested), i.e. the
noise-free version of that run, not a bit-exact copy of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.config import prompt_cfg, register_method_cfg
from engine.errors import UserError
from engine.registry import TRAINER_REGISTRY
from trainers.coop import PromptTrainer
from trainers.zeroshot import hand_crafted_classifier

TEACHERS = ("zeroshot", "self")


@register_method_cfg("PROGRAD")
def prograd_cfg():
    node = prompt_cfg("a photo of a")
    node.GM = False  # kept for config compatibility with the reference; unused
    node.NAME = ""  # ditto ("prograd" in its configs)
    node.ALPHA = 0.0  # ditto
    node.T = 1.0  # distillation temperature
    node.LAMBDA = 1.0  # share of the conflicting component removed
    node.TEACHER = "zeroshot"
    return node


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean_b sum_c -softmax(teacher/T) * log_softmax(student/T) * T^2 (KL up to a constant)."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(dim=1).mean() * temperature**2


def project_conflicting(grad: torch.Tensor, guide: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """`grad` minus lambda times its component along `guide` when the two conflict (cosine < 0).

    A zero or non-finite guide (the reference's self-teacher) leaves `grad` unchanged, which is what
    the reference's NaN comparison amounted to.
    """
    guide_norm, grad_norm = torch.linalg.norm(guide), torch.linalg.norm(grad)
    if not (torch.isfinite(guide_norm) and guide_norm > 0 and grad_norm > 0):
        return grad
    unit = guide / guide_norm
    along = torch.dot(grad.flatten(), unit.flatten())
    if along >= 0:
        return grad
    return grad - lambda_ * along * unit


@TRAINER_REGISTRY.register()
class ProGrad(PromptTrainer):
    cfg_key = "PROGRAD"

    def check_cfg(self, cfg) -> None:
        if cfg.TRAINER.PROGRAD.TEACHER not in TEACHERS:
            raise UserError(f"TRAINER.PROGRAD.TEACHER must be one of {', '.join(TEACHERS)}; "
                            f"got '{cfg.TRAINER.PROGRAD.TEACHER}'.")

    def build_model(self) -> None:
        super().build_model()
        self.hand_crafted = hand_crafted_classifier(
            self.backbone, self.classnames, cache_dir=self.feature_cache.dir
        ).to(self.device)

    def teacher_logits(self, features: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        if self.method_cfg.TEACHER == "self":
            return student.detach()
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.hand_crafted.t()

    def prograd_backward_and_update(self, loss_a: torch.Tensor, loss_b: torch.Tensor, lambda_: float) -> None:
        """Step on loss_a's gradient, with its component against loss_b's gradient removed per tensor."""
        params = [p for name in self.get_model_names() for p in self._models[name].parameters() if p.requires_grad]
        self.detect_anomaly(loss_b)
        guides = torch.autograd.grad(loss_b, params, retain_graph=True, allow_unused=True)
        self.model_zero_grad()
        self.model_backward(loss_a)
        for p, guide in zip(params, guides):
            if p.grad is not None and guide is not None:
                p.grad = project_conflicting(p.grad, guide, lambda_)
        self.model_update()

    def forward_backward(self, batch: dict) -> dict:
        mcfg = self.method_cfg
        features, label = self.parse_batch_train(batch)
        logits, _ = self.student_logits(features)
        with torch.no_grad():
            teacher = self.teacher_logits(features, logits)
        loss_xe = F.cross_entropy(logits, label)
        loss_kl = soft_target_loss(logits, teacher, mcfg.T)
        self.prograd_backward_and_update(loss_xe, loss_kl, mcfg.LAMBDA)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss_xe.item(), "loss_kl": loss_kl.item(),
                "acc": (logits.argmax(1) == label).float().mean().item() * 100}
