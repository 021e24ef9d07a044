"""Statistics kernels in ops: AUC, corrected resampled t-test, Benjamini-Hochberg (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest

from diffbio_sc.ops._stats import auc_rows, benjamini_hochberg, nadeau_bengio


def test_auc_rows_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(40) < 0.4
    S = rng.integers(0, 5, size=(6, 40)).astype(float)  # many ties
    got = auc_rows(S, y)
    want = [roc_auc_score(y, s) for s in S]
    np.testing.assert_allclose(got, want)
    Y = np.stack([y, ~y])  # one labeling per row
    np.testing.assert_allclose(auc_rows(S[:2], Y), [want[0], 1 - want[1]])


def test_benjamini_hochberg_hand_computed():
    # sorted p 0.01, 0.03, 0.04, 0.5 -> p*m/rank 0.04, 0.06, 0.0533, 0.5 -> running min from the top
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert benjamini_hochberg(np.array([0.9, 0.99]))[1] == 0.99
    # sorted 0.005, 0.02, 0.04, 0.1 (m=4) -> 0.02, 0.04, 0.0533, 0.1, already monotone
    q = benjamini_hochberg(np.array([0.005, 0.04, 0.02, 0.1]))
    np.testing.assert_allclose(q, [0.02, 0.16 / 3, 0.04, 0.1])
    # evenly spaced p-values all get the largest: 0.01 * 5 / 1 ... 0.05 * 5 / 5
    np.testing.assert_allclose(benjamini_hochberg(np.arange(1, 6) / 100), [0.05] * 5)
    # ties share their q-value; p * m / rank above 1 is capped
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.6, 0.6, 0.6])), [0.6] * 3)
    assert (benjamini_hochberg(np.array([1.0, 1.0, 0.9])) <= 1.0).all()


def test_nadeau_bengio_hand_computed():
    from scipy import stats

    d = np.array([[0.1, 0.2, 0.0, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    out = nadeau_bengio(d, n_train=80, n_test=20, alternative="greater", ci=0.9)
    m, s2 = 0.1, np.var(d[0], ddof=1)
    se = np.sqrt((1 / 5 + 20 / 80) * s2)
    assert out["t"][0] == pytest.approx(m / se)
    assert out["p"][0] == pytest.approx(stats.t.sf(m / se, 4))
    assert out["ci_low"][0] == pytest.approx(m - stats.t.ppf(0.95, 4) * se)
    assert out["p"][1] == 1.0 and out["t"][1] == 0.0  # a gene that never changes anything


def test_auc_rows_hand_computed():
    # positives score 3 and 1, negatives 2 and 1: pairs (3>2, 3>1, 1<2, 1=1) -> (1+1+0+0.5)/4
    assert auc_rows(np.array([3.0, 1.0, 2.0, 1.0]), np.array([1, 1, 0, 0]))[()] == 0.625
    assert np.isnan(auc_rows(np.array([1.0, 2.0]), np.array([1, 1])))  # one class only
