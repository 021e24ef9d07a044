"""Flax NNX models: the native masked-expression transformer and its save/load.

Imported on first attribute access (``dfm.models.MaskedExpressionModel``), so
that ``import diffbio_sc`` does not import JAX.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MaskedExpressionModel": "._masked",
    "MaskedExpressionConfig": "._masked",
    "load": "._io",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'diffbio_sc.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
