"""Plots: benchmark result tables and dot/bar charts, UMAPs of embeddings.

Functions are imported on first use to keep ``import diffbio_sc`` light
(matplotlib and scanpy are only imported when a plot is drawn).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "benchmark": "._benchmark",
    "embedding": "._embedding",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'diffbio_sc.pl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
