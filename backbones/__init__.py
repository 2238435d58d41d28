"""Model families; importing this package registers every backbone (and its Tiny twin) by name."""

from backbones import biomedclip, clip, hf_transformers, open_clip_family, pmcclip  # noqa: F401
from backbones.base import Backbone

__all__ = ["Backbone"]
