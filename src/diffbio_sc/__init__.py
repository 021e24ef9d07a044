"""diffbio_sc: foundation-model embeddings for AnnData and MuData.

``import diffbio_sc as dfm`` exposes the submodules ``pp`` (preprocessing and
tokenization), ``tl`` (models, embedding import, scoring), ``pl`` (plots),
``models`` (Flax NNX modules), ``ops`` (pure JAX kernels), ``io`` (artifact
readers and writers) and ``datasets`` (bundled demo data).

Submodules are imported on first attribute access so that ``import diffbio_sc``
stays light: JAX, scanpy and scib-metrics are only imported when a function
that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._settings import settings
from ._version import __version__

_SUBMODULES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, io, models, ops, pl, pp, tl

__all__ = ["__version__", "settings", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'diffbio_sc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
