"""Preprocessing: gene medians, rank-value tokenization, expression bins, soft ranks.

Functions are imported on first use to keep ``import diffbio_sc`` light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "gene_medians": "._medians",
    "tokenize": "._tokenize",
    "bin_expression": "._bins",
    "soft_rank": "._soft_rank",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'diffbio_sc.pp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
