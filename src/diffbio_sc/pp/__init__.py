"""Preprocessing: gene medians, rank-value tokenization, expression bins, soft ranks.

Functions are imported on first use to keep ``import diffbio_sc`` light.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "gene_medians": "._medians",
    "tokenize": "._tokenize",
    "bin_expression": "._bins",
    "soft_rank": "._soft_rank",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
