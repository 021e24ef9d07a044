"""scGPT-style per-cell expression bins."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .. import _keys, _uns
from .._logging import timed
from .._validate import (
    _preview,
    check_adata,
    check_copy,
    check_int,
    check_key,
    check_seed,
    resolve_copy,
    validated_chunks,
)
from ..ops._plan import BinPlan

logger = logging.getLogger("diffbio_sc")


def bin_expression(
    adata,
    *,
    n_bins: int = 51,
    layer: str | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    key_added: str = _keys.BINS_KEY,
    copy: bool = False,
):
    """Bin each cell's nonzero expression into per-cell quantile bins (scGPT's value binning).

    For every cell, the ``n_bins - 1`` bin edges are the quantiles of that
    cell's own nonzero values at ``linspace(0, 1, n_bins - 1)`` (linear
    interpolation, as ``np.quantile``). Zeros get bin 0 and nonzero values
    bins ``1 .. n_bins - 1``, so bins are comparable across cells whatever
    their depth. A value that equals one or more edges (ties, common with
    counts) can belong to several bins; as in scGPT, its bin is drawn
    uniformly among them. The draw depends only on ``seed``, the cell's name
    and the gene's column, so a cell gets the same bins whichever other cells
    are in the AnnData and in whatever order (subsetting keeps its bins). A cell
    whose nonzero values are all equal has all edges tied, so its values are
    spread over all bins by that draw (scGPT behaves the same).

    Parameters
    ----------
    adata
        Expression (cells x genes) in ``.X`` or ``layer``: counts or any
        non-negative values (e.g. log-normalised). Dense, CSR, CSC or backed.
    n_bins
        Number of bins including the zero bin (scGPT uses 51). 2 <= n_bins <= 32767.
    layer
        Layer to use instead of ``.X``.
    seed
        Seed for the tie-breaking draws.
    chunk_size
        Cells per chunk (default ``dfm.settings.chunk_size``).
    key_added
        ``.layers`` key to write.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``. Writes

    ``.layers[key_added]``
        CSR int16 matrix with the same sparsity pattern as the input (explicit
        zeros dropped): bin 0 for zeros, 1..n_bins-1 for nonzero values.
    ``.uns['dfm']['bins'][key_added]``
        n_bins, seed, layer, key_added, tie-breaking rule, provenance (one
        record per ``key_added``).

    Cells without any nonzero value are allowed (all bin 0) and reported in a warning.
    """
    check_adata(adata)
    n_bins = check_int("n_bins", n_bins, minimum=2, maximum=32767)
    seed = check_seed(seed)
    check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    check_key("key_added", key_added)
    check_copy(adata, copy)
    with timed(f"binning expression into {n_bins} bins") as info:
        plan = BinPlan(n_bins=n_bins, seed=seed)
        keys = plan.cell_keys(adata.obs_names)
        parts = []
        n_empty = []
        for start, stop, chunk, totals in validated_chunks(
            adata, layer, chunk_size, require_integer=False, allow_empty=True
        ):
            parts.append(plan.bins(chunk, keys[start:stop]))
            n_empty.extend(np.flatnonzero(totals <= 0) + start)
        bins = sp.vstack(parts, format="csr").astype(np.int16)
        if n_empty:
            logger.warning(
                "%d cells have no nonzero values (all bin 0), e.g. %s",
                len(n_empty),
                _preview(adata.obs_names[np.asarray(n_empty)]),
            )
        record = {
            "n_bins": n_bins,
            "seed": int(seed),
            "layer": layer if layer is not None else "X",
            "key_added": key_added,
            "edges": "per-cell quantiles of nonzero values, linspace(0, 1, n_bins - 1)",
            "tie_breaking": "uniform among tied bins; draw keyed by seed, obs_name and gene",
            "n_empty_cells": len(n_empty),
            "created_by": _uns.provenance("pp.bin_expression"),
        }
        out = resolve_copy(adata, copy)
        out.layers[key_added] = bins
        _uns.set_record(out, _keys.UNS_BINS, key_added, record)
        info["added"] = [f".layers[{key_added!r}]", f".uns['dfm']['bins'][{key_added!r}]"]
    return out if copy else None
