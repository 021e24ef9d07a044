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

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._settings import settings
from ._version import __version__

_SUBMODULES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, io, models, ops, pl, pp, tl

__all__ = ["__version__", "settings", "datasets", "io", "models", "ops", "pl", "pp", "tl"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), {name: f".{name}" for name in _SUBMODULES})
