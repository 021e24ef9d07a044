"""Shared pieces of the pp writers: chunk streaming with validation, copy handling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from .._validate import DfmInputError, check_cells_nonempty, check_values, iter_row_chunks
from ._kernels import row_totals


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
    for start, stop, chunk in iter_row_chunks(adata, layer, chunk_size):
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
