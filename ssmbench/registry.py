"""Name -> component registries, in the style of timm: `@DATASETS.register("smnist")`.

A wrong name raises an error listing every registered name, so recipes fail with a useful message.
This file is the one place that says which modules fill each registry (`modules=` below): a registry imports
them the first time it is asked for a name, so a lookup never depends on what the caller happened to import,
and no package imports another only to fill a registry. A new component's module is added to that list.

Plugins fill the same registries from outside the package (`load_plugins`): installed packages through the entry
point groups `ssmbench.datasets`, `ssmbench.initializers` and `ssmbench.layers`, and modules named on the command
line (`ssmbench --import my_module`, kept in $SSMBENCH_IMPORT so that sweep workers and torchrun ranks import them too).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from ssmbench.errors import SSMBenchError


class UnknownNameError(KeyError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DuplicateName(SSMBenchError, ValueError):
    """A name registered twice (a plugin reusing a built-in name, or two plugins): a one-line error naming both."""


def origin(obj: Any) -> str:
    """Where a component was defined: its plugin file, or its module."""
    module = getattr(obj, "__module__", None) or "?"
    return getattr(sys.modules.get(module), "__file__", None) if module.startswith(PLUGIN_PACKAGE) else module


class Registry:
    """A named collection of components (functions or classes) of one kind, registered by the listed `modules`."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self.modules = modules
        self._items: dict[str, Any] = {}
        self._loaded = False

    def load(self) -> None:
        """Import the modules that register this kind of component (once; importing registers them), then the
        plugins (`load_plugins`, which looks again only when sys.path or $SSMBENCH_IMPORT changed)."""
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True
        load_plugins()

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._items:
                raise DuplicateName(f"{self.kind} '{name}' is registered twice: by {origin(self._items[name])} and by "
                                    f"{origin(obj)}; rename one of them")
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
LAYERS = Registry("sequence layer", modules=("ssmbench.models.backbone", "ssmbench.models.stu", "ssmbench.models.lru",
                                              "ssmbench.models.dss", "ssmbench.models.s5", "ssmbench.models.s4"))


PLUGIN_GROUPS = {"ssmbench.datasets": DATASETS, "ssmbench.initializers": INITIALIZERS, "ssmbench.layers": LAYERS}
IMPORT_ENV = "SSMBENCH_IMPORT"
PLUGIN_PACKAGE = "_ssmbench_plugin_"  # plugin files are imported under private names (`import_module`)
_loaded: set[str] = set()  # imported modules and loaded entry points
_scanned_path: tuple[str, ...] | None = None  # sys.path at the last look-up of entry points
_plugins_loading = False  # load_plugins is running (a registry look-up inside it must not start it again)


def import_module(name: str) -> None:
    """Import a plugin module by dotted name (the working directory is searched too) or by path to a .py file.

    A .py file is imported under a private name (`_ssmbench_plugin_<stem>_<hash of its path>`), so a plugin
    called datasets.py or torch.py never replaces the real module of that name for the process. A plugin that
    raises, or calls sys.exit while imported, is an SSMBenchError naming it (not a silent exit)."""
    if name in _loaded:
        return
    try:
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
            stem = re.sub(r"\W", "_", path.stem)
            private = f"{PLUGIN_PACKAGE}{stem}_{digest}"
            spec = importlib.util.spec_from_file_location(private, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[private] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            importlib.import_module(name)
    except DuplicateName:
        raise
    except (Exception, SystemExit) as e:
        raise SSMBenchError(f"--import {name}: cannot import it ({type(e).__name__}: {e}); give a module on the "
                            f"Python path (my_package.my_module) or a .py file") from None
    _loaded.add(name)


def load_plugins() -> None:
    """Import the modules of $SSMBENCH_IMPORT, then load every installed entry point of the plugin groups.

    An entry point names a module (`my_pkg.data`: importing it registers through the decorators) or a component
    (`my_pkg.data:MyAdapter`: registered under the entry point's name unless its import registered it already).
    Each is loaded once per process; installed packages are looked up again only when sys.path has changed.
    A call made while plugins are being loaded (a plugin module looking a name up) returns at once."""
    global _scanned_path, _plugins_loading
    if _plugins_loading:
        return
    _plugins_loading = True
    try:
        for name in filter(None, os.environ.get(IMPORT_ENV, "").split(os.pathsep)):
            import_module(name)
        if _scanned_path == tuple(sys.path):
            return
        for group, registry in PLUGIN_GROUPS.items():
            for ep in importlib.metadata.entry_points(group=group):
                load_entry_point(group, registry, ep)
        _scanned_path = tuple(sys.path)
    finally:
        _plugins_loading = False


def load_entry_point(group: str, registry: Registry, ep: importlib.metadata.EntryPoint) -> None:
    """Load one entry point of `group` (once) and register its component unless its import did."""
    key = f"{group}:{ep.name}={ep.value}"
    if key in _loaded:
        return
    try:
        obj = ep.load()
    except DuplicateName:
        raise
    except (Exception, SystemExit) as e:
        dist = ep.dist.name if ep.dist else "an installed package"
        raise SSMBenchError(f"plugin '{ep.name}' ({group}, from {dist}) cannot be loaded: "
                            f"{type(e).__name__}: {e}; fix or uninstall that package") from None
    if ep.attr and not any(registry.get(n) is obj for n in registry.names()):
        try:
            registry.register(ep.name)(obj)
        except ValueError as e:
            raise SSMBenchError(f"plugin '{ep.name}' ({group}): {e}; rename the entry point") from None
    _loaded.add(key)


def load_components() -> None:
    """Import every registered component's module and the plugins (before listing or validating names)."""
    for registry in (DATASETS, INITIALIZERS, LAYERS):
        registry.load()
