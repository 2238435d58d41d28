"""The user's own datasets: a DATASET.NAME that is not a benchmark reads DATA/NAME/split_NAME.json.

tools/prepare_dataset.py turns a folder of class sub-folders, or a CSV of path,label, into that layout
(and DATA/NAME/dataset.yaml, which the scripts find there). The reader is the benchmarks' reader without
a declaration: class strings and label order come from the split file itself. A name that differs from
a benchmark's only in case (btmri, Busi) is refused; a missing folder whose name is close to a
benchmark's (BTMR) gets a did-you-mean hint.
"""

from __future__ import annotations

import difflib
import re

from datasets.benchmarks import BENCHMARKS
from datasets.split_json import SplitJsonDataset
from engine.registry import DATASET_REGISTRY

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_READERS: dict[str, type] = {}


def confusable_benchmark(name: str) -> str | None:
    """The benchmark whose name or config name equals `name` case-insensitively (config files would clash)."""
    key = name.lower()
    return next((s.name for s in BENCHMARKS.values() if key in (s.name.lower(), s.config)), None)


def similar_benchmark(name: str) -> str | None:
    """A benchmark whose name is close to `name`, for a did-you-mean hint."""
    keys = {key: spec.name for spec in BENCHMARKS.values() for key in (spec.name.lower(), spec.config)}
    close = difflib.get_close_matches(name.lower(), list(keys), n=1, cutoff=0.75)
    return keys[close[0]] if close else None


class OwnDataset(SplitJsonDataset):
    """A split file with no declaration: class strings and label order come from the file."""

    def how_to_get(self, name: str, root: str) -> str:
        similar = similar_benchmark(name)
        guess = f"Did you mean the benchmark {similar}? " if similar else ""
        return (
            f"{guess}'{name}' is not a benchmark ({', '.join(sorted(BENCHMARKS))}); to use your own images run "
            f"`python tools/prepare_dataset.py --folder DIR --name {name} --root {root or 'DATA'}` "
            f"(docs/own_data.md), or point --root at the folder that contains {name}/."
        )


def own_dataset_reader(name: str) -> type | None:
    """A reader class for an unregistered NAME (one per name, so DATASET_REGISTRY.get is stable)."""
    if not NAME_PATTERN.match(name) or confusable_benchmark(name):
        return None  # let the registry report an unknown dataset with the valid names
    if name not in _READERS:
        _READERS[name] = type(name, (OwnDataset,), {"spec": None})
    return _READERS[name]


DATASET_REGISTRY.fallback = own_dataset_reader
