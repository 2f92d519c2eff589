"""Name -> component registries, in the style of timm: `@DATASETS.register("smnist")`.

A wrong name raises an error listing every registered name, so recipes fail with a useful message.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


class UnknownNameError(KeyError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Registry:
    """A named collection of components (functions or classes) of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        if name not in self._items:
            raise UnknownNameError(
                f"'{name}' is not a registered {self.kind}; known: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS = Registry("dataset")
INITIALIZERS = Registry("initializer")
LAYERS = Registry("sequence layer")
