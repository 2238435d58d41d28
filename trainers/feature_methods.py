"""Shared base of the methods that fit a small head on cached frozen image features.

CLIP-Adapter, Tip-Adapter(-F), the linear probe and LP++ never touch pixels once the features
exist: each `fit()`s on the cached train views (and, where it searches hyper-parameters, on the
few-shot val split, or on the training images under a protocol without one), then ends like every
trainer here: a checkpoint of what was learned, the test-split evaluation, the reference's log
lines and results.json (`TrainerX.after_train`).

They share the reference's few-shot pipeline for these baselines: a single-template text
classifier ("a photo of a {}."), L2-normalised image features, and training views drawn with a
random resized crop of scale (0.5, 1) plus a horizontal flip (set in their configs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from engine.data import stack_labels, transform_spec
from engine.errors import UserError
from engine.trainer import TrainerX
from trainers.zeroshot import hand_crafted_classifier


def shuffled_batches(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Index batches of a shuffled pass over n items, the last one short (no drop_last), as the
    reference's few-shot loaders for these baselines; the order comes from torch's global RNG."""
    order = torch.randperm(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@contextmanager
def one_thread():
    """Run torch on one CPU thread: these fits are thousands of tiny ops (a few hundred rows each),
    where synchronising a thread pool costs more than the arithmetic, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FeatureMethod(TrainerX):
    """A method that fits on cached features instead of running the engine's batch loop."""

    def build_model(self) -> None:
        # "a photo of a {}.": the zero-shot classifier's text features (cached beside the image features)
        self.text_weights = hand_crafted_classifier(
            self.backbone, self.classnames, cache_dir=self.feature_cache.dir
        ).to(self.device)
        self.build_head()

    def build_head(self) -> None:
        raise NotImplementedError

    def fit(self) -> None:
        """Learn the registered modules from `train_views()` / `val_features()`."""
        raise NotImplementedError

    # ----- cached features ------------------------------------------------------------------------
    def train_views(self, views: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(views, N, D) unit features of the few-shot train split under the training augmentation."""
        items = self.dm.dataset.train_x
        feats = self.feature_cache.get(items, self.dm.tfm_train, transform_spec(self.cfg, True),
                                       views=views, desc="train views")
        return F.normalize(feats, dim=-1).to(self.device), stack_labels(items).to(self.device)

    def val_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, D) unit features of the few-shot val split (min(K, 4) per class) under the test transform;
        without one (DATASET.FEWSHOT_PROTOCOL imbalanced) the training images (`validation_items`)."""
        items = self.validation_items()
        if not items:
            raise UserError(
                f"{self.cfg.TRAINER.NAME} chooses its hyper-parameters on the val split, but the val split of "
                f"{self.cfg.DATASET.NAME} is empty. Give the split file a non-empty 'val' list."
            )
        feats = self.feature_cache.get(items, self.dm.tfm_test, transform_spec(self.cfg, False), desc="val set")[0]
        return F.normalize(feats, dim=-1).to(self.device), stack_labels(items).to(self.device)

    def epoch_views(self, epochs: int) -> int:
        """Views to cache for `epochs` epochs: one per epoch unless FEATURES.TRAIN_VIEWS caps it."""
        return self.cfg.FEATURES.TRAIN_VIEWS or epochs

    def train_view_count(self) -> int:
        """Views of each training image this method reads: one augmented pass unless it trains epochs."""
        return 1

    def load_state(self, name: str, model, state: dict) -> None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise UserError(
                f"The '{name}' checkpoint does not fit this run: it was made with another backbone, dataset, "
                f"class subset or number of shots ({str(err).splitlines()[-1].strip().rstrip('.')})."
            ) from err

    # ----- loop -------------------------------------------------------------------------------------
    def train(self) -> dict | None:
        self.time_start = time.time()
        with one_thread():
            self.fit()
        self.epoch = self.max_epoch - 1  # the checkpoint records epoch + 1
        self.save_model(self.max_epoch, self.output_dir)
        return self.after_train()

    @staticmethod
    def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
        return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()
