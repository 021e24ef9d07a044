"""scGPT-style per-cell quantile bins of nonzero values, as array kernels."""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from ._csr import as_csr, row_ids


def cell_keys(obs_names, seed: int) -> np.ndarray:
    """Return a 64-bit key per cell from its name and the seed (blake2b), stable across sessions."""
    seed_bytes = int(seed).to_bytes(8, "little", signed=True)
    out = np.empty(len(obs_names), dtype=np.uint64)
    for i, name in enumerate(obs_names):
        h = hashlib.blake2b(str(name).encode(), digest_size=8, key=seed_bytes)
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def cell_uniforms(cell_keys: np.ndarray, gene_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (cell key, gene index): a counter-based hash."""
    with np.errstate(over="ignore"):
        h = _splitmix64(cell_keys[rows].astype(np.uint64) ^ _splitmix64(gene_idx.astype(np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def quantile_bins(X: sp.csr_matrix, n_bins: int, cell_keys: np.ndarray) -> np.ndarray:
    """scGPT-style per-cell bins of the nonzero values of a CSR chunk.

    For each cell, ``n_bins - 1`` edges are the quantiles (linear interpolation,
    as ``np.quantile``) of its nonzero values at ``linspace(0, 1, n_bins - 1)``.
    A value's bin lies between ``digitize(x, edges, right=True)`` and
    ``digitize(x, edges)``; where those differ (the value sits on tied edges)
    the bin is drawn uniformly in between, as scGPT does, with a uniform that
    depends only on ``cell_keys[cell]`` and the gene, so a cell's bins do not
    depend on the other cells. Zeros stay 0; nonzeros get bins 1..n_bins-1.

    Returns
    -------
    int array of the bins of ``X.data`` (same order as ``X.data``).
    """
    # No in-place canonicalisation here (sorting indices would reorder the
    # caller's arrays): nothing below needs sorted indices within a row.
    X = as_csr(X)
    n_edges = n_bins - 1
    q = np.linspace(0.0, 1.0, n_edges)
    out = np.zeros(X.data.size, dtype=np.int16)
    indptr = X.indptr
    counts = np.diff(indptr)
    rows = row_ids(indptr)
    data = X.data.astype(np.float64)
    nz = data > 0
    if not nz.any():
        return out
    # Sort values within each row (row-major, then value) with a stable lexsort.
    order = np.lexsort((data, rows))
    sorted_vals = data[order]
    # Offsets of the nonzero run of each row inside the sorted array: zeros stored
    # explicitly sort first within the row.
    n_zero = np.bincount(rows[~nz], minlength=X.shape[0])
    n_nz = counts - n_zero
    first = indptr[:-1] + n_zero
    has = n_nz > 0
    pos = q[None, :] * (n_nz[has, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_nz[has, None] - 1)
    frac = pos - lo
    base = first[has, None]
    edges = np.empty((X.shape[0], n_edges))
    # Interpolate exactly as np.quantile's 'linear' method does (a + (b - a) t, or
    # b - (b - a)(1 - t) for t >= 0.5), so that edges equal np.quantile's to the
    # bit and a value sitting on an edge falls in the same bin.
    a = sorted_vals[base + lo]
    b = sorted_vals[base + hi]
    diff = b - a
    edges[has] = np.where(frac >= 0.5, b - diff * (1 - frac), a + diff * frac)
    # digitize each row's values against its own edges (searchsorted per row:
    # O(nnz log n_bins) time and no nnz x n_bins temporary)
    left = np.zeros(X.data.size, dtype=np.int64)
    right = np.zeros(X.data.size, dtype=np.int64)
    for i in np.flatnonzero(has):
        a, b = indptr[i], indptr[i + 1]
        vals = data[a:b]
        left[a:b] = np.searchsorted(edges[i], vals, side="right")
        right[a:b] = np.searchsorted(edges[i], vals, side="left")
    left, right = left[nz], right[nz]
    r = rows[nz]
    u = cell_uniforms(cell_keys, X.indices[nz], r)
    digits = np.ceil(u * (right - left) + left).astype(np.int64)
    digits = np.clip(digits, 1, n_edges)
    out[nz] = digits.astype(np.int16)
    return out
