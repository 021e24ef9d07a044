"""Soft rank and soft sort: projection onto the permutahedron (Blondel et al. 2020).

The forward pass sorts each row and runs pool-adjacent-violators (PAV) on the
host, in a compiled kernel (:mod:`._pav`) behind :func:`jax.pure_callback`; it
takes O(n log n) time and O(n) memory per row. The backward pass is pure JAX
and O(n): the Jacobian of isotonic regression averages within the pooled
blocks, so the vector-Jacobian product is a segment sum over the block ids that
the forward pass returns, and a gather.

The callback makes the functions safe under ``jit``, ``vmap`` (the kernel takes
any number of leading batch axes) and ``grad`` (custom VJP). On GPU or TPU the
forward pass round-trips through host memory; the backward pass runs on the
device.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compilation_cache

_compilation_cache.enable()

__all__ = ["soft_rank", "soft_sort"]

_MODE_RANK_L2 = 0
_MODE_SORT_L2 = 1
_MODE_RANK_KL = 2
_REGULARIZATIONS = ("l2", "kl")


# --------------------------------------------------------------------------- helpers
def _check_representable(x) -> None:
    """Refuse concrete values that overflow the dtype JAX will compute in.

    Without ``jax_enable_x64``, float64 input is computed in float32, where
    1e100, 1e200 and 1e300 all become ``inf`` and would rank as ties.
    """
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return
    arr = np.asarray(x)
    # integers (|x| < 2**64) and floats of at most 32 bits always fit float32
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4 or arr.size == 0:
        return
    target = jnp.dtype(jnp.result_type(float))  # float32 unless jax_enable_x64
    big = float(np.finfo(target).max)
    finite = np.abs(arr[np.isfinite(arr)])
    if finite.size and float(finite.max()) > big:
        raise ValueError(
            f"x holds values up to {float(finite.max()):.3g}, beyond the {target.name} range "
            f"({big:.3g}) JAX computes in here; they would become infinite and rank as ties. "
            "Rescale the values (e.g. np.log1p) or enable float64 with "
            "jax.config.update('jax_enable_x64', True)."
        )


def _as_float(x) -> jax.Array:
    _check_representable(x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 0:
        raise ValueError(
            "Expected an array with at least one axis (values to rank along the last "
            "axis), got a scalar. Wrap it, e.g. jnp.atleast_1d(x)."
        )
    return x


def _check_temperature(temperature, name: str = "temperature") -> None:
    if jnp.ndim(temperature) != 0:
        raise ValueError(
            f"{name} must be a scalar, got shape {jnp.shape(temperature)}. For one "
            "temperature per row, jax.vmap over the rows."
        )
    try:
        value = float(temperature)
    except Exception:  # a tracer: checked by the caller's own program
        return
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {temperature!r}.")


def _temperature_array(temperature, dtype, name: str = "temperature") -> jax.Array:
    """``temperature`` as a scalar of ``dtype``; a concrete value must stay positive and finite.

    A temperature below the dtype's smallest normal number (e.g. ``1e-40`` for
    float32) would be flushed to 0 on the device and give NaN gradients; one
    above its largest would become infinite. Both are refused here.
    """
    try:
        value = float(temperature)
    except Exception:  # a tracer: checked by the caller's own program
        return jnp.asarray(temperature, dtype=dtype)
    info = jnp.finfo(dtype)
    if not (float(info.tiny) <= value <= float(info.max)):
        raise ValueError(
            f"{name}={temperature!r} is not representable in {jnp.dtype(dtype).name} (normal "
            f"range {float(info.tiny):.3g} .. {float(info.max):.3g}); rescale the input "
            "or use float64 (jax.enable_x64)."
        )
    return jnp.asarray(temperature, dtype=dtype)


def _check_regularization(regularization: str) -> bool:
    if regularization not in _REGULARIZATIONS:
        raise ValueError(
            f"regularization must be one of {_REGULARIZATIONS}, got {regularization!r}."
        )
    return regularization == "kl"


def _prepare_mask(mask, x: jax.Array):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"mask must be a boolean array, got dtype {mask.dtype}. Pass e.g. mask=x > 0."
        )
    try:
        return jnp.broadcast_to(mask, x.shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to the input shape {x.shape}."
        ) from None


def _kernel_dtype(dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == jnp.float64 else np.dtype(np.float32)


def _project(x: jax.Array, eps: jax.Array, mask, *, mode: int, ordinal: bool, fill: float):
    """Call the host PAV kernel; returns ``(out, blk_sorted, blk_orig, bsize)``."""
    dtype = x.dtype
    kdtype = _kernel_dtype(dtype)
    x_k = x.astype(kdtype)
    eps_rows = jnp.broadcast_to(eps.astype(kdtype), x.shape[:-1])
    shapes = (
        jax.ShapeDtypeStruct(x.shape, kdtype),
        jax.ShapeDtypeStruct(x.shape, np.int32),
        jax.ShapeDtypeStruct(x.shape, np.int32),
        jax.ShapeDtypeStruct(x.shape, kdtype),
    )

    def host(x_np, eps_np, *maybe_mask):
        from ._pav import project

        m = maybe_mask[0] if maybe_mask else None
        return project(x_np, eps_np, m, mode=mode, ordinal=ordinal, fill=fill)

    args = (x_k, eps_rows) if mask is None else (x_k, eps_rows, mask)
    out, blk_sorted, blk_orig, bsize = jax.pure_callback(
        host, shapes, *args, vmap_method="broadcast_all"
    )
    return out.astype(dtype), blk_sorted, blk_orig, bsize.astype(dtype)


def _segment_sum_rows(values: jax.Array, seg: jax.Array) -> jax.Array:
    """Per-row sums of ``values`` over segment ids ``seg`` in ``[0, n]`` -> ``(..., n + 1)``."""
    n = values.shape[-1]
    rows = math.prod(values.shape[:-1])
    offsets = (jnp.arange(rows, dtype=jnp.int32) * (n + 1))[:, None]
    ids = seg.reshape(rows, n) + offsets
    sums = jax.ops.segment_sum(values.reshape(-1), ids.reshape(-1), num_segments=rows * (n + 1))
    return sums.reshape(*values.shape[:-1], n + 1)


def _gather_rows(table: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take_along_axis(table, idx, axis=-1)


# --------------------------------------------------------------------------- rank
@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _rank_core(x, eps, mask, kl: bool, ordinal: bool, fill: float):
    return _rank_fwd(x, eps, mask, kl, ordinal, fill)[0]


def _rank_fwd(x, eps, mask, kl, ordinal, fill):
    mode = _MODE_RANK_KL if kl else _MODE_RANK_L2
    out, _, blk, bsize = _project(x, eps, mask, mode=mode, ordinal=ordinal, fill=fill)
    return out, (x, eps, mask, out, blk, bsize)


def _rank_bwd(kl, ordinal, fill, res, g):
    x, eps, mask, out, blk, bsize = res
    if kl:
        # out_j = W_B softmax_B(-x / eps)_j  ->  d out / d x = -(diag(out) - out p^T) / eps
        valid = blk < x.shape[-1]
        w = jnp.where(valid, out, 0)
        s_b = _gather_rows(_segment_sum_rows(g * w, blk), blk)
        w_b = _gather_rows(_segment_sum_rows(w, blk), blk)
        w_b = jnp.where(w_b == 0, 1, w_b)
        gx = -w * (g - s_b / w_b) / eps
    else:
        # out = mean_B(x / eps) - x / eps + const  ->  d out / d x = (A - I) / eps
        g_mean = _gather_rows(_segment_sum_rows(g, blk), blk) / bsize
        gx = (g_mean - g) / eps
    if mask is not None:
        gx = jnp.where(mask, gx, 0)
    # ranks depend on x / eps only: eps d/d eps = -x . d/dx
    geps = -jnp.sum(gx * x) / eps
    return gx, geps.astype(jnp.result_type(eps)).reshape(jnp.shape(eps)), None


_rank_core.defvjp(_rank_fwd, _rank_bwd)


# --------------------------------------------------------------------------- sort
@jax.custom_vjp
def _sort_core(x, eps, mask):
    return _sort_fwd(x, eps, mask)[0]


def _sort_fwd(x, eps, mask):
    out, blk_s, blk_o, bsize = _project(x, eps, mask, mode=_MODE_SORT_L2, ordinal=False, fill=0.0)
    return out, (x, eps, mask, out, blk_s, blk_o, bsize)


def _sort_bwd(res, g):
    x, eps, mask, out, blk_s, blk_o, bsize = res
    # out_k = mean_B(x) + (mean_B(k) - k) / eps  ->  d out / d x averages within blocks
    gx = _gather_rows(_segment_sum_rows(g, blk_s), blk_o) / bsize
    if mask is not None:
        gx = jnp.where(mask, gx, 0)
    # out(c x, eps / c) = c out(x, eps)  ->  eps d out / d eps = J x - out
    geps = (jnp.sum(gx * x) - jnp.sum(g * out)) / eps
    return gx, geps.astype(jnp.result_type(eps)).reshape(jnp.shape(eps)), None


_sort_core.defvjp(_sort_fwd, _sort_bwd)


# --------------------------------------------------------------------------- public
def soft_rank(
    x,
    *,
    temperature: float = 1.0,
    descending: bool = True,
    regularization: str = "l2",
    mask=None,
) -> jax.Array:
    """Differentiable ranks along the last axis (projection onto the permutahedron).

    Ranks are 1-based. With ``descending=True`` rank 1 goes to the largest
    value (``scipy.stats.rankdata(-x)``); with ``descending=False`` to the
    smallest. As ``temperature -> 0`` the result converges to the hard ranks,
    with tied values sharing their average rank (``rankdata``'s ``'average'``
    method); as ``temperature -> inf`` every rank tends to the mean rank
    ``(n + 1) / 2``. The temperature is in the units of ``x``: two values whose
    difference is well above ``temperature`` get ranks one apart, values
    closer than that share a pooled, smoothly interpolated rank.

    This is the soft rank of Blondel et al. (ICML 2020): with quadratic
    regularisation, the Euclidean projection of ``-x / temperature`` onto the
    permutahedron of ``(n, ..., 1)``; with ``regularization='kl'``, its entropic
    (KL) counterpart (ranks within a pooled block are a softmax of
    ``-x / temperature`` scaled to the block's total rank). Forward pass
    O(n log n) time and O(n) memory per row (a host sort plus pool-adjacent-
    violators, through :func:`jax.pure_callback`); backward pass O(n) in JAX.
    Safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (first-order reverse
    mode; forward-mode ``jvp``/``jacfwd`` and higher-order derivatives are not
    supported by the custom VJP), for float32 and float64. On an accelerator
    the forward pass runs on the host.

    Masked ranking (``mask=``): only entries where ``mask`` is True are ranked,
    among themselves (ranks ``1..m`` for ``m`` masked entries per row, so a
    row's zeros, left out of the mask, do not shift the ranks of its expressed
    genes). Entries outside the mask get the fill value ``0`` and a zero
    gradient. Rows may have different numbers of masked entries, also under
    ``vmap``.

    Parameters
    ----------
    x
        Values, shape ``(..., n)``; ranked along the last axis. Must be finite.
        Integer input is cast to the default float dtype.
    temperature
        Regularisation strength, a positive scalar (may be a traced value; the
        gradient with respect to it is returned).
    descending
        Rank 1 for the largest value (default) or for the smallest.
    regularization
        ``'l2'`` (quadratic, default) or ``'kl'`` (entropic).
    mask
        Optional boolean array broadcastable to ``x.shape``: entries to rank.

    Returns
    -------
    Soft ranks, same shape and dtype as ``x`` (``0`` outside the mask).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from diffbio_sc.ops import soft_rank
    >>> soft_rank(jnp.array([0.1, 3.0, 2.0]), temperature=1e-3).tolist()
    [3.0, 1.0, 2.0]
    """
    x = _as_float(x)
    _check_temperature(temperature)
    kl = _check_regularization(regularization)
    mask = _prepare_mask(mask, x)
    if x.shape[-1] == 0:
        return x
    eps = _temperature_array(temperature, x.dtype)
    xx = x if descending else -x
    return _rank_core(xx, eps, mask, kl, False, 0.0)


@partial(jax.jit, static_argnames=("descending", "regularization"))
def soft_rank_compiled(x, mask, temperature, *, descending=True, regularization="l2"):
    """:func:`soft_rank` with a mask, as one module-level ``jax.jit`` function.

    Compiled once per input shape and dtype, mask shape, ``descending`` and
    ``regularization``; the temperature is a traced scalar, so a new temperature
    does not recompile. Kernels that call the soft rank on a stream of
    fixed-shape chunks (``dfm.pp.soft_rank``) use this one function instead of
    building a ``jax.jit`` per call, which would compile at every call.

    Parameters
    ----------
    x
        Values, shape ``(..., n)``, ranked along the last axis.
    mask
        Boolean array of the shape of ``x``: entries to rank.
    temperature
        Positive scalar (a float32 array for float32 ``x``); not checked here:
        the caller checks a concrete value first.
    descending, regularization
        As for :func:`soft_rank` (static).

    Returns
    -------
    Soft ranks, as :func:`soft_rank` returns them.
    """
    return soft_rank(
        x,
        temperature=temperature,
        descending=descending,
        regularization=regularization,
        mask=mask,
    )


def soft_sort(
    x,
    *,
    temperature: float = 1.0,
    descending: bool = True,
    regularization: str = "l2",
    mask=None,
) -> jax.Array:
    """Differentiable sort along the last axis (projection onto the permutahedron).

    As ``temperature -> 0`` the result converges to ``x`` sorted (descending by
    default); as ``temperature -> inf`` every entry tends to the mean of ``x``.
    Following Blondel et al. (ICML 2020), the soft sort is the Euclidean
    projection of ``(n, ..., 1) / temperature`` onto the permutahedron of ``x``.
    Within a pooled block the output is an arithmetic progression with step
    ``1 / temperature`` around the block mean, so here, unlike in
    :func:`soft_rank`, the temperature has the units of ``1 / x``: consecutive
    sorted values further apart than ``1 / temperature`` get pooled. The output
    always has the same sum as ``x`` (over the masked entries).

    Complexity and transformations as for :func:`soft_rank` (O(n log n) forward
    on the host, O(n) backward in JAX; ``jit``, ``vmap``, ``grad``).

    Masked sort (``mask=``): the ``m`` masked entries of a row are soft-sorted
    into its first ``m`` positions; the remaining positions hold ``0``, and
    entries outside the mask get a zero gradient.

    Parameters
    ----------
    x
        Values, shape ``(..., n)``; sorted along the last axis. Must be finite.
    temperature
        Regularisation strength, a positive scalar.
    descending
        Sort largest first (default) or smallest first.
    regularization
        ``'l2'`` (quadratic). The entropic variant is offered for
        :func:`soft_rank` only: for sorting it requires positive values.
    mask
        Optional boolean array broadcastable to ``x.shape``: entries to sort.

    Returns
    -------
    Soft-sorted values, same shape and dtype as ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from diffbio_sc.ops import soft_sort
    >>> soft_sort(jnp.array([0.5, 3.0, 2.0]), temperature=0.1).tolist()
    [3.0, 2.0, 0.5]
    """
    x = _as_float(x)
    _check_temperature(temperature)
    if regularization != "l2":
        _check_regularization(regularization)
        raise ValueError(
            "soft_sort supports regularization='l2' only (the entropic projection "
            "needs strictly positive values); use soft_rank(..., regularization='kl') "
            "for entropic ranks."
        )
    mask = _prepare_mask(mask, x)
    if x.shape[-1] == 0:
        return x
    eps = _temperature_array(temperature, x.dtype)
    if descending:
        return _sort_core(x, eps, mask)
    return -_sort_core(-x, eps, mask)


def _soft_rank_ordinal(x: jax.Array, eps: jax.Array, mask) -> jax.Array:
    """Quadratic descending 1-based soft ranks whose exact ties are ordered by index.

    Exact ties get their average rank plus constant offsets ``q - (size - 1) / 2``
    (``q`` = position of the entry among its ties by index), so the hard limit
    is the ordinal ranking of a stable sort. Used by :func:`soft_rank_value_tokens`.
    """
    return _rank_core(x, eps, mask, False, True, 0.0)
