"""Plots: benchmark result tables and dot/bar charts, UMAPs of embeddings.

Functions are imported on first use to keep ``import diffbio_sc`` light
(matplotlib and scanpy are only imported when a plot is drawn).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "benchmark": "._benchmark",
    "embedding": "._embedding",
    "logo": "._logo",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
