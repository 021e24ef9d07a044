"""Subject projection kernel (NumPy, no AnnData) behind ``dfm.tl.embed_genes``."""

from __future__ import annotations

import numpy as np

from ._threads import single_thread_blas

__all__ = ["project_subjects"]


def project_subjects(
    X: np.ndarray, train: np.ndarray, *, method, n_components: int, seed: int
) -> tuple[np.ndarray, dict]:
    """Project subject vectors to ``n_components`` dims, fitted on the ``train`` rows only.

    ``'pca'``: centre on the training mean, keep the top principal axes of the
    training rows (at most ``n_train - 1`` carry information; the rest of the
    ``n_components`` columns are zero, recorded as ``n_informative``).
    ``'random'``: centre on the training mean and multiply by a seeded Gaussian
    matrix scaled by ``1/sqrt(n_components)`` (a Johnson-Lindenstrauss map).
    Returns the projection and its parameters (``mean``, ``components``).
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X[train].mean(axis=0)
    Xc = X - mean
    if method == "pca":
        Xt = Xc[train]
        if Xt.shape[1] > Xt.shape[0]:
            # Wide data: principal axes from the (n_train x n_train) Gram matrix.
            with single_thread_blas(Xt.shape[0]):
                e, U = np.linalg.eigh(Xt @ Xt.T)
            e, U = e[::-1], U[:, ::-1]
            tol = max(e[0], 0.0) * max(Xt.shape) * np.finfo(np.float64).eps
            r = int((e > tol).sum())
            v = (Xt.T @ U[:, :r]) / np.sqrt(e[:r])
        else:
            with single_thread_blas(Xt.shape[1]):
                _, sv, vt = np.linalg.svd(Xt, full_matrices=False)
            tol = sv.max(initial=0.0) * max(Xt.shape) * np.finfo(np.float64).eps
            v = vt[: int((sv > tol).sum())].T
        k = int(min(n_components, v.shape[1]))
        v = v[:, :k]
        comps = np.zeros((X.shape[1], n_components))
        # Sign convention: the largest-magnitude loading of each axis is positive.
        signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(k)])
        signs[signs == 0] = 1.0
        comps[:, :k] = v * signs
    else:
        rng = np.random.default_rng(seed)
        comps = rng.standard_normal((X.shape[1], n_components)) / np.sqrt(n_components)
        k = n_components
    Z = (Xc @ comps).astype(np.float32)
    return Z, {
        "method": method,
        "n_components": n_components,
        "n_informative": k,
        "n_train": int(train.sum()),
        "mean": mean.astype(np.float32),
        "components": comps.astype(np.float32),
    }
