"""Shared test set-up: offline hub, a private cache folder, the registries loaded once."""

from __future__ import annotations

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS_DIR = os.path.join(os.path.dirname(REPO), "shared", "reference", "splits")
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


def split_file(name: str) -> str:
    """Path of a real split file from ../shared/reference/splits (skips if that folder is absent)."""
    path = os.path.join(SPLITS_DIR, f"split_{name}.json")
    if not os.path.isfile(path):
        pytest.skip(f"reference split file not available: {path}")
    return path
