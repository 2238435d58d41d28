"""Name -> class registries, used as decorators (the Dassl/timm pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from engine.errors import UserError

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}
        # Optional name -> entry (or None) for names nobody registered; datasets/ sets one for the user's own data.
        self.fallback: Callable[[str], object | None] | None = None

    def register(self, obj: T | None = None, name: str | None = None) -> T | Callable[[T], T]:
        """Register `obj` under `name` (default: its __name__); usable as @REG.register()."""

        def add(item: T) -> T:
            key = name or item.__name__
            if key in self._items and self._items[key] is not item:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str):
        if name not in self._items:
            found = self.fallback(name) if self.fallback else None
            if found is not None:
                return found
            raise UserError(
                f"Unknown {self.kind} '{name}'. Valid names: {', '.join(self.registered_names())}."
            )
        return self._items[name]

    def registered_names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


TRAINER_REGISTRY = Registry("trainer")
DATASET_REGISTRY = Registry("dataset")
# Backbones register here from backbones/; the engine looks them up by name without importing that layer.
BACKBONE_REGISTRY = Registry("backbone")
