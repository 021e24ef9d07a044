"""kNN-graph agreement between two embeddings of the same cells (a label-free stability score).

Used by :func:`diffbio_sc.tl.pretrain` to follow how much the representation of a
fixed held-out subsample still changes from one epoch to the next.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_agreement", "knn_indices"]


def knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the ``k`` nearest other rows of every row of ``X`` (Euclidean, exact).

    Ties are broken by row index (stable sort), so the result is deterministic.
    Returns an ``(n, min(k, n - 1))`` int64 array; a row is never its own neighbour.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}.")
    n = X.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        return np.zeros((n, 0), np.int64)
    sq = np.sum(X * X, axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)


def knn_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each row's neighbours shared by two kNN index arrays.

    ``a`` and ``b`` are ``(n, k)`` outputs of :func:`knn_indices` for two
    embeddings of the same ``n`` cells: 1.0 when every cell has the same ``k``
    neighbours in both, about ``k / (n - 1)`` for unrelated embeddings.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"neighbour arrays differ in shape: {a.shape} vs {b.shape}.")
    if a.size == 0:
        return 1.0
    n, k = a.shape
    rows = np.repeat(np.arange(n), k)
    ma = np.zeros((n, n), bool)
    mb = np.zeros((n, n), bool)
    ma[rows, a.ravel()] = True
    mb[rows, b.ravel()] = True
    return float(np.mean(np.sum(ma & mb, axis=1) / k))
