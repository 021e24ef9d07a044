"""Soft rank-value tokens: a differentiable relaxation of Geneformer's tokenization."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from .. import _compilation_cache
from ._soft_rank import (
    _as_float,
    _check_temperature,
    _prepare_mask,
    _soft_rank_ordinal,
    _temperature_array,
)

_compilation_cache.enable()

__all__ = ["soft_rank_value_tokens"]

DEFAULT_KEEP_TEMPERATURE = 0.5


def soft_rank_value_tokens(
    values,
    mask=None,
    *,
    max_tokens: int,
    temperature: float = 1e-2,
    keep_temperature: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Soft descending ranks and soft top-``max_tokens`` membership per cell.

    The hard rank-value encoding (:func:`diffbio_sc.pp.tokenize`) orders a
    cell's expressed genes by their normalised, median-scaled expression
    (``counts / cell total * target_sum / gene median``), highest first, ties
    by gene order, and keeps the first ``max_tokens``. This function returns a
    differentiable version of both steps:

    * ``ranks``: 0-based soft descending ranks among the masked genes
      (:func:`soft_rank` with quadratic regularisation, minus one), where genes
      with exactly equal values are ordered by gene index (constant offsets
      around their shared average rank, zero gradient), so the hard limit is
      the stable ordering. These offsets make the ranks jump (by at most
      half the tie group's size) where values tie exactly; everywhere else
      the ranks are continuous and piecewise linear in ``values``. Unmasked
      genes get the fill value ``n_genes`` and a zero gradient.
    * ``keep``: ``sigmoid((max_tokens - 0.5 - ranks) / keep_temperature)`` on
      masked genes, 0 elsewhere; a soft indicator of "among the first
      ``max_tokens``".

    As ``temperature -> 0`` the ranks become the hard ranks, and the genes with
    ``keep > 0.5``, ordered by ``ranks``, are exactly the tokens of
    ``dfm.pp.tokenize`` for any ``keep_temperature``. The ranks are exactly
    hard once, for every two adjacent distinct values of a cell (gap ``d``,
    with ``c1`` and ``c2`` tied copies), ``temperature * (c1 + c2) / 2 < d``;
    e.g. ``temperature`` below the smallest gap divided by the size of the
    largest tie group. A group of tied genes pools with its neighbours like a
    heavier block, so the smallest gap alone is not enough.

    Parameters
    ----------
    values
        Float array ``(..., n_genes)`` of normalised, median-scaled expression.
    mask
        Boolean ``(..., n_genes)``: genes that may be tokens. Default
        ``values > 0`` (a gene with scale 0, i.e. excluded, has value 0).
    max_tokens
        Number of genes kept per cell (a Python int >= 1).
    temperature
        Soft-rank temperature, in the units of ``values``: genes whose values
        differ by much more than ``temperature`` get ranks one apart.
    keep_temperature
        Width of the soft top-k boundary, in ranks (default 0.5).

    Returns
    -------
    ranks
        Soft 0-based ranks, shape and dtype of ``values`` (``n_genes`` outside the mask).
    keep
        Soft membership weights in ``[0, 1]``, same shape (0 outside the mask).
    """
    values = _as_float(values)
    try:
        max_tokens = operator.index(max_tokens)
    except TypeError:
        raise TypeError(f"max_tokens must be an int, got {type(max_tokens).__name__}.") from None
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}.")
    _check_temperature(temperature)
    if keep_temperature is None:
        keep_temperature = DEFAULT_KEEP_TEMPERATURE
    _check_temperature(keep_temperature, "keep_temperature")
    mask = values > 0 if mask is None else _prepare_mask(mask, values)
    n_genes = values.shape[-1]
    if n_genes == 0:
        return values, values
    eps = _temperature_array(temperature, values.dtype)
    ranks1 = _soft_rank_ordinal(values, eps, mask)
    ranks = jnp.where(mask, ranks1 - 1, jnp.asarray(n_genes, values.dtype))
    kt = jnp.asarray(keep_temperature, dtype=values.dtype)
    keep = jnp.where(mask, jax.nn.sigmoid((max_tokens - 0.5 - ranks) / kt), 0)
    return ranks, keep.astype(values.dtype)
