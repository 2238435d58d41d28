"""CoOp (Zhou et al., IJCV 2022): four learned context vectors, cross-entropy only."""

from __future__ import annotations

import torch.nn.functional as F

from engine.config import prompt_cfg, register_method_cfg
from engine.registry import TRAINER_REGISTRY
from engine.trainer import TrainerX
from trainers.prompt_learner import PromptLearner

register_method_cfg("COOP")(prompt_cfg)


class PromptTrainer(TrainerX):
    """Shared by prompt-learning methods: one PromptLearner registered as "prompt_learner"."""

    cfg_key = "COOP"
    prompt_learner_class = PromptLearner

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.cfg_key]

    def build_model(self) -> None:
        mcfg = self.method_cfg
        self.prompt_learner = self.prompt_learner_class(
            self.backbone, self.classnames, n_ctx=mcfg.N_CTX, ctx_init=mcfg.CTX_INIT
        ).to(self.device)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)

    def student_logits(self, image_features):
        """scale * cos(image, learned text), plus the normalised text features."""
        text = F.normalize(self.prompt_learner.text_features(), dim=-1)
        image = F.normalize(image_features, dim=-1)
        return self.backbone.logit_scale * image @ text.t(), text

    def model_inference(self, features):
        return self.student_logits(features)[0]

    def finish_step(self, loss, logits, label) -> dict:
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == label).float().mean().item() * 100}


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    def forward_backward(self, batch: dict) -> dict:
        features, label = self.parse_batch_train(batch)
        logits, _ = self.student_logits(features)
        return self.finish_step(F.cross_entropy(logits, label), logits, label)
