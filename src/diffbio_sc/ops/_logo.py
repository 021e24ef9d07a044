"""Leave-one-gene-out fold kernels (NumPy, no AnnData) behind ``dfm.tl.logo_attribution``.

Held-out decision scores of PCA + ridge (or logistic) fitted on Gram matrices
(:func:`fold_scores`) or on feature covariances (:func:`fold_scores_primal`);
the derivation is in the notes of :mod:`diffbio_sc.tl._genetics._logo`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_scores", "fold_scores_primal"]


def _center(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre train Grams ``A (v, n, n)`` and test-train Grams ``B (v, m, n)``.

    Both are centred on the training mean in feature space.
    """
    col = A.mean(axis=-2, keepdims=True)  # (v, 1, n)
    row = A.mean(axis=-1, keepdims=True)  # (v, n, 1)
    tot = A.mean(axis=(-2, -1), keepdims=True)
    Ac = A - col - row + tot
    Bc = B - col - B.mean(axis=-1, keepdims=True) + tot
    return Ac, Bc


def fold_scores(
    Ks: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    Y_tr: np.ndarray,
    *,
    n_components: int,
    alpha: float,
    classifier: str,
    n_features: int | None = None,
) -> np.ndarray:
    """Held-out decision scores ``(v, n_test, n_labelings)`` for each Gram in ``Ks (v, n, n)``.

    ``Y_tr (n_train, n_labelings)`` holds boolean labelings of the training
    subjects (the observed one first, then permutations); the ridge fit is
    linear in the labels, so all labelings share one factorisation per Gram.
    """
    A = Ks[:, tr[:, None], tr]  # one gather, no intermediate copy
    B = Ks[:, te[:, None], tr]
    Ac, Bc = _center(A, B)
    n_tr = tr.size
    Yc = np.where(Y_tr, 1.0, -1.0)
    Yc = Yc - Yc.mean(axis=0, keepdims=True)
    trace = np.trace(Ac, axis1=-2, axis2=-1)
    lam = alpha * np.maximum(trace, 1e-300) / n_tr
    lossless = n_components >= min(n_tr, n_features or n_tr)
    if classifier == "ridge" and lossless:
        # scores = Bc (Ac + lam I)^-1 Yc; solve for the (test x train) map first, so the
        # many labelings cost one matrix product.
        M = np.linalg.solve(
            Ac + lam[:, None, None] * np.eye(n_tr), Bc.transpose(0, 2, 1)
        ).transpose(0, 2, 1)
        return M @ Yc
    e, U = np.linalg.eigh(Ac)  # ascending
    e, U = e[:, ::-1], U[:, :, ::-1]
    k = min(n_components, n_tr)
    e, U = e[:, :k], U[:, :, :k]
    keep = e > np.maximum(e[:, :1] * n_tr * np.finfo(np.float64).eps, 0)
    if classifier == "ridge":
        w = np.where(keep, 1.0 / (e + lam[:, None]), 0.0)  # (v, k)
        M = ((Bc @ U) * w[:, None, :]) @ U.transpose(0, 2, 1)  # (v, m, n_train)
        return M @ Yc
    from sklearn.linear_model import LogisticRegression

    out = np.empty((len(Ks), te.size, Y_tr.shape[1]))
    for v in range(len(Ks)):
        kv = keep[v]
        s = np.sqrt(e[v, kv])
        Z_tr = U[v][:, kv] * s
        Z_te = (Bc[v] @ U[v][:, kv]) / s
        scale = Z_tr.std(axis=0)
        scale[scale == 0] = 1.0
        for j in range(Y_tr.shape[1]):
            model = LogisticRegression(C=1.0 / alpha, max_iter=5000)
            model.fit(Z_tr / scale, Y_tr[:, j])
            out[v, :, j] = model.decision_function(Z_te / scale)
    return out


def fold_scores_primal(
    X: np.ndarray,
    G: int,
    tr: np.ndarray,
    te: np.ndarray,
    Y_tr: np.ndarray,
    *,
    n_components: int,
    alpha: float,
) -> np.ndarray:
    """Compute the scores of :func:`fold_scores` (ridge) from features, not Gram matrices.

    Used when there are fewer features than subjects: the work is on
    ``(features x features)`` covariance matrices and memory does not grow with
    the square of the cohort. With ``n_components`` below the number of
    features the PCA axes are the top eigenvectors of each variant's training
    covariance; otherwise the PCA is lossless and ridge is solved directly.
    """
    n_tr, D = tr.size, X.shape[1]
    d = D // G
    mu = X[tr].mean(axis=0)
    Xtr, Xte = X[tr] - mu, X[te] - mu
    Yc = np.where(Y_tr, 1.0, -1.0)
    Yc = Yc - Yc.mean(axis=0, keepdims=True)
    C = Xtr.T @ Xtr  # (D, D)
    XtY = Xtr.T @ Yc  # (D, L)
    keep = np.ones((G + 1, D), dtype=bool)
    for g in range(G):
        keep[g + 1, g * d : (g + 1) * d] = False
    out = np.empty((G + 1, te.size, Yc.shape[1]))
    eye_full, eye_minus = np.eye(D), np.eye(D - d)
    for v in range(G + 1):
        cols = np.flatnonzero(keep[v])
        Cv = C[np.ix_(cols, cols)]
        lam = alpha * max(np.trace(Cv), 1e-300) / n_tr
        if n_components >= min(n_tr, cols.size):
            eye = eye_full if v == 0 else eye_minus
            # (Cv + lam I) is symmetric: solve for whichever side has fewer columns.
            if te.size < XtY.shape[1]:
                out[v] = np.linalg.solve(Cv + lam * eye, Xte[:, cols].T).T @ XtY[cols]
            else:
                out[v] = Xte[:, cols] @ np.linalg.solve(Cv + lam * eye, XtY[cols])
            continue
        e, V = np.linalg.eigh(Cv)
        e, V = e[::-1][:n_components], V[:, ::-1][:, :n_components]
        ok = e > max(e[0], 0.0) * cols.size * np.finfo(np.float64).eps
        W = V[:, ok] @ ((V[:, ok].T @ XtY[cols]) / (e[ok] + lam)[:, None])
        out[v] = Xte[:, cols] @ W
    return out
