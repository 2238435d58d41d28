"""The user's own datasets: a DATASET.NAME that is not a benchmark reads DATA/NAME/split_NAME.json.

tools/prepare_dataset.py turns a folder of class sub-folders, or a CSV of path,label, into that layout
(and writes configs/datasets/<name>.yaml for the scripts). The reader is the benchmarks' reader without
a declaration: class strings and label order come from the split file itself. A name that is a near
miss of a benchmark's (BTMR, busi2) is treated as a typo, not as a new dataset.
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
    """The benchmark that `name` equals or nearly equals (case-insensitively), if any."""
    keys = {key: spec.name for spec in BENCHMARKS.values() for key in (spec.name.lower(), spec.config)}
    close = difflib.get_close_matches(name.lower(), list(keys), n=1, cutoff=0.8)
    return keys[close[0]] if close else None


def own_dataset_reader(name: str) -> type | None:
    """A reader class for an unregistered NAME (one per name, so DATASET_REGISTRY.get is stable)."""
    if not NAME_PATTERN.match(name) or confusable_benchmark(name):
        return None  # let the registry report an unknown dataset with the valid names
    if name not in _READERS:
        _READERS[name] = type(name, (SplitJsonDataset,), {"spec": None})
    return _READERS[name]


DATASET_REGISTRY.fallback = own_dataset_reader
