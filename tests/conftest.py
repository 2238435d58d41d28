"""Shared test set-up: offline hub, a private cache folder, the registries loaded once."""

from __future__ import annotations

import atexit
import gzip
import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmarks' published split files (as their archives ship them), gzipped: 0.4 MB for 11 MB of JSON.
SPLITS_DIR = os.path.join(REPO, "tests", "fixtures", "splits")
sys.path[:0] = [REPO, os.path.join(REPO, "tools")]

os.environ["HF_HUB_OFFLINE"] = "1"  # an accidental hub call fails at once instead of hanging
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import backbones  # noqa: E402,F401
import datasets  # noqa: E402,F401
import trainers  # noqa: E402,F401


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    os.environ["BIOMEDCOOP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("BIOMEDCOOP_WEIGHTS_DIR", None)


@pytest.fixture(scope="session")
def tiny_biomedclip():
    from engine.registry import BACKBONE_REGISTRY

    return BACKBONE_REGISTRY.get("TinyBiomedCLIP")()


@pytest.fixture(scope="session")
def synthetic_btmri(tmp_path_factory) -> str:
    """A data root holding a synthetic BTMRI (20 images per class) in the real layout."""
    from make_synthetic_dataset import write_dataset

    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root), "BTMRI", per_class=20, size=32)
    return str(root)


_UNPACKED: list[str] = []  # the folder the split files are unpacked into, once per test session


def split_file(name: str) -> str:
    """Path of benchmark NAME's real split file, unpacked from tests/fixtures/splits/split_NAME.json.gz."""
    packed = os.path.join(SPLITS_DIR, f"split_{name}.json.gz")
    if not os.path.isfile(packed):
        raise FileNotFoundError(f"no split fixture for {name}: {packed}")
    if not _UNPACKED:
        _UNPACKED.append(tempfile.mkdtemp(prefix="biomedcoop-splits-"))
        atexit.register(shutil.rmtree, _UNPACKED[0], True)
    path = os.path.join(_UNPACKED[0], f"split_{name}.json")
    if not os.path.isfile(path):
        with gzip.open(packed, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return path
