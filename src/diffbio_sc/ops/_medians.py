"""Per-gene nonzero medians of normalised counts (Geneformer's gene medians), as array kernels."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._csr import as_csr, row_ids, row_totals

_LOW32 = np.uint64(0xFFFFFFFF)


def normalised_nonzeros(X: sp.csr_matrix, target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(gene_index int32, value float32)`` of the nonzeros normalised to ``target_sum``."""
    X = as_csr(X)
    totals = row_totals(X)
    factor = np.divide(float(target_sum), totals, out=np.zeros(X.shape[0]), where=totals > 0)
    val = X.data.astype(np.float64) * factor[row_ids(X.indptr)]
    keep = val > 0
    return X.indices[keep].astype(np.int32), val[keep].astype(np.float32)


def nonzero_medians(gene_idx: np.ndarray, values: np.ndarray, n_genes: int) -> np.ndarray:
    """Median of the values of each gene (NaN for genes with none).

    Sorts one packed uint64 key per value (gene above, float bits below), then
    reads the middle element(s) of each gene's run; even counts average the two
    middle values, as ``np.median`` does.
    """
    gene_idx = np.asarray(gene_idx, dtype=np.uint64)
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys = (gene_idx << np.uint64(32)) | bits
    keys.sort()
    sorted_vals = (keys & _LOW32).astype(np.uint32).view(np.float32).astype(np.float64)
    counts = np.bincount(gene_idx.astype(np.int64), minlength=n_genes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(n_genes, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    med[has] = 0.5 * (sorted_vals[lo] + sorted_vals[hi])
    return med
