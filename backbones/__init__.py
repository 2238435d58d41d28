"""Model families; importing this package registers every backbone by name."""

from backbones import biomedclip  # noqa: F401
from backbones.base import Backbone

__all__ = ["Backbone"]
