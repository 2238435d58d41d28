"""FeatureCache: frozen image-tower features computed once per (backbone, image, transform, view).

Training augmentation stays faithful: view e of an image is one random resized crop drawn with a
seed derived from (image, e), and epoch e of training reads view e. With one view per epoch this is
the reference's augmentation distribution (an independent crop per image per epoch) at the cost of
one image-tower pass per crop, paid once and then shared by every method, seed and shot count that
sees the same image. Test features are computed once per backbone and dataset.

Extraction runs at the machine's speed: inference mode, batches of DATALOADER.TEST.BATCH_SIZE
decoded by up to min(cores, DATALOADER.NUM_WORKERS) loader workers that prefetch the next batches
(none on a CPU with CPU_IN_PROCESS_CORES cores or fewer, where the tower's threads take every core),
pinned memory on CUDA, and FEATURES.PRECISION (auto = bf16/fp16 autocast on CUDA, fp32 elsewhere)
for the frozen tower. Features are stored as FEATURES.STORE_DTYPE and returned as fp32. A precision or
storage other than fp32 is part of the file name, so caches of different precisions never mix.

Patch tokens (the image tower's per-patch outputs in the joint space, for methods such as OGKD) are an
opt-in second kind of entry: `get_with_patches` computes them in the same pass as the global feature and
keeps them in their own files (`...-patches-v<view>.pt`), so a run that calls only `get` never computes,
reads or writes them.

A method whose frozen image path is not the plain tower (BiomedDPT's zero prompts inside every image
block) gives the cache a FeatureVariant: its settings join the file names' digest, so its features and
the plain tower's never share an entry, and its own forward encodes the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from engine.data import Datum, read_image
from engine.precision import autocast, autocast_dtype, precision_name, store_dtype
from engine.threads import ExtractionThreads, torch_threads
from engine.utils import eval_mode, file_lock, get_logger, torch_save_atomic, writable_cache_dir

PATCHES = "patches"  # the kind (and file-name part) of patch-token entries


# Image views of patch tokens extracted per step of get_with_patches (about 0.8 GB for BiomedCLIP in fp32).
PATCH_CHUNK = 2048
# Images the tower takes at once on a CPU: a whole loader batch of 100 through BiomedCLIP's ViT raised a
# run's peak from 1.9 GB (model built) to 2.69 GB; 25 at a time, to 2.16 GB (benchmarks/run_all.py, section
# 6, 2 busy cores). A GPU takes the whole batch: its speed needs it, and GPU memory is not the process's.
CPU_TOWER_CHUNK = 25
# Torch threads for decoding and cropping in this process (loader workers use one each already).
DECODE_THREADS = 1
# On a CPU with at most this many cores, extraction decodes in its own process (no loader workers).
CPU_IN_PROCESS_CORES = 2


@dataclass(frozen=True)
class FeatureVariant:
    """A method's own frozen image path, cached apart from the plain tower's features.

    name: a readable part of the file names; key: the settings by which its features differ from
    `encode_image`'s (JSON-able, part of the digest: two settings never share a file); encode: images ->
    global features through that path, with nothing in it that trains."""

    name: str
    key: dict
    encode: Callable[[torch.Tensor], torch.Tensor]


class PatchViews:
    """Cached patch tokens of N images over V views, read one view at a time: `patches[v]` is (N, P, D)
    in the store dtype, in the order of the items given to get_with_patches."""

    def __init__(self, paths: list[str], keys: list[str]):
        self.paths, self.keys = paths, keys
        self._loaded: int | None = None
        self._tensor: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, view: int) -> torch.Tensor:
        if view != self._loaded:
            self._tensor = None  # release the previous view before reading the next
            table = FeatureCache._read(self.paths[view])["features"]
            self._tensor, self._loaded = torch.stack([table[k] for k in self.keys]), view
        return self._tensor


def _key(item: Datum) -> str:
    return item.relpath or item.impath


def view_seed(key: str, view: int, salt: str = "") -> int:
    """Seed of the crop of (image, view). With FEATURES.VIEW_SEED shared (no salt) it is the same in
    every run, so one cache serves every seed and K; `run` salts it with the run's seed."""
    return zlib.crc32(f"{key}|{view}{'|' + salt if salt else ''}".encode())


class _ViewDataset(Dataset):
    def __init__(self, jobs: list[tuple[Datum, int]], transform, seeded: bool | str):
        # seeded: False for deterministic transforms, True for shared crops, or a salt string
        self.jobs, self.transform, self.seeded = jobs, transform, seeded

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, idx: int):
        item, view = self.jobs[idx]
        img = read_image(item.impath)
        if not self.seeded:
            return self.transform(img)
        # The crop of (image, view) is the same in every run, process and worker.
        with torch.random.fork_rng(devices=[]):
            salt = self.seeded if isinstance(self.seeded, str) else ""
            torch.manual_seed(view_seed(item.relpath or item.impath, view, salt))
            return self.transform(img)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def file_stamp(path: str) -> tuple[int, int]:
    """(size, modification time in ns): changes whenever the file is rewritten in place."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def feature_cache_dir(cfg, dataset_dir: str) -> str:
    """FEATURES.CACHE_DIR, else <dataset dir>/feature_cache, else (read-only data) a per-user folder."""
    if cfg.FEATURES.CACHE_DIR:
        return cfg.FEATURES.CACHE_DIR
    return writable_cache_dir(os.path.join(dataset_dir, "feature_cache"), dataset_dir, "feature_cache",
                              "FEATURES.CACHE_DIR")


class FeatureCache:
    """Disk-backed cache: <dir>/<backbone key>/<transform key>-v<view>.pt.

    Each file holds {"features": {relpath: feature}, "stamps": {relpath: (size, mtime_ns)}}: an entry
    is used only while its image file still has the size and modification time it had when it was
    encoded, so a dataset regenerated in place is encoded again, not silently reused.
    """

    def __init__(self, cache_dir: str, backbone, device: torch.device, batch_size: int = 64, workers: int = 0,
                 precision: str = "fp32", store: str = "fp32", threads="auto",
                 variant: FeatureVariant | None = None):
        self.dir = os.path.join(cache_dir, backbone.cache_key())
        self.variant = variant
        self.backbone = backbone
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.workers = max(0, min(workers, available_cores()))
        self.amp_dtype = autocast_dtype(precision, self.device, "FEATURES.PRECISION")
        self.store_dtype = store_dtype(store)
        self.threads = threads  # TRAIN.THREADS: auto measures the fastest count on the first batches
        self._memory: dict[str, dict[str, dict]] = {}

    def forget(self) -> None:
        """Drop the tables held in memory (a run that has stacked what it needs keeps no second copy)."""
        self._memory.clear()

    def precision_tag(self) -> str:
        """"" for fp32 features stored in fp32 (the original file names), else e.g. "-bf16-fp16"."""
        compute = precision_name(self.amp_dtype)
        stored = "fp16" if self.store_dtype == torch.float16 else "fp32"
        return "" if compute == stored == "fp32" else f"-{compute}-{stored}"

    @staticmethod
    def spec_key(spec: dict) -> str:
        kind = "train" if spec.get("train") else "test"
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        return f"{kind}-{digest}"

    def _path(self, spec: dict, view: int, kind: str = "") -> str:
        suffix = f"-{kind}" if kind else ""
        if self.variant is not None:  # another image path: its settings in the digest, its name readable
            spec, suffix = {**spec, "variant": self.variant.key}, f"-{self.variant.name}{suffix}"
        return os.path.join(self.dir, f"{self.spec_key(spec)}{self.precision_tag()}{suffix}-v{view}.pt")

    @staticmethod
    def _read(path: str) -> dict[str, dict]:
        table = torch.load(path, map_location="cpu") if os.path.isfile(path) else {}
        if "features" not in table or "stamps" not in table:  # empty, or written before entries had stamps
            return {"features": {}, "stamps": {}}
        return table

    def _table(self, path: str) -> dict[str, dict]:
        if path not in self._memory:
            self._memory[path] = self._read(path)
        return self._memory[path]

    def get(
        self, items: Sequence[Datum], transform, spec: dict, views: int = 1, desc: str = "features"
    ) -> torch.Tensor:
        """Features of `items` under `transform`, shape (views, N, D); missing or stale ones are computed and saved."""
        return self._get(items, transform, spec, range(views), desc, ("",))

    def get_with_patches(
        self, items: Sequence[Datum], transform, spec: dict, views: int = 1, desc: str = "features"
    ) -> tuple[torch.Tensor, PatchViews]:
        """Global features (views, N, D) in fp32, and the patch tokens as PatchViews: (N, P, D) per view in
        the store dtype, read from disk one view at a time (every view of a 16-shot run together takes
        gigabytes, one view megabytes). Missing ones are encoded with their global features, a few views
        at a time, so extraction holds at most about PATCH_CHUNK image views of patch tokens in memory."""
        if self.variant is not None:
            raise ValueError(f"feature variant {self.variant.name} gives global features only, no patch tokens")
        step = max(1, PATCH_CHUNK // max(1, len(items)))
        for start in range(0, views, step):
            chunk = range(start, min(views, start + step))
            self._get(items, transform, spec, chunk, desc, ("", PATCHES), stack=False)
            for v in chunk:
                self._memory.pop(self._path(spec, v, PATCHES), None)
        feats = self.get(items, transform, spec, views, desc)  # all in memory now: nothing is encoded
        return feats, PatchViews([self._path(spec, v, PATCHES) for v in range(views)], [_key(d) for d in items])

    def _get(self, items, transform, spec: dict, view_ids: Sequence[int], desc: str, kinds: tuple[str, ...],
             stack: bool = True) -> torch.Tensor | None:
        """Entries of every kind in `kinds` for `view_ids`: an image view missing or stale in any of them is
        encoded once and written to all. Returns the first kind's (len(view_ids), N, ...) tensor in fp32
        (or nothing, with stack=False)."""
        seeded = (spec.get("view_salt") or True) if spec.get("train") else False
        paths = {k: {v: self._path(spec, v, k) for v in view_ids} for k in kinds}
        tables = {k: {v: self._table(p) for v, p in paths[k].items()} for k in kinds}
        stamps = {_key(d): file_stamp(d.impath) for d in items}
        jobs, refreshed = [], 0
        for v in view_ids:
            for d in items:
                key = _key(d)
                entries = [tables[k][v] for k in kinds]
                if all(key in t["features"] and t["stamps"].get(key) == stamps[key] for t in entries):
                    continue
                refreshed += any(key in t["features"] and t["stamps"].get(key) != stamps[key] for t in entries)
                jobs.append((d, v))
        if refreshed:
            get_logger().info(
                f"Refreshing {refreshed} cached feature(s) of {desc}: their image files changed since they were encoded"
            )
        if jobs:
            self._compute(jobs, transform, seeded, tables, desc)
            for v in sorted({v for _, v in jobs}):
                keys = [_key(d) for d, w in jobs if w == v]
                for k in kinds:
                    tables[k][v] = self._merge_and_save(paths[k][v], tables[k][v], keys, stamps)
        if not stack:
            return None
        first = tables[kinds[0]]
        return torch.stack([torch.stack([first[v]["features"][_key(d)] for d in items]) for v in view_ids]).float()

    def _merge_and_save(self, path: str, table: dict, keys: list[str], stamps: dict) -> dict:
        """Add this call's new entries to what is on disk now, under a lock: another run writing the
        same file meanwhile (a different shot count, say) keeps its entries too."""
        with file_lock(path + ".lock"):
            merged = self._read(path)
            for key in keys:
                merged["features"][key] = table["features"][key]
                merged["stamps"][key] = stamps[key]
            torch_save_atomic(merged, path)
        self._memory[path] = merged
        return merged

    def _compute(self, jobs, transform, seeded, tables: dict, desc) -> None:
        backbone = self.backbone
        encode = self.variant.encode if self.variant is not None else backbone.encode_image
        cuda = self.device.type == "cuda"
        # Workers decode the next batches while the tower encodes this one; a single batch has nothing
        # to overlap, so it is decoded in this process (no worker start-up). On a CPU with few cores the
        # tower's threads already use them all and workers only take cores from it: on 2 shared cores,
        # 2 workers made extraction 1.11x slower at 2 tower threads, 1.17x under TRAIN.THREADS auto
        # (benchmarks/bench_extraction_workers.py, load average 4-6).
        few_cores = not cuda and available_cores() <= CPU_IN_PROCESS_CORES
        workers = 0 if len(jobs) <= self.batch_size or few_cores else min(
            self.workers, -(-len(jobs) // self.batch_size) - 1)
        loader = DataLoader(
            _ViewDataset(jobs, transform, seeded), batch_size=self.batch_size, num_workers=workers,
            pin_memory=cuda, prefetch_factor=2 if workers else None,
        )
        get_logger().info(f"Encoding {len(jobs)} image view(s) for {desc} with {backbone.name} "
                          f"({precision_name(self.amp_dtype)}, {workers} loader worker(s))")
        start = 0
        # On CUDA the tower runs on the GPU: the CPU's thread count is left alone.
        threads = ExtractionThreads(self.threads if not cuda else torch.get_num_threads(), len(jobs),
                                    key=backbone.name, log=get_logger().info)
        # A loader draws its workers' seeds from the global RNG; forking keeps a run's training
        # randomness the same whether its features were cached or computed just now. Images decoded in
        # this process (no workers) are cropped and normalised at one thread: on 2 loaded cores a
        # 2-thread pool for those tiny elementwise operations made a job 1.10x slower (same benchmark;
        # same values: elementwise). Each tower call sets its own count.
        with torch.random.fork_rng(devices=[]), eval_mode(backbone), torch_threads(DECODE_THREADS):
            for images in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
                pixels = images.to(self.device, non_blocking=cuda)
                parts = []
                for x, count in threads.chunks(pixels, len(pixels) if cuda else CPU_TOWER_CHUNK):
                    began = time.perf_counter()
                    with torch_threads(count), torch.inference_mode(), autocast(self.device, self.amp_dtype):
                        parts.append(backbone.encode_image_tokens(x) if PATCHES in tables
                                     else (encode(x),))
                    threads.record(count, len(x), time.perf_counter() - began)
                outputs = [torch.cat(kind) for kind in zip(*parts)]
                # Outside inference mode, so the stored tensors are ordinary ones autograd may read.
                outputs = [out.to("cpu", self.store_dtype) for out in outputs]
                batch = jobs[start : start + len(outputs[0])]
                for kind, out in zip(tables, outputs):
                    for (item, view), feat in zip(batch, out):
                        tables[kind][view]["features"][_key(item)] = feat.clone()
                start += len(batch)
