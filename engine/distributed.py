"""Several processes training one run (torchrun): who writes, how a batch is shared, gradients averaged.

`torchrun --nproc_per_node N train.py ...` starts N copies of train.py with RANK, WORLD_SIZE and
LOCAL_RANK set. Each builds the same run (same seed, so the same global order of the training images),
takes its share of every global batch (items rank, rank+N, ... of it) and, before each optimiser step,
the gradients of the learned tensors are averaged over the processes, each weighted by its share of the
batch: the step is the one a single process takes on the whole batch, up to float summation order.
This is DistributedDataParallel's arithmetic done explicitly, because these methods run their towers
through hooks and several calls per step rather than one module's forward. Rank 0 alone writes:
log.txt, checkpoints, resume state, curves, results.json and the run lock.

Only methods that read pixels (TrainerX.frozen_image_path False: CLIP-LoRA, CLIP-SVD, EviSteer, MaPLe,
BiomedDPT with learned visual prompts) run this way; a method that trains on cached features refuses
(its step is milliseconds).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from engine.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    return world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    return rank() == 0


def init(use_cuda: bool) -> None:
    """Join the process group torchrun set up: nccl with one GPU per process, gloo on CPUs."""
    if not is_distributed() or dist.is_initialized():
        return
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (it may write shared files: the few-shot split), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def any_rank(flag: bool) -> bool:
    """True on every process when it is true on any (a decision all must take together)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)  # nccl reduces CUDA tensors only
    return bool(value.item())


def check_method(trainer_cls, cfg, method: str) -> None:
    """One line for a method this mode does not run: those training on cached image features."""
    if is_distributed() and trainer_cls.frozen_image_path(cfg) and cfg.FEATURES.ENABLED:
        raise UserError(f"{method} trains on cached image features (milliseconds per step): run it as one process "
                        "(python train.py, or NPROC=1 for the scripts), not under torchrun. Several processes "
                        "are for the methods that read pixels: CLIP-LoRA, CLIP-SVD, EviSteer, MaPLe, and BiomedDPT "
                        "with TRAINER.BIOMEDDPT.VISUAL_LEARNED True.")


class ShardedBatchSampler:
    """Each process's share of every batch of a batch sampler: items rank, rank + N, ... of it."""

    def __init__(self, batch_sampler, num_items: int):
        self.batch_sampler = batch_sampler
        size, n = batch_sampler.batch_size, world_size()
        last = num_items % size
        if not batch_sampler.drop_last and 0 < last < n:
            raise UserError(f"The last training batch holds {last} image(s), fewer than the {n} processes sharing "
                            f"it: use another --nproc_per_node (NPROC) or DATALOADER.TRAIN_X.BATCH_SIZE "
                            f"(now {size}, {num_items} training images).")
        if size < n:
            raise UserError(f"DATALOADER.TRAIN_X.BATCH_SIZE {size} is smaller than the {n} processes sharing it.")

    def __iter__(self):
        r, n = rank(), world_size()
        for batch in self.batch_sampler:
            yield list(batch)[r::n]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def shard_loader(loader: DataLoader) -> DataLoader:
    """The same loader (dataset, global order, batch size) giving this process its share of each batch."""
    if not is_distributed():
        return loader
    return DataLoader(loader.dataset, batch_sampler=ShardedBatchSampler(loader.batch_sampler, len(loader.dataset)),
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn)


def average_gradients(params, local_items: int) -> None:
    """Replace each gradient with the batch-weighted mean over the processes (in place, one all-reduce)."""
    if not dist.is_initialized():
        return
    params = [p for p in params if p.requires_grad]
    count = torch.tensor([float(local_items)], device=params[0].device if params else "cpu")
    dist.all_reduce(count)
    share = local_items / count.item()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n
