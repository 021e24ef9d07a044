"""Statistics kernels (NumPy/SciPy, no AnnData): AUC, corrected resampled t-test, BH.

Used by ``dfm.tl.logo_attribution`` (module notes there give the protocol).
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc_rows", "nadeau_bengio", "benjamini_hochberg"]


def auc_rows(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores (..., m)`` against binary labels ``y`` (``(m,)`` or ``(..., m)``).

    Ties count one half (Mann-Whitney U). NaN where a row has one class only.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    ranks = rankdata(scores, axis=-1)
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def nadeau_bengio(
    deltas: np.ndarray,
    n_train: float,
    n_test: float,
    *,
    alternative: str = "greater",
    ci: float = 0.95,
) -> dict[str, np.ndarray]:
    """Corrected resampled t-test over the last axis of ``deltas`` (one row per gene).

    Returns ``mean``, ``t``, ``p``, ``ci_low``, ``ci_high`` arrays. A row with
    zero variance gets ``p = 1`` when its mean is 0 (the gene never changes a
    prediction) and ``p = 0`` otherwise.
    """
    from scipy import stats

    d = np.atleast_2d(np.asarray(deltas, dtype=np.float64))
    J = d.shape[-1]
    mean = d.mean(axis=-1)
    var = d.var(axis=-1, ddof=1)
    se = np.sqrt((1.0 / J + n_test / n_train) * var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    df = J - 1
    if alternative == "greater":
        p = stats.t.sf(t, df)
    elif alternative == "less":
        p = stats.t.cdf(t, df)
    else:
        p = 2 * stats.t.sf(np.abs(t), df)
    p = np.where((se == 0) & (mean == 0), 1.0, p)
    half = stats.t.ppf(0.5 + ci / 2, df) * se
    return {"mean": mean, "t": t, "p": p, "ci_low": mean - half, "ci_high": mean + half}


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), monotone and capped at 1."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q
