"""NumPy kernels for rank-value encoding, gene medians and expression bins.

Everything here works on one CSR chunk of cells and returns plain arrays; the
AnnData-facing functions in ``_tokenize``, ``_medians`` and ``_bins`` stream
chunks through these kernels.

Sorting trick: a positive float32's bit pattern, read as an unsigned integer,
orders like the float itself. Packing ``(~bits(value)) << 32 | gene_index`` into
one uint64 per nonzero turns "descending value, ties by ascending gene index"
into a single ascending integer sort, which NumPy runs with SIMD along the rows
of a padded block and without holding the GIL (so blocks sort on all cores).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

_PAD_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOW32 = np.uint64(0xFFFFFFFF)
# Rows per sorted block: bounds the padded block to rows x (max nonzeros in block).
_BLOCK_ROWS = 512


def n_threads(n_jobs: int | None = None) -> int:
    import os

    if n_jobs is None:
        from .._settings import settings

        n_jobs = settings.n_jobs
    if n_jobs is None or n_jobs <= 0:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return int(n_jobs)


def row_totals(X: sp.csr_matrix) -> np.ndarray:
    """Per-row sums in float64."""
    return np.add.reduceat(
        np.concatenate([X.data.astype(np.float64, copy=False), [0.0]]),
        np.minimum(X.indptr[:-1], X.data.size),
    ) * (np.diff(X.indptr) > 0)


def _row_ids(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _rank_block(
    indptr: np.ndarray,
    indices: np.ndarray,
    keyval: np.ndarray,
    max_tokens: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sort one block of rows; return (gene_idx, float32 value) top ``max_tokens`` per row."""
    n_rows = indptr.size - 1
    counts = np.diff(indptr)
    width = int(counts.max()) if n_rows else 0
    out_idx = np.full((n_rows, max_tokens), -1, dtype=np.int32)
    out_val = np.zeros((n_rows, max_tokens), dtype=np.float32)
    if width == 0 or max_tokens == 0:
        return out_idx, out_val
    bits = keyval.view(np.uint32).astype(np.uint64)
    keys = ((~bits & _LOW32) << np.uint64(32)) | indices.astype(np.uint64)
    padded = np.full((n_rows, width), _PAD_KEY, dtype=np.uint64)
    rows = _row_ids(indptr)
    cols = np.arange(indices.size, dtype=np.int64) - np.repeat(indptr[:-1].astype(np.int64), counts)
    padded[rows, cols] = keys
    padded.sort(axis=1)
    k = min(max_tokens, width)
    top = padded[:, :k]
    valid = top != _PAD_KEY
    gene = (top & _LOW32).astype(np.int64)
    vbits = ((~(top >> np.uint64(32))) & _LOW32).astype(np.uint32)
    out_idx[:, :k] = np.where(valid, gene, -1)
    out_val[:, :k] = np.where(valid, vbits.view(np.float32), 0.0)
    return out_idx, out_val


def rank_value_encode(
    X: sp.csr_matrix,
    gene_scale: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-value encode a CSR chunk of cells (Geneformer's encoding).

    Per cell: counts are divided by the cell's total over all genes and
    multiplied by ``target_sum`` and ``gene_scale`` (``1 / median``; 0 removes a
    gene). Genes with a positive result are ranked by it, descending; equal
    values keep gene order (lower column index first). The first ``max_tokens``
    are kept.

    Values are compared as float32 after scaling in float64; rounding is
    monotone, so it never swaps two genes, but two values that differ by less
    than float32 resolution (about 1e-7 relative) tie and then follow gene order.

    Parameters
    ----------
    X
        Cells x genes, CSR, non-negative.
    gene_scale
        Per-gene multiplier, shape ``(n_genes,)``; 0 (or non-finite) excludes a gene.
    target_sum
        Total each cell is normalised to.
    max_tokens
        Number of ranked genes kept per cell.
    n_jobs
        Threads for the row sorts (default: ``dfm.settings.n_jobs``, all cores).

    Returns
    -------
    gene_idx
        int32 ``(n_cells, max_tokens)``: column indices in rank order, ``-1`` padded.
    values
        float32 ``(n_cells, max_tokens)``: the ranked values (0 at padding).
    n_tokens
        int32 ``(n_cells,)``: genes kept per cell.
    """
    X = sp.csr_matrix(X)
    gene_scale = np.asarray(gene_scale, dtype=np.float64)
    if gene_scale.shape != (X.shape[1],):
        raise ValueError(f"gene_scale has shape {gene_scale.shape}, expected ({X.shape[1]},)")
    gene_scale = np.where(np.isfinite(gene_scale) & (gene_scale > 0), gene_scale, 0.0)
    n = X.shape[0]
    totals = row_totals(X)
    factor = np.divide(float(target_sum), totals, out=np.zeros(n), where=totals > 0)
    indptr = X.indptr.astype(np.int64)
    rows = _row_ids(indptr)
    val = X.data.astype(np.float64) * gene_scale[X.indices] * factor[rows]
    keep = val > 0
    if not keep.all():
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=n))])
        indices = X.indices[keep]
        val = val[keep]
    else:
        indices = X.indices
    val32 = val.astype(np.float32)
    starts = list(range(0, n, _BLOCK_ROWS))

    def work(s: int):
        e = min(s + _BLOCK_ROWS, n)
        a, b = indptr[s], indptr[e]
        return _rank_block(indptr[s : e + 1] - a, indices[a:b], val32[a:b], max_tokens)

    threads = min(n_threads(n_jobs), len(starts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(work, starts))
    else:
        parts = [work(s) for s in starts]
    if parts:
        gene_idx = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
    else:
        gene_idx = np.full((0, max_tokens), -1, np.int32)
        values = np.zeros((0, max_tokens), np.float32)
    n_tokens = np.minimum(np.diff(indptr), max_tokens).astype(np.int32)
    return gene_idx, values, n_tokens


def normalised_nonzeros(X: sp.csr_matrix, target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(gene_index int32, value float32)`` of the nonzeros normalised to ``target_sum``."""
    X = sp.csr_matrix(X)
    totals = row_totals(X)
    factor = np.divide(float(target_sum), totals, out=np.zeros(X.shape[0]), where=totals > 0)
    val = X.data.astype(np.float64) * factor[_row_ids(X.indptr)]
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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def cell_uniforms(cell_keys: np.ndarray, gene_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (cell key, gene index): a counter-based hash."""
    with np.errstate(over="ignore"):
        h = _splitmix64(
            cell_keys[rows].astype(np.uint64) ^ _splitmix64(gene_idx.astype(np.uint64))
        )
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def quantile_bins(
    X: sp.csr_matrix, n_bins: int, cell_keys: np.ndarray
) -> np.ndarray:
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
    X = sp.csr_matrix(X)
    X.sort_indices()
    n_edges = n_bins - 1
    q = np.linspace(0.0, 1.0, n_edges)
    out = np.zeros(X.data.size, dtype=np.int16)
    indptr = X.indptr
    counts = np.diff(indptr)
    rows = _row_ids(indptr)
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
    edges[has] = sorted_vals[base + lo] * (1 - frac) + sorted_vals[base + hi] * frac
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
