"""Rank-value encoding of a CSR chunk of cells (Geneformer's tokenization kernel).

A pure array function: the AnnData-facing :func:`diffbio_sc.pp.tokenize` and
the native model's data preparation stream chunks through it.

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

from ._csr import as_csr, row_totals

_LOW32 = np.uint64(0xFFFFFFFF)
# Rows per sorted block: the padded block (rows x max nonzeros in the block, 8
# bytes each) stays near the per-core L2 cache; blocks are sorted on all cores.
_BLOCK_ROWS = 192


def n_threads(n_jobs: int | None = None) -> int:
    import os

    if n_jobs is None:
        from .._settings import settings

        n_jobs = settings.n_jobs
    if n_jobs is None or n_jobs <= 0:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return int(n_jobs)


def rank_value_encode(
    X: sp.csr_matrix,
    gene_scale: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    totals: np.ndarray | None = None,
    lut: np.ndarray | None = None,
    pad_value: int = -1,
    out: np.ndarray | None = None,
    with_values: bool = True,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Rank-value encode a CSR chunk of cells (Geneformer's encoding).

    Per cell: counts are divided by the cell's total over all genes and
    multiplied by ``target_sum`` and ``gene_scale`` (``1 / median``; 0 removes a
    gene). Genes with a positive result are ranked by it, descending; equal
    values keep gene order (lower column index first). The first ``max_tokens``
    are kept.

    Values are computed in float64 and compared as float32; rounding is
    monotone, so it never swaps two genes, but two values that differ by less
    than float32 resolution (about 1e-7 relative) tie and then follow gene
    order. The same rule in a per-cell loop reads
    ``np.argsort(-v.astype(np.float32), kind="stable")``.

    Parameters
    ----------
    X
        Cells x genes, CSR, non-negative, without duplicate entries.
    gene_scale
        Per-gene multiplier, shape ``(n_genes,)``; 0 (or non-finite) excludes a gene.
    target_sum
        Total each cell is normalised to.
    max_tokens
        Number of ranked genes kept per cell.
    totals
        Per-cell totals if already known (default: summed from ``X``).
    lut
        Optional map from column index to the output id (e.g. token ids), shape
        ``(n_genes,)``; default: the column index itself.
    pad_value
        Output value after a cell's last ranked gene.
    out
        Optional int32 array ``(n_cells, max_tokens)`` (a view is fine) to write
        the ranked ids into instead of allocating one.
    with_values
        Also return the ranked values (skip to save time and memory).
    n_jobs
        Threads for the row sorts (default: ``dfm.settings.n_jobs``, all cores).

    Returns
    -------
    gene_idx
        int32 ``(n_cells, max_tokens)``: ``lut`` of the column indices in rank
        order (the indices themselves without ``lut``), ``pad_value`` padded.
    values
        float32 ``(n_cells, max_tokens)``: the ranked values (0 at padding), or
        ``None`` when ``with_values=False``.
    n_tokens
        int32 ``(n_cells,)``: genes kept per cell.
    """
    X = as_csr(X)
    n, n_genes = X.shape
    gene_scale = np.asarray(gene_scale, dtype=np.float64)
    if gene_scale.shape != (n_genes,):
        raise ValueError(f"gene_scale has shape {gene_scale.shape}, expected ({n_genes},)")
    if n_genes >= 0xFFFFFFFF:
        raise ValueError("at most 2**32 - 2 genes are supported")
    gene_scale = np.where(np.isfinite(gene_scale) & (gene_scale > 0), gene_scale, 0.0)
    if totals is None:
        totals = row_totals(X)
    totals = np.asarray(totals, dtype=np.float64)
    factor = np.divide(float(target_sum), totals, out=np.zeros(n), where=totals > 0)
    # Keys of excluded entries and of the padding share one value whose high 32
    # bits are all ones (a positive float32 never has bits 0, so every real key
    # sorts first); its low 32 bits are chosen so that the id mapping below
    # turns it into pad_value.
    if lut is None:
        affine, shift = True, 0
    else:
        lut = np.asarray(lut, dtype=np.int64)
        if lut.shape != (n_genes,):
            raise ValueError(f"lut has shape {lut.shape}, expected ({n_genes},)")
        shift = int(lut[0]) if n_genes else 0
        affine = bool(np.array_equal(lut, shift + np.arange(n_genes)))
    if affine:  # ids are column + shift: one add, no gather
        pad_low = (int(pad_value) - shift) & 0xFFFFFFFF
        lut_ext = None
    else:  # a gather from lut, with one extra slot for the padding
        pad_low = n_genes
        lut_ext = np.concatenate([lut, [pad_value]]).astype(np.int32)
    pad_key = np.uint64((0xFFFFFFFF << 32) | pad_low)
    shift32 = np.uint32(shift & 0xFFFFFFFF)
    if out is None:
        out = np.empty((n, max_tokens), dtype=np.int32)
    elif out.shape != (n, max_tokens) or out.dtype != np.int32:
        raise ValueError(f"out must be int32 of shape ({n}, {max_tokens})")
    values = np.zeros((n, max_tokens), dtype=np.float32) if with_values else None
    n_tokens = np.zeros(n, dtype=np.int32)
    indptr = X.indptr.astype(np.int64)
    data, indices = X.data, X.indices
    little = np.little_endian

    def work(s: int) -> None:
        e = min(s + _BLOCK_ROWS, n)
        a, b = int(indptr[s]), int(indptr[e])
        ip = indptr[s : e + 1] - a
        counts = np.diff(ip)
        width = int(counts.max()) if e > s else 0
        k = min(max_tokens, width)
        out[s:e, k:] = pad_value
        if k == 0:
            return
        idx = indices[a:b]
        val = np.take(gene_scale, idx)
        val *= data[a:b]
        val *= np.repeat(factor[s:e], counts)
        bits = val.astype(np.float32).view(np.uint32)
        keys = np.empty(b - a, dtype=np.uint64)
        if little:  # write both 32-bit halves in place
            halves = keys.view(np.uint32).reshape(-1, 2)
            halves[:, 0] = idx
            np.invert(bits, out=halves[:, 1])
        else:  # pragma: no cover - big-endian hosts
            keys[:] = np.invert(bits).astype(np.uint64) << np.uint64(32)
            keys |= idx.astype(np.uint64)
        n_valid = counts
        if not bits.all():  # a value that is 0 in float32 (excluded gene): padding
            bad_pos = np.flatnonzero(bits == 0)
            keys[bad_pos] = pad_key
            bad_rows = np.searchsorted(ip, bad_pos, side="right") - 1
            n_valid = counts - np.bincount(bad_rows, minlength=e - s)
        n_tokens[s:e] = np.minimum(n_valid, max_tokens)
        if (counts == width).all():
            padded = keys.reshape(e - s, width)
        else:
            padded = np.full((e - s, width), pad_key, dtype=np.uint64)
            padded[np.arange(width)[None, :] < counts[:, None]] = keys
        padded.sort(axis=1)
        top = padded[:, :k]
        if little:
            halves = top.view(np.uint32)
            low, high = halves[:, 0::2], halves[:, 1::2]
        else:  # pragma: no cover - big-endian hosts
            low = (top & _LOW32).astype(np.uint32)
            high = (top >> np.uint64(32)).astype(np.uint32)
        dest = out[s:e, :k]
        if lut_ext is None:
            np.add(low, shift32, out=dest.view(np.uint32))  # wraps mod 2**32
        else:
            dest[...] = np.take(lut_ext, low)
        if values is not None:
            values[s:e, :k] = np.invert(high).view(np.float32)

    starts = list(range(0, n, _BLOCK_ROWS))
    threads = min(n_threads(n_jobs), len(starts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, starts))
    else:
        for s in starts:
            work(s)
    return out, values, n_tokens
