"""Name -> object registries that fail fast with the list of valid names.

Models, losses and datasets each own one `Registry`. A name of the form
`"package.module:attribute"` is imported from the Python path instead, so a researcher
can plug in their own function or module without editing crossjax.

A saved run's config is data, possibly from someone else: `code_references` finds the
names in it that would import code, so restoring a run can refuse them unless the user
passes `--trust_run_code` (a run directory must not make crossjax import a module
planted beside it).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from crossjax.errors import ConfigError

T = TypeVar("T")

_TRUST_RUN_CODE = False


def set_trust_run_code(enabled: bool) -> None:
    """Whether restoring a saved run may import the `"module:attr"` names in its config
    (the scripts' `--trust_run_code`); off by default."""
    global _TRUST_RUN_CODE
    _TRUST_RUN_CODE = bool(enabled)


def run_code_trusted() -> bool:
    """The setting of `set_trust_run_code`."""
    return _TRUST_RUN_CODE


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def code_references(tree: Any, where: str = "config") -> list[str]:
    """`field='package.module:name'` for every string in the nested dicts/lists `tree`
    that a registry would import instead of looking it up."""
    if isinstance(tree, str):
        return [f"{where}={tree!r}"] if _IMPORT_PATH.fullmatch(tree) else []
    if isinstance(tree, dict):
        items = [(f"{where}.{k}", v) for k, v in tree.items()]
    elif isinstance(tree, (list, tuple)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(tree)]
    else:
        return []
    return [ref for field, value in items for ref in code_references(value, field)]


def import_from_path(path: str, kind: str = "object") -> Any:
    """Imports `"package.module:attribute"`; raises ConfigError naming what failed."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} path {path!r} must look like 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import module {module_name!r} for {kind} {path!r} ({e}); is it on PYTHONPATH?"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no {kind} named {attr!r}") from None


class Registry(Generic[T]):
    """A named collection; `get` raises ConfigError listing the valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")`."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as `name`, or imported from `"module:attr"`."""
        if ":" in name:
            return import_from_path(name, self.kind)
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))} "
                "(or 'package.module:name' for your own)"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
