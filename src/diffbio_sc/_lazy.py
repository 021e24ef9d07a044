"""Lazy attribute exports for subpackages (PEP 562).

Each subpackage lists ``name -> private module``; the object is imported on first
access and cached in the module's globals, so ``import diffbio_sc`` imports no
heavy dependency until a function is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, namespace: dict, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` exporting ``exports`` lazily."""

    def __getattr__(name: str):
        if name in exports:
            module = importlib.import_module(exports[name], package)
            # an entry ".name" exports the submodule itself; others an attribute of it
            obj = module if exports[name] == f".{name}" else getattr(module, name)
            namespace[name] = obj
            return obj
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        # what a user sees (tab completion, dir()): the public names only, not the
        # helpers of the package's own __init__ (annotations, lazy_exports, _EXPORTS)
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
