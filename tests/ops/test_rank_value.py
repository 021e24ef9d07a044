"""``ops._rank_value.rank_value_encode``: the compiled 32-bit-key path, its
quantised-bucket repair and the 64-bit fallbacks give exactly the per-cell rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from diffbio_sc.ops import _rank_value
from diffbio_sc.ops._rank_value import rank_value_encode


@pytest.fixture(autouse=True)
def kernel_from_the_first_call(monkeypatch):
    """The tests below exercise the compiled kernel: no NumPy-first budget."""
    monkeypatch.setattr(_rank_value, "NUMPY_FIRST_NNZ", 0)


def reference(X: sp.csr_matrix, scale, target_sum, max_tokens, pad=-1):
    """The documented per-cell rule: float64 values, compared as float32, ties by gene."""
    X = sp.csr_matrix(X)
    X.sort_indices()
    n = X.shape[0]
    ids = np.full((n, max_tokens), pad, dtype=np.int64)
    vals = np.zeros((n, max_tokens), dtype=np.float32)
    n_tok = np.zeros(n, dtype=np.int64)
    for i in range(n):
        a, b = X.indptr[i], X.indptr[i + 1]
        g, d = X.indices[a:b], X.data[a:b].astype(np.float64)
        total = d.sum()
        v = (scale[g] * d) * (target_sum / total if total > 0 else 0.0)
        v32 = v.astype(np.float32)
        keep = v32 > 0
        g, v32 = g[keep], v32[keep]
        order = np.argsort(-v32, kind="stable")[:max_tokens]
        ids[i, : order.size] = g[order]
        vals[i, : order.size] = v32[order]
        n_tok[i] = order.size
    return ids, vals, n_tok


def colliding_counts(rng, n_cells=40, n_genes=300):
    """Rows whose values span many octaves (a coarse bucket) and also hold many
    values a few float32 steps apart (same bucket, different values), exact ties,
    excluded genes, empty rows and rows of one value."""
    rows = []
    for i in range(n_cells):
        kind = i % 5
        k = int(rng.integers(0, n_genes))
        genes = np.sort(rng.choice(n_genes, size=k, replace=False))
        if kind == 0:  # near-equal large counts plus a tiny and a huge one
            d = 1_000_000 + rng.integers(0, 40, size=k)
            if k >= 2:
                d[0], d[-1] = 1, 10**9
        elif kind == 1:  # heavy exact ties
            d = rng.integers(1, 3, size=k)
        elif kind == 2:  # all equal
            d = np.full(k, 7)
        elif kind == 3:
            d = rng.geometric(0.3, size=k)
        else:  # empty row
            genes, d = genes[:0], genes[:0]
        rows.append((genes, d))
    indptr = np.concatenate([[0], np.cumsum([len(g) for g, _ in rows])])
    indices = np.concatenate([g for g, _ in rows]).astype(np.int32)
    data = np.concatenate([d for _, d in rows]).astype(np.float64)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    scale = np.where(rng.random(n_genes) < 0.1, 0.0, 1.0)  # uniform scale keeps the near ties
    scale[rng.random(n_genes) < 0.3] = 1.0 + 2.0**-20  # a few one-ulp-apart products
    return X, scale


@pytest.mark.parametrize("max_tokens", [1, 3, 17, 400])
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_path_equals_per_cell_rule(seed, max_tokens):
    rng = np.random.default_rng(seed)
    X, scale = colliding_counts(rng)
    assert X.has_sorted_indices
    ids, vals, n_tok = rank_value_encode(X, scale, target_sum=1e4, max_tokens=max_tokens, n_jobs=2)
    exp_ids, exp_vals, exp_n = reference(X, scale, 1e4, max_tokens)
    np.testing.assert_array_equal(ids, exp_ids)
    np.testing.assert_array_equal(vals, exp_vals)
    np.testing.assert_array_equal(n_tok, exp_n)


def test_fallback_paths_equal_compiled_path(monkeypatch):
    """Unsorted column indices, and rows too wide for a 32-bit key, take the 64-bit path."""
    rng = np.random.default_rng(3)
    X, scale = colliding_counts(rng)
    lut = rng.permutation(X.shape[1]) + 10
    fast = rank_value_encode(X, scale, target_sum=1e4, max_tokens=50, lut=lut, pad_value=2)
    # the same matrix with each row's entries reversed (has_sorted_indices False)
    rev = sp.csr_matrix(X)
    for i in range(rev.shape[0]):
        a, b = rev.indptr[i], rev.indptr[i + 1]
        rev.indices[a:b] = rev.indices[a:b][::-1].copy()
        rev.data[a:b] = rev.data[a:b][::-1].copy()
    rev.has_sorted_indices = False
    slow = rank_value_encode(rev, scale, target_sum=1e4, max_tokens=50, lut=lut, pad_value=2)
    monkeypatch.setattr(_rank_value, "_MAX_POS_BITS", 2)
    wide = rank_value_encode(X, scale, target_sum=1e4, max_tokens=50, lut=lut, pad_value=2)
    exp_ids, exp_vals, exp_n = reference(X, scale, 1e4, 50)
    exp_lut = np.where(exp_ids >= 0, lut[np.maximum(exp_ids, 0)], 2)
    for got in (fast, slow, wide):
        np.testing.assert_array_equal(got[0], exp_lut)
        np.testing.assert_array_equal(got[1], exp_vals)
        np.testing.assert_array_equal(got[2], exp_n)


@pytest.mark.parametrize("max_tokens", [5, 700, 2048])
def test_wide_rows_radix_cut_and_long_runs(max_tokens):
    """Rows of 40 to 3,000 entries (one- and two-digit radix sorts, the top-k cut when
    a row holds more than ``max_tokens``), with runs of one bucket longer than the
    64-entry blocks of the repair check and runs that straddle the cut."""
    rng = np.random.default_rng(7)
    n_genes = 3200
    rows = []
    for i, k in enumerate([40, 300, 1500, 2100, 3000, 3000]):
        genes = np.sort(rng.choice(n_genes, size=k, replace=False))
        if i % 2:  # a wide span plus hundreds of values one float32 step apart
            d = np.where(
                rng.random(k) < 0.5, 10**7 + rng.integers(0, 3, size=k), rng.geometric(0.2, size=k)
            )
        else:
            d = rng.geometric(0.05, size=k)
        rows.append((genes, d))
    indptr = np.concatenate([[0], np.cumsum([len(g) for g, _ in rows])])
    X = sp.csr_matrix(
        (
            np.concatenate([d for _, d in rows]).astype(np.float64),
            np.concatenate([g for g, _ in rows]),
            indptr,
        ),
        shape=(len(rows), n_genes),
    )
    scale = np.ones(n_genes)
    scale[rng.random(n_genes) < 0.4] = 1.0 + 2.0**-22  # one-ulp steps between near-equal values
    ids, vals, n_tok = rank_value_encode(X, scale, target_sum=1e4, max_tokens=max_tokens, n_jobs=1)
    exp_ids, exp_vals, exp_n = reference(X, scale, 1e4, max_tokens)
    np.testing.assert_array_equal(ids, exp_ids)
    np.testing.assert_array_equal(vals, exp_vals)
    np.testing.assert_array_equal(n_tok, exp_n)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64, np.float32])
def test_integer_counts_summed_in_the_kernel(dtype, monkeypatch):
    """Integer counts of <= 32 bits are summed per row inside the compiled kernel
    (NumPy's row_totals is not called); every dtype gives the per-cell rule."""
    rng = np.random.default_rng(11)
    X, scale = colliding_counts(rng, n_cells=30)
    X.data = np.minimum(X.data, 60_000)  # fits uint16
    Xd = X.astype(dtype)
    assert Xd.has_sorted_indices
    if np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize <= 4:

        def refuse(*a, **k):
            raise AssertionError("row_totals called for 32-bit integer counts")

        monkeypatch.setattr(_rank_value, "row_totals", refuse)
    got = rank_value_encode(Xd, scale, target_sum=1e4, max_tokens=40, n_jobs=2)
    exp_ids, exp_vals, exp_n = reference(X, scale, 1e4, 40)
    np.testing.assert_array_equal(got[0], exp_ids)
    np.testing.assert_array_equal(got[1], exp_vals)
    np.testing.assert_array_equal(got[2], exp_n)


def test_numpy_path_first_then_the_kernel(monkeypatch):
    """Without ``check=``, a process's first ``NUMPY_FIRST_NNZ`` nonzeros take the NumPy
    path (a small job never loads numba), later calls the kernel, and once the kernel ran
    every call uses it; the tokens are the per-cell rule's on every path."""
    rng = np.random.default_rng(5)
    X, scale = colliding_counts(rng)
    monkeypatch.setattr(_rank_value, "NUMPY_FIRST_NNZ", X.nnz + 1)
    monkeypatch.setattr(_rank_value, "_rented", {"nnz": 0, "kernel": False})
    expected = reference(X, scale, 1e4, 30)
    paths = []
    for _ in range(3):
        got = rank_value_encode(X, scale, target_sum=1e4, max_tokens=30)
        paths.append(dict(_rank_value._rented))
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(g, e)
    # calls 1 and 2 rent (the budget is not yet spent before either), call 3 buys
    assert paths == [
        {"nnz": X.nnz, "kernel": False},
        {"nnz": 2 * X.nnz, "kernel": False},
        {"nnz": 2 * X.nnz, "kernel": True},
    ]
    # a process where the kernel already ran (e.g. a ``check=`` call) skips the budget
    monkeypatch.setattr(_rank_value, "_rented", {"nnz": 0, "kernel": False})
    flags = np.zeros(X.shape[0], dtype=np.uint8)
    rank_value_encode(X, scale, target_sum=1e4, max_tokens=30, check=flags)
    assert _rank_value._rented == {"nnz": 0, "kernel": True}
    got = rank_value_encode(X, scale, target_sum=1e4, max_tokens=30)
    assert _rank_value._rented == {"nnz": 0, "kernel": True}
    np.testing.assert_array_equal(got[0], expected[0])
