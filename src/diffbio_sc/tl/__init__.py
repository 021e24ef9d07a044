"""Tools: pretraining and embedding, embedding import, scoring and benchmarks.

Functions are imported on first use to keep ``import diffbio_sc`` light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "pretrain": "._pretrain",
    "embed": "._embed",
    "load_embeddings": "._load_embeddings",
    "score_annotation": "._scoring",
    "score_integration": "._scoring",
    "benchmark": "._benchmark",
    "compare_to_baseline": "._benchmark",
    "save_baseline": "._benchmark",
    "pca_baseline": "._baselines",
    "harmony_baseline": "._baselines",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'diffbio_sc.tl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
