"""KgCoOp (Yao et al., CVPR 2023): CoOp kept close to the hand-crafted prompt's knowledge.

Loss = CE + W * (1 - mean over classes of cos(t_c, w_c)), where t are the learned prompts' text
features and w the frozen text features of "a photo of a {class}.". W is set per dataset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.config import prompt_cfg, register_method_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.coop import PromptTrainer
from trainers.zeroshot import hand_crafted_classifier


@register_method_cfg("KGCOOP")
def kgcoop_cfg():
    node = prompt_cfg("a photo of a")
    node.W = 1.0
    return node


def knowledge_distance(text: torch.Tensor, hand_crafted: torch.Tensor) -> torch.Tensor:
    """1 - mean_c cos(t_c, w_c) for (C, D) rows (normalised here, so raw features are fine)."""
    return 1.0 - F.cosine_similarity(text, hand_crafted, dim=-1).mean()


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    cfg_key = "KGCOOP"

    def build_model(self) -> None:
        super().build_model()
        self.hand_crafted = hand_crafted_classifier(
            self.backbone, self.classnames, cache_dir=self.feature_cache.dir
        ).to(self.device)

    def forward_backward(self, batch: dict) -> dict:
        features, label = self.parse_batch_train(batch)
        logits, text = self.student_logits(features)
        loss_ce = F.cross_entropy(logits, label)
        loss_kg = self.method_cfg.W * knowledge_distance(text, self.hand_crafted)
        summary = self.finish_step(loss_ce + loss_kg, logits, label)
        summary.update(loss_ce=loss_ce.item(), loss_kg=loss_kg.item())
        return summary
