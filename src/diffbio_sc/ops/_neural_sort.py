"""NeuralSort: the n x n relaxed sorting matrix of Grover et al. (ICLR 2019)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _compilation_cache
from ._soft_rank import _as_float, _check_temperature, _temperature_array

_compilation_cache.enable()

__all__ = ["neural_sort"]


def neural_sort(x, *, temperature: float = 1.0) -> jax.Array:
    """Relaxed (unimodal row-stochastic) permutation matrix that sorts ``x`` descending.

    Row ``i`` (0-based) of the result is
    ``softmax(((n - 1 - 2 i) * x - sum_k |x - x_k|) / temperature)``, a soft
    one-hot vector over the entries that picks the ``i``-th largest. Hence
    ``P @ x`` is a soft descending sort and ``P.T @ arange(1, n + 1)`` are soft
    1-based descending ranks; as ``temperature -> 0``, ``P`` tends to the hard
    permutation matrix (for distinct values).

    Time and memory are O(n^2) per row (the n x n matrix is materialised, and
    so is its gradient): use it for small n and for comparison;
    :func:`soft_rank` and :func:`soft_sort` are O(n log n) / O(n).

    Parameters
    ----------
    x
        Values, shape ``(..., n)``.
    temperature
        Softmax temperature, a positive scalar, in the units of ``x``.

    Returns
    -------
    Array of shape ``(..., n, n)``: rows are sorted positions, columns entries.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from diffbio_sc.ops import neural_sort
    >>> P = neural_sort(jnp.array([0.1, 3.0, 2.0]), temperature=1e-3)
    >>> P.round(3).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    x = _as_float(x)
    _check_temperature(temperature)
    n = x.shape[-1]
    pair_sum = jnp.sum(jnp.abs(x[..., :, None] - x[..., None, :]), axis=-1)  # (..., n)
    scale = (n - 1 - 2 * jnp.arange(n, dtype=x.dtype))[:, None]  # (n, 1)
    logits = (scale * x[..., None, :] - pair_sum[..., None, :]) / _temperature_array(
        temperature, x.dtype
    )
    return jax.nn.softmax(logits, axis=-1)
