"""Per-cell differentiable (soft) ranks of expressed genes, written as a layer."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _keys, _uns
from .._logging import timed
from .._settings import settings
from .._validate import (
    DfmInputError,
    check_adata,
    check_bool,
    check_choice,
    check_copy,
    check_float,
    check_int,
    check_key,
    iter_row_chunks,
    resolve_copy,
    validated_chunks,
)

# Upper bound on padded entries (cells x width) per chunk when chunk_size is None.
_MAX_CHUNK_ENTRIES = 1 << 22
_WIDTH_MULTIPLE = 8


def _check_params(temperature, descending, regularization, chunk_size, key_added) -> float:
    t = check_float("temperature", temperature, minimum=0.0, strict_min=True)
    f32 = np.finfo(np.float32)
    if not (float(f32.tiny) <= t <= float(f32.max)):
        # the kernel runs in float32: a smaller value is flushed to 0 (NaN gradients, ties
        # no longer pooled), a larger one becomes infinite
        raise DfmInputError(
            f"temperature={temperature!r} is outside the float32 range the ranks are computed "
            f"in ({float(f32.tiny):.3g} .. {float(f32.max):.3g}); rescale the values instead."
        )
    check_bool("descending", descending)
    check_choice("regularization", regularization, ("l2", "kl"))
    check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    check_key("key_added", key_added)
    return t


def _check_float32_range(chunk: sp.csr_matrix, where: str) -> None:
    """Refuse values beyond float32: the kernel ranks in float32, where they all tie at inf."""
    big = float(np.finfo(np.float32).max)
    if chunk.nnz and float(chunk.data.max()) > big:
        raise DfmInputError(
            f"{where} holds values up to {float(chunk.data.max()):.3g}, beyond the float32 "
            f"range ({big:.3g}) the soft ranks are computed in: they would all become "
            "infinite and tie. Rescale them first (e.g. np.log1p, or divide by a constant)."
        )


def _padded(chunk: sp.csr_matrix, rows: int, width: int):
    """Left-align each row's stored values in a ``(rows, width)`` block.

    Returns the values, the mask of filled slots and the ``(row, slot)`` index
    of every stored entry (in CSR order), to read the results back.
    """
    counts = np.diff(chunk.indptr)
    r = np.repeat(np.arange(chunk.shape[0]), counts)
    c = np.arange(chunk.nnz) - np.repeat(chunk.indptr[:-1], counts)
    vals = np.zeros((rows, width), dtype=np.float32)
    mask = np.zeros((rows, width), dtype=bool)
    vals[r, c] = chunk.data
    mask[r, c] = True
    return vals, mask, (r, c)


def soft_rank(
    adata,
    *,
    layer: str | None = None,
    temperature: float = 1.0,
    descending: bool = True,
    regularization: str = "l2",
    chunk_size: int | None = None,
    key_added: str = _keys.SOFT_RANK_KEY,
    copy: bool = False,
):
    """Soft (differentiable) rank of each cell's expressed genes.

    Within each cell, the genes with a nonzero value are ranked among
    themselves with :func:`diffbio_sc.ops.soft_rank` (projection onto the
    permutahedron, Blondel et al. 2020); zeros are left out of the ranking so
    that a cell's thousands of unexpressed genes do not shift the ranks of its
    expressed ones (masked ranking). Ranks are 1-based: with
    ``descending=True`` the most highly expressed gene of a cell gets rank
    about 1 and its least expressed about ``m`` (``m`` = number of expressed
    genes); tied values share their average rank. Every soft rank lies in
    ``[1, m]``, so stored ranks are never 0 and **zeros stay zero**: the
    output has exactly the sparsity pattern of the input's nonzero entries.

    As ``temperature -> 0`` the ranks become the hard ranks
    (``scipy.stats.rankdata(-values)`` per cell, 'average' ties); larger
    temperatures pool genes whose values differ by less than about
    ``temperature`` (in the units of the chosen matrix) into shared,
    interpolated ranks. A cell's ranks depend on that cell alone.

    Cells are streamed in fixed-shape padded chunks (cells x the largest
    number of expressed genes in any cell), so the kernel compiles once; a
    backed AnnData (``backed='r'``) is read one chunk at a time (twice: once to
    validate, once to rank). Everything is validated before anything is
    written: on error the AnnData is unchanged.

    Parameters
    ----------
    adata
        Expression (cells x genes) in ``.X`` or ``layer``: counts or any
        non-negative values (e.g. log-normalised). Dense, CSR, CSC or backed.
    layer
        Layer to rank instead of ``.X``.
    temperature
        Soft-rank temperature (positive), in the units of the values.
    descending
        Rank 1 for the highest value (default) or for the lowest nonzero value.
    regularization
        ``'l2'`` (quadratic, default) or ``'kl'`` (entropic).
    chunk_size
        Cells per chunk. Default: ``dfm.settings.chunk_size``, reduced so that a
        padded chunk holds at most 2**22 entries.
    key_added
        ``.layers`` key to write.
    copy
        Return a modified copy instead of writing in place (not for backed AnnData).

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``. Writes

    ``.layers[key_added]``
        CSR float32 matrix with the sparsity pattern of the input's nonzero
        entries (explicitly stored zeros are dropped): soft ranks in
        ``[1, m]`` at expressed genes, 0 elsewhere.
    ``.uns['dfm']['soft_rank'][key_added]``
        one record per ``key_added``: ``temperature``, ``descending``, ``regularization``, ``layer``,
        ``key_added``, ``chunk_size``, ``width`` (padded genes per chunk row),
        ``n_cells``, the conventions (``ranked``, ``fill_value``) and
        ``created_by`` (provenance).

    Raises
    ------
    DfmInputError
        Negative, NaN or infinite values; cells without any nonzero value;
        invalid parameters.

    Examples
    --------
    >>> import diffbio_sc as dfm
    >>> adata = dfm.datasets.synthetic_counts(50, 100, seed=0)
    >>> dfm.pp.soft_rank(adata, temperature=0.1)
    >>> adata.layers["dfm_soft_rank"].nnz == adata.X.nnz
    True
    """
    check_adata(adata)
    t = _check_params(temperature, descending, regularization, chunk_size, key_added)
    check_copy(adata, copy)
    import jax.numpy as jnp

    from ..ops._soft_rank import soft_rank_compiled

    with timed(f"soft-ranking expressed genes per cell (temperature={t:g})") as info:
        # pass 1: validate every chunk (values, empty cells) and find the width
        read_chunk = chunk_size if chunk_size is not None else settings.chunk_size
        width = 0
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        for _, _, chunk, _ in validated_chunks(
            adata, layer, read_chunk, require_integer=False, allow_empty=False
        ):
            _check_float32_range(chunk, where)
            width = max(width, int(np.diff(chunk.indptr).max(initial=0)))
        width = max(_WIDTH_MULTIPLE, -(-width // _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE)
        if chunk_size is None:
            rows = max(1, min(settings.chunk_size, _MAX_CHUNK_ENTRIES // width))
        else:
            rows = int(chunk_size)
        rows = min(rows, adata.n_obs)

        t32 = jnp.float32(t)
        opts = {"descending": bool(descending), "regularization": regularization}
        # pass 2: rank fixed-shape padded chunks
        parts = []
        for _, _, chunk in iter_row_chunks(adata, layer, rows):
            chunk = sp.csr_matrix(chunk, dtype=np.float32, copy=True)
            chunk.sum_duplicates()  # canonical, as validated in pass 1
            chunk.eliminate_zeros()
            vals, mask, (r, c) = _padded(chunk, rows, width)
            # one module-level jitted kernel: compiled once per (rows, width) and options
            ranks = np.asarray(soft_rank_compiled(vals, mask, t32, **opts))
            parts.append(
                sp.csr_matrix(
                    (ranks[r, c].astype(np.float32), chunk.indices.copy(), chunk.indptr.copy()),
                    shape=chunk.shape,
                )
            )
        result = sp.vstack(parts, format="csr", dtype=np.float32)

        record = {
            "temperature": t,
            "descending": bool(descending),
            "regularization": regularization,
            "layer": layer if layer is not None else "X",
            "key_added": key_added,
            "chunk_size": int(rows),
            "width": int(width),
            "n_cells": int(adata.n_obs),
            "ranked": "nonzero entries of each cell, among themselves (masked ranking)",
            "rank_convention": "1-based; 1 = highest value"
            if descending
            else "1-based; 1 = lowest nonzero value",
            "fill_value": 0.0,
            "method": "projection onto the permutahedron (Blondel et al. 2020), PAV",
            "created_by": _uns.provenance("pp.soft_rank"),
        }
        out = resolve_copy(adata, copy)
        out.layers[key_added] = result
        _uns.set_record(out, _keys.UNS_SOFT_RANK, key_added, record)
        info["added"] = [
            f".layers[{key_added!r}]",
            f".uns['dfm'][{_keys.UNS_SOFT_RANK!r}][{key_added!r}]",
        ]
    return out if copy else None
