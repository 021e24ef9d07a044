"""Dask execution of the pp writers: one Dask task per row block of a Dask-backed matrix.

When ``adata.X`` (or the layer) is a Dask array, e.g. read lazily with
``anndata.experimental.read_elem_lazy`` from zarr or h5ad, :func:`gene_medians`
and :func:`tokenize` build a task graph over its row blocks and run it with
whatever Dask scheduler is active: the threaded default, or a
``dask.distributed`` cluster (a ``LocalCluster``, or many machines: the same
call, once a ``Client`` is connected). Each task reads its block, validates it
(:func:`~diffbio_sc._validate.validate_chunk`, the checks of the in-memory
path) and runs the same array kernels, so the results equal the in-memory ones:

* medians: per-block histograms (integers, summed in a tree of tasks), then,
  for exact medians, per-block values that fall in each gene's median bin(s),
  sorted on the client;
* tokens: per-block rank-value tokens, gathered on the client or written by
  the workers to a zarr store (a path every worker can reach).

Nothing here schedules work: Dask does.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_matrix_dtype, validate_chunk


def is_dask(X) -> bool:
    """Whether ``X`` is a Dask array."""
    return all(hasattr(X, a) for a in ("dask", "chunks", "to_delayed"))


def row_blocks(X, *, uniform: bool = False) -> list[tuple[int, int, object]]:
    """``(start, stop, delayed block)`` of the row blocks of a Dask array (all columns).

    With ``uniform=True`` the rows are first rechunked so that every block but
    the last has the same size (needed to write zarr chunks without overlap).
    """
    chunks = {1: -1}
    if uniform and len(set(X.chunks[0][:-1])) > 1:
        chunks[0] = max(X.chunks[0])
    X = X.rechunk(chunks)
    blocks = X.to_delayed()[:, 0]
    bounds = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1]), b) for i, b in enumerate(blocks)]


def _checked(block, names, where, require_integer, allow_empty, counts_fix):
    """Return a block as a validated canonical CSR chunk and its totals (runs on a worker)."""
    from .._validate import _to_csr

    return validate_chunk(
        _to_csr(block),
        names,
        0,
        where=where,
        require_integer=require_integer,
        allow_empty=allow_empty,
        counts_fix=counts_fix,
    )


def _tree_sum(parts: list):
    import dask

    add = dask.delayed(np.add, pure=True)
    while len(parts) > 1:
        parts = [
            add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def dask_medians(
    X,
    obs_names,
    *,
    n_genes: int,
    target_sum: float,
    method: str,
    where: str,
    require_counts: bool,
    counts_fix: str,
) -> np.ndarray:
    """Per-gene nonzero medians of a Dask matrix (``method``: ``'exact'`` or ``'histogram'``)."""
    import dask

    from ..ops._medians import (
        chunk_histogram,
        chunk_median_candidates,
        histogram_medians,
        median_bins,
        medians_from_candidates,
    )

    check_matrix_dtype(X, where)
    blocks = row_blocks(X)
    checked = [
        dask.delayed(_checked, nout=2)(b, obs_names[s:e], where, require_counts, True, counts_fix)
        for s, e, b in blocks
    ]
    hists = [dask.delayed(chunk_histogram)(c, n_genes, target_sum, t) for c, t in checked]
    (hist,) = dask.compute(_tree_sum(hists))
    if method == "histogram":
        return histogram_medians(hist, target_sum)
    lo, hi, below = median_bins(hist)
    lo_d, hi_d = dask.delayed(lo), dask.delayed(hi)
    cands = dask.compute(
        *[dask.delayed(chunk_median_candidates)(c, lo_d, hi_d, target_sum, t) for c, t in checked]
    )
    keys = np.concatenate(cands) if cands else np.empty(0, np.uint64)
    return medians_from_candidates(keys, hist.sum(axis=1), below)


def dask_encode(X, obs_names, encode, *, where: str, require_integer: bool, store=None):
    """Run ``encode(chunk, totals) -> (tokens, n_tok, total, vocab_total)`` on every block.

    Returns ``(tokens or None, n_tok, total, vocab_total)``. With ``store`` (an
    open zarr array of the output shape whose row chunks equal the blocks), each
    task writes its tokens there and the client receives only the lengths.
    """
    import dask

    check_matrix_dtype(X, where)
    blocks = row_blocks(X, uniform=store is not None)

    def task(block, names, start, stop):
        chunk, totals = _checked(block, names, where, require_integer, False, "")
        tokens, n_tok, total, vocab = encode(chunk, totals)
        if store is not None:
            store[start:stop] = tokens
            tokens = None
        return tokens, n_tok, total, vocab

    parts = dask.compute(*[dask.delayed(task)(b, obs_names[s:e], s, e) for s, e, b in blocks])
    n_tok = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    tokens = None if store is not None else np.concatenate([p[0] for p in parts])
    return tokens, n_tok, sum(p[2] for p in parts), sum(p[3] for p in parts)
