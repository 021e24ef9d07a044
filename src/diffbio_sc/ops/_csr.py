"""Small NumPy helpers for CSR chunks of cells, shared by the host kernels.

No package imports: :mod:`diffbio_sc._validate`'s chunk reader uses
:func:`row_totals` too.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def row_totals(X: sp.csr_matrix, *, piece: int = 1 << 20) -> np.ndarray:
    """Per-row sums in float64 (0 for empty rows).

    Summed over pieces of about ``piece`` stored values, so the float64
    temporary stays small whatever the size of ``X``.
    """
    indptr = np.asarray(X.indptr, dtype=np.int64)
    out = np.zeros(indptr.size - 1, dtype=np.float64)
    for s, e, a, b in row_pieces(indptr, piece):
        starts = indptr[s:e]
        nonempty = np.flatnonzero(indptr[s + 1 : e + 1] > starts)
        with np.errstate(over="ignore"):  # an overflow gives inf, which callers check
            out[s + nonempty] = np.add.reduceat(X.data[a:b], starts[nonempty] - a, dtype=np.float64)
    return out


def row_pieces(indptr: np.ndarray, piece: int):
    """Yield ``(start_row, stop_row, start_value, stop_value)`` of runs of about ``piece`` values.

    Rows are never split; runs without stored values are skipped.
    """
    n = indptr.size - 1
    nnz = int(indptr[-1])
    if nnz == 0:
        return
    rows_per_piece = max(1, int(n * piece // nnz))
    for s in range(0, n, rows_per_piece):
        e = min(s + rows_per_piece, n)
        a, b = int(indptr[s]), int(indptr[e])
        if b > a:
            yield s, e, a, b


def as_csr(X) -> sp.csr_matrix:
    """``X`` as CSR without copying one that already is (scipy's constructor may copy views)."""
    if sp.issparse(X) and X.format == "csr":
        return X
    return sp.csr_matrix(X)


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """Row index of every stored value of a CSR matrix with row pointer ``indptr``."""
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
