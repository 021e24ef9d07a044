"""Host kernels: projection onto the permutahedron by pool-adjacent-violators.

This module runs on the host (NumPy + numba) and is called from the JAX
wrappers in :mod:`._soft_rank` through :func:`jax.pure_callback`. It is imported
only on the first call, so ``import diffbio_sc.ops`` does not import numba.

Reduction (Blondel et al., ICML 2020, "Fast Differentiable Sorting and
Ranking"). For one row with ``m`` valid entries, let ``u`` be the scaled input
(``x / temperature`` for ranks, ``x * temperature`` for sorts) and ``pi`` the
order that sorts ``u`` descending, ties by ascending index. In that order, with
positions ``k = 0..m-1``, define ``t_k = u_{pi_k} + k``. Then

* quadratic soft rank: fit ``t`` by a *non-increasing* isotonic regression;
  on each pooled block ``B``, ``rank(pi_k) = mean_B(u) + mean_B(k) + 1 - u_{pi_k}``
  (1-based, rank 1 = largest);
* quadratic soft sort (scaled by the temperature): fit ``t`` by a
  *non-decreasing* isotonic regression; ``out_k = mean_B(u) + mean_B(k) - k``;
* entropic (KL) soft rank: pool with block value
  ``gamma_B = logsumexp_B(-u) - log(sum_B (k + 1))`` kept non-decreasing;
  ``rank(pi_k) = sum_B (k + 1) * softmax_B(-u)_k``.

The kernel takes ``x`` and the temperature separately and never forms ``u``:
the pooling test compares differences of block means of ``x`` (float64 sums)
with the temperature times differences of mean positions (closed form
``mean_B(k) = (start + end) / 2``), and a block that stays a singleton returns
exactly its hard rank ``k + 1`` (or exactly its own value, for sorts), however
small the temperature.

Every kernel also returns, per original entry, its block id (``n`` for entries
outside the mask) and block size; the JAX backward pass needs nothing else.
"""

from __future__ import annotations

import numba
import numpy as np

_RANK_L2 = 0
_SORT_L2 = 1
_RANK_KL = 2


@numba.njit(cache=True, nogil=True)
def _fix_ties(u_row, perm_row, m):  # pragma: no cover - compiled
    """Reorder runs of equal values in ``perm_row[:m]`` by ascending index."""
    k = 0
    while k < m:
        j = k + 1
        v = u_row[perm_row[k]]
        while j < m and u_row[perm_row[j]] == v:
            j += 1
        if j - k > 1:
            perm_row[k:j] = np.sort(perm_row[k:j])
        k = j


@numba.njit(cache=True, nogil=True)
def _pav_rows(
    x, eps, perm, m, mode, ordinal, fill, out, blk_sorted, blk_orig, bsize
):  # pragma: no cover
    """Run PAV on every row; fill ``out``, ``blk_sorted``, ``blk_orig``, ``bsize``."""
    n_rows, n = x.shape
    b_start = np.empty(n + 1, np.int64)
    b_sum = np.empty(n + 1, np.float64)  # sum of x (L2) or logsumexp of -x / eps (KL)
    for r in range(n_rows):
        mm = m[r]
        p = perm[r]
        e_r = np.float64(eps[r])
        _fix_ties(x[r], p, mm)
        nb = 0
        for k in range(mm):
            val = np.float64(x[r, p[k]])
            b_start[nb] = k
            b_sum[nb] = -val / e_r if mode == _RANK_KL else val
            nb += 1
            while nb >= 2:
                s1 = b_start[nb - 2]
                s2 = b_start[nb - 1]
                c1 = s2 - s1
                c2 = k - s2 + 1
                if mode == _RANK_KL:
                    # gamma = lse(-x / eps) - log(sum of (k + 1)); merge if it decreases
                    w1 = 0.5 * c1 * (s1 + s2 + 1)
                    w2 = 0.5 * c2 * (s2 + k + 2)
                    viol = (b_sum[nb - 2] - np.log(w1)) > (b_sum[nb - 1] - np.log(w2))
                else:
                    d_x = b_sum[nb - 2] / c1 - b_sum[nb - 1] / c2
                    d_k = 0.5 * (c1 + c2)
                    if mode == _RANK_L2:
                        viol = d_x < e_r * d_k
                    else:
                        viol = e_r * d_x > d_k
                if not viol:
                    break
                if mode == _RANK_KL:
                    a = b_sum[nb - 2]
                    b = b_sum[nb - 1]
                    hi = a if a > b else b
                    b_sum[nb - 2] = hi + np.log(np.exp(a - hi) + np.exp(b - hi))
                else:
                    b_sum[nb - 2] += b_sum[nb - 1]
                nb -= 1
        # write outputs block by block
        for b in range(nb):
            s = b_start[b]
            e = b_start[b + 1] - 1 if b + 1 < nb else mm - 1
            c = e - s + 1
            k_mean = 0.5 * (s + e)
            x_mean = b_sum[b] / c
            for k in range(s, e + 1):
                j = p[k]
                blk_orig[r, j] = b
                blk_sorted[r, k] = b
                bsize[r, j] = c
                if mode == _RANK_L2:
                    if c == 1:
                        out[r, j] = k + 1.0
                    else:
                        out[r, j] = k_mean + 1.0 + (x_mean - np.float64(x[r, j])) / e_r
                elif mode == _SORT_L2:
                    if c == 1:
                        out[r, k] = x[r, j]
                    else:
                        out[r, k] = x_mean + (k_mean - k) / e_r
                else:
                    w_b = 0.5 * c * (s + e + 2)
                    out[r, j] = w_b * np.exp(-np.float64(x[r, j]) / e_r - b_sum[b])
        if ordinal and mode != _SORT_L2:
            # exact ties: spread the (equal) average ranks to ordinal ranks by index
            k = 0
            while k < mm:
                j = k + 1
                v = x[r, p[k]]
                while j < mm and x[r, p[j]] == v:
                    j += 1
                if j - k > 1:
                    centre = 0.5 * (j - k - 1)
                    for q in range(k, j):
                        out[r, p[q]] += (q - k) - centre
                k = j
        for k in range(mm, n):
            j = p[k]
            blk_orig[r, j] = n
            blk_sorted[r, k] = n
            bsize[r, j] = 1
            if mode == _SORT_L2:
                out[r, k] = fill
            else:
                out[r, j] = fill


def project(
    x: np.ndarray,
    eps: np.ndarray,
    mask: np.ndarray | None,
    *,
    mode: int,
    ordinal: bool = False,
    fill: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the permutahedron projection on the last axis of ``x``.

    Parameters
    ----------
    x
        Input ``(..., n)``, float32 or float64.
    eps
        Temperature per row, shape ``x.shape[:-1]`` (or broadcastable to it).
    mask
        Bool ``(..., n)`` of entries to rank, or ``None`` for all.
    mode
        ``0`` quadratic rank, ``1`` quadratic sort, ``2`` entropic rank.
    ordinal
        Rank modes: break exact ties by ascending index (offsets that sum to 0
        within each tie group) instead of sharing the average rank.
    fill
        Value written for entries outside the mask (rank modes: at those
        entries; sort mode: at the trailing sorted positions).

    Returns
    -------
    out
        Ranks in original order (rank modes) or the scaled soft sort in sorted
        order (sort mode), dtype of ``u``.
    blk_sorted
        int32 block id per sorted position (``n`` past the valid entries).
    blk_orig
        int32 block id per original entry (``n`` outside the mask).
    bsize
        Block size per original entry (1 outside the mask), dtype of ``x``.
    """
    x = np.asarray(x)
    shape = x.shape
    n = shape[-1]
    x2 = np.ascontiguousarray(x.reshape(-1, n))
    eps2 = np.ascontiguousarray(np.broadcast_to(np.asarray(eps), shape[:-1]).reshape(-1))
    if mask is None:
        perm = np.argsort(-x2, axis=-1)
        m = np.full(x2.shape[0], n, dtype=np.int64)
    else:
        mask2 = np.asarray(mask, dtype=bool).reshape(-1, n)
        perm = np.argsort(np.where(mask2, -x2, np.inf), axis=-1)
        m = mask2.sum(axis=-1).astype(np.int64)
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    out = np.empty_like(x2)
    blk_sorted = np.empty(x2.shape, np.int32)
    blk_orig = np.empty(x2.shape, np.int32)
    bsize = np.empty_like(x2)
    if n and x2.shape[0]:
        _pav_rows(
            x2,
            eps2.astype(x2.dtype),
            perm,
            m,
            mode,
            ordinal,
            x2.dtype.type(fill),
            out,
            blk_sorted,
            blk_orig,
            bsize,
        )
    return (
        out.reshape(shape),
        blk_sorted.reshape(shape),
        blk_orig.reshape(shape),
        bsize.reshape(shape),
    )
