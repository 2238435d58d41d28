"""Zero-shot classification with a frozen model: no training, evaluation only.

`ZeroShot` classifies with one hand-written template per class ("a photo of a {}." by default).
`ZeroShotEnsemble` ("zero-shot BiomedCLIP++" in the BiomedCoOp paper) uses the LLM prompt ensemble
of clip_prompts/: each class's text feature is the mean of its normalised sentence features,
normalised again, the same construction as BiomedCoOp's ensemble mean.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine.config import register_method_cfg
from engine.prompts import load_ensemble
from engine.registry import TRAINER_REGISTRY
from engine.text_cache import encode_prompts_cached
from engine.trainer import TrainerX
from trainers.prompt_bank import encode_prompt_bank

HAND_CRAFTED_TEMPLATE = "a photo of a {}."


@register_method_cfg("ZEROSHOT")
def zeroshot_cfg() -> CN:
    node = CN()
    node.TEMPLATE = HAND_CRAFTED_TEMPLATE  # ZeroShot: "{}" is replaced by the class name
    node.N_PROMPTS = 50  # ZeroShotEnsemble: sentences per class taken from clip_prompts/
    return node


def class_prompts(template: str, classnames: list[str]) -> list[str]:
    """The template filled with each class name (underscores read as spaces, as in every prompt learner)."""
    return [template.format(c.replace("_", " ")) for c in classnames]


def hand_crafted_classifier(
    backbone, classnames: list[str], template: str = HAND_CRAFTED_TEMPLATE, cache_dir: str | None = None,
) -> torch.Tensor:
    """(C, D) unit text features of one template per class, from the frozen text tower in eval mode
    (and kept in `cache_dir` for the next run)."""
    return F.normalize(encode_prompts_cached(backbone, class_prompts(template, classnames), cache_dir), dim=-1)


def ensemble_classifier(bank: torch.Tensor) -> torch.Tensor:
    """(C, D): mean over a class's normalised sentence features (bank is (C, N, D), unit rows), renormalised."""
    return F.normalize(F.normalize(bank, dim=-1).mean(dim=1), dim=-1)


class ZeroShotTrainer(TrainerX):
    """A frozen text classifier over frozen image features; `train()` only evaluates."""

    def build_classifier(self) -> torch.Tensor:
        raise NotImplementedError

    def build_model(self) -> None:
        self.max_epoch = 0  # recorded in results.json: nothing is trained
        self.classifier = self.build_classifier().to(self.device)

    def model_inference(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.classifier.t()

    def train(self) -> dict:
        start = time.time()
        report = self.test()
        self.write_results(report, elapsed_s=time.time() - start, eval_only=True)
        return report


@TRAINER_REGISTRY.register()
class ZeroShot(ZeroShotTrainer):
    def build_classifier(self) -> torch.Tensor:
        template = self.cfg.TRAINER.ZEROSHOT.TEMPLATE
        self.logger.info(f"Zero-shot classifier from the template '{template}'")
        return hand_crafted_classifier(self.backbone, self.classnames, template, self.feature_cache.dir)


@TRAINER_REGISTRY.register()
class ZeroShotEnsemble(ZeroShotTrainer):
    def build_classifier(self) -> torch.Tensor:
        n_prompts = self.cfg.TRAINER.ZEROSHOT.N_PROMPTS
        ensemble = load_ensemble(self.cfg.DATASET.NAME, self.classnames, n_prompts,
                                 n_prompts_key="TRAINER.ZEROSHOT.N_PROMPTS")
        self.logger.info(f"Zero-shot classifier from {n_prompts} ensemble sentences per class")
        return ensemble_classifier(encode_prompt_bank(self.backbone, ensemble, self.feature_cache.dir))
