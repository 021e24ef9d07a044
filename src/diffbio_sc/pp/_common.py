"""Shared pieces of the pp writers: chunk streaming with validation, copy handling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from .._validate import DfmInputError, check_cells_nonempty, check_values, iter_row_chunks
from ._kernels import row_totals


def _csr_view(data, indices, indptr, shape) -> sp.csr_matrix:
    """Wrap ``(data, indices, indptr)`` in a CSR matrix without copying the arrays.

    Set directly: scipy's constructor copies views of much larger arrays
    ("prune"), which would copy every chunk of an in-memory matrix.
    """
    if indptr[-1] > np.iinfo(indices.dtype).max:  # pragma: no cover - > 2**31 values per chunk
        indices = indices.astype(np.int64)
    chunk = sp.csr_matrix(shape, dtype=data.dtype)
    chunk.data = data
    chunk.indices = indices
    chunk.indptr = indptr.astype(indices.dtype, copy=False)
    return chunk


def _backed_csr_arrays(X, shape):
    """Return the HDF5 datasets ``(data, indices, indptr)`` behind a backed CSR matrix, or None."""
    group = getattr(X, "group", None)
    if getattr(X, "format", None) != "csr" or group is None or tuple(X.shape) != tuple(shape):
        return None
    try:
        return group["data"], group["indices"], group["indptr"]
    except (KeyError, TypeError):
        return None


def _row_chunks(adata, layer: str | None, chunk_size: int | None):
    """Row chunks as CSR.

    An in-memory CSR matrix is sliced without copying; a backed CSR matrix is
    read chunk by chunk straight from its HDF5 datasets (anndata's own slicing
    adds a few milliseconds of bookkeeping per read); anything else goes
    through :func:`diffbio_sc._validate.iter_row_chunks`.
    """
    from .._settings import settings
    from .._validate import get_matrix, is_backed

    X = get_matrix(adata, layer)
    backed = is_backed(adata)
    arrays = _backed_csr_arrays(X, adata.shape) if backed else None
    in_memory_csr = not backed and sp.issparse(X) and X.format == "csr"
    if arrays is None and not in_memory_csr:
        yield from iter_row_chunks(adata, layer, chunk_size)
        return
    chunk_size = int(chunk_size or settings.chunk_size)
    if chunk_size < 1:
        raise DfmInputError(f"chunk_size must be >= 1, got {chunk_size}.")
    n, n_vars = adata.shape
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if arrays is None:
            indptr = X.indptr[start : stop + 1]
            a, b = int(indptr[0]), int(indptr[-1])
            data, indices = X.data[a:b], X.indices[a:b]
        else:
            d, i, p = arrays
            indptr = np.asarray(p[start : stop + 1])
            a, b = int(indptr[0]), int(indptr[-1])
            data, indices = np.asarray(d[a:b]), np.asarray(i[a:b])
        yield start, stop, _csr_view(data, indices, indptr - a, (stop - start, n_vars))


def validated_chunks(
    adata,
    layer: str | None,
    chunk_size: int | None,
    *,
    require_integer: bool,
    allow_empty: bool = False,
) -> Iterator[tuple[int, int, sp.csr_matrix, np.ndarray]]:
    """Yield ``(start, stop, csr, totals)`` after checking values (and empty cells unless allowed).

    Each chunk is canonical (no duplicate entries, no stored zeros). A chunk
    of an in-memory CSR matrix is a view of the AnnData's arrays, so it is
    copied before anything is changed: callers must treat chunks as read-only.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    for start, stop, chunk in _row_chunks(adata, layer, chunk_size):
        check_values(chunk.data, require_integer=require_integer, where=where)
        if not chunk.has_canonical_format or not chunk.data.all():
            # Sum duplicate entries and drop stored zeros on a private copy.
            chunk = chunk.copy()
            chunk.sum_duplicates()
            chunk.eliminate_zeros()
        totals = row_totals(chunk)
        if not allow_empty:
            check_cells_nonempty(totals, adata.obs_names, start)
        yield start, stop, chunk, totals


def resolve_copy(adata, copy: bool):
    """Return the AnnData to write into (a copy when ``copy=True``)."""
    if copy:
        if getattr(adata, "isbacked", False):
            raise DfmInputError(
                "copy=True is not supported for backed AnnData; load it into memory "
                "(adata.to_memory()) or write results in place with copy=False."
            )
        return adata.copy()
    return adata
