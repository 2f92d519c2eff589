"""Name -> component registries, in the style of timm: `@DATASETS.register("smnist")`.

A wrong name raises an error listing every registered name, so recipes fail with a useful message.
This file is the one place that says which modules fill each registry (`modules=` below): a registry imports
them the first time it is asked for a name, so a lookup never depends on what the caller happened to import,
and no package imports another only to fill a registry. A new component's module is added to that list.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator


class UnknownNameError(KeyError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Registry:
    """A named collection of components (functions or classes) of one kind, registered by the listed `modules`."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self.modules = modules
        self._items: dict[str, Any] = {}
        self._loaded = False

    def load(self) -> None:
        """Import the modules that register this kind of component (once; importing registers them)."""
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        self.load()
        if name not in self._items:
            raise UnknownNameError(
                f"'{name}' is not a registered {self.kind}; known: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS = Registry("dataset", modules=(
    "ssmbench.data.mnist", "ssmbench.data.lds", "ssmbench.data.synthetic", "ssmbench.data.images",
    "ssmbench.data.listops", "ssmbench.data.pathfinder", "ssmbench.data.retrieval", "ssmbench.data.speech",
    "ssmbench.data.text",
))
INITIALIZERS = Registry("initializer", modules=("ssmbench.init.hippo", "ssmbench.init.tdi"))
LAYERS = Registry("sequence layer", modules=("ssmbench.models.backbone", "ssmbench.models.stu"))


def load_components() -> None:
    """Import every registered component's module, e.g. before listing all names."""
    for registry in (DATASETS, INITIALIZERS, LAYERS):
        registry.load()
