"""Readers and writers for artifacts: embedding exports of upstream models.

Functions are imported on first use to keep ``import diffbio_sc`` light
(``read_embeddings`` imports h5py, anndata, pyarrow or safetensors only for the
format it reads).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_embeddings": "._embeddings",
    "write_embeddings": "._embeddings",
    "EmbeddingArtifact": "._embeddings",
    "EmbeddingPreset": "._presets",
    "PRESETS": "._presets",
    "get_preset": "._presets",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'diffbio_sc.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
