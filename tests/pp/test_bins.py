"""Tests for ``dfm.pp.bin_expression`` (scGPT-style per-cell quantile bins).

The reference is written below with the documented linear quantiles
(:func:`linear_quantiles`, numpy's formula written out) and ``np.digitize`` per
cell: for distinct values no draw is involved and the bins must match exactly;
for tied values the bin must lie in scGPT's range
``digitize(x, edges, right=True) + 1 .. digitize(x, edges)``.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

HYP = hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_adata(X, *, obs_names=None, var_names=None) -> ad.AnnData:
    n, g = X.shape
    obs = pd.DataFrame(
        index=list(obs_names) if obs_names is not None else [f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame(
        index=list(var_names) if var_names is not None else [f"g{j}" for j in range(g)]
    )
    return ad.AnnData(X=X, obs=obs, var=var)


def as_dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def linear_quantiles(v: np.ndarray, n_edges: int) -> np.ndarray:
    """Quantiles of ``v`` at ``linspace(0, 1, n_edges)``, linear interpolation, written out.

    The documented rule (numpy's 'linear' method, as ``np.quantile`` computes it
    since NumPy 1.22): position ``p = q (n - 1)`` in the sorted values, ``a, b``
    the values at ``floor(p)`` and the next, ``t = p - floor(p)``; the edge is
    ``a + (b - a) t``, or ``b - (b - a)(1 - t)`` when ``t >= 0.5``. Written here so
    that the reference does not move with NumPy's implementation.
    """
    v = np.sort(np.asarray(v, dtype=np.float64))
    pos = np.linspace(0.0, 1.0, n_edges) * (v.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, v.size - 1)
    t = pos - lo
    a, b = v[lo], v[hi]
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def reference_bounds(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: (lowest, highest) allowed bin of every entry of the row ``x`` (0 for zeros)."""
    lo = np.zeros(x.size, dtype=np.int64)
    hi = np.zeros(x.size, dtype=np.int64)
    nz = x > 0
    if nz.any():
        v = x[nz]
        edges = linear_quantiles(v, n_bins - 1)
        left = np.digitize(v, edges)  # edges <= v
        right = np.digitize(v, edges, right=True)  # edges < v
        lo[nz] = np.where(right < left, right + 1, left)
        hi[nz] = left
    return lo, hi


def reference_distinct(X, n_bins: int) -> np.ndarray:
    """Exact bins for rows whose nonzero values are distinct: np.digitize against the quantiles."""
    X = as_dense(X)
    out = np.zeros(X.shape, dtype=np.int64)
    for i, x in enumerate(X):
        nz = x > 0
        if nz.sum() >= 2:
            edges = linear_quantiles(x[nz], n_bins - 1)
            out[i, nz] = np.digitize(x[nz], edges)
    return out


def bins_of(adata, **kw) -> np.ndarray:
    dfm.pp.bin_expression(adata, **kw)
    return adata.layers[kw.get("key_added", "dfm_bins")].toarray()


# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_distinct_values():
    # cell 0 nonzeros 1..5, n_bins=5 -> 4 edges at quantiles 0, 1/3, 2/3, 1:
    #   positions 0, 4/3, 8/3, 4 -> edges [1, 2 1/3, 3 2/3, 5]
    #   digitize: 1 -> 1, 2 -> 1, 3 -> 2, 4 -> 3, 5 -> 4 (5 sits on the last edge only)
    # cell 1: the same ranks on another scale and in other columns -> the same bins there
    X = np.array([[0, 1, 2, 3, 4, 5], [50, 10, 0, 40, 20, 30]], dtype=float)
    adata = make_adata(sp.csr_matrix(X))
    b = bins_of(adata, n_bins=5)
    np.testing.assert_array_equal(b, [[0, 1, 1, 2, 3, 4], [4, 1, 0, 3, 1, 2]])
    layer = adata.layers["dfm_bins"]
    assert sp.issparse(layer) and layer.format == "csr" and layer.dtype == np.int16
    meta = adata.uns["dfm"]["bins"]["dfm_bins"]
    assert meta["n_bins"] == 5 and meta["seed"] == 0 and meta["layer"] == "X"
    assert (
        meta["n_empty_cells"] == 0
        and meta["created_by"]["function"] == "diffbio_sc.pp.bin_expression"
    )


def test_values_on_edges_follow_np_quantile():
    # n distinct values with n_bins = n + 1: mathematically the n edges sit on the
    # values (quantile positions 0, 1, ..., n - 1) and each value lands in the bin of
    # its rank. In floating point the position 0.6 * 5 is 3.0000000000000004, and
    # np.quantile's interpolation (a + (b - a) t) then puts the 4th edge of row 0 one
    # ulp above 21, so 21 shares bin 3 with 11. The documented rule is "as
    # np.quantile", so that is what we expect; a naive a (1 - t) + b t interpolation
    # gets all three rows wrong.
    X = np.array(
        [
            [2, 10, 29, 28, 11, 21],
            [16, 21, 12, 26, 15, 17],
            [20, 11, 21, 12, 26, 19],
        ],
        dtype=float,
    )
    b = bins_of(make_adata(sp.csr_matrix(X)), n_bins=7)
    np.testing.assert_array_equal(b, reference_distinct(X, 7))
    assert linear_quantiles(X[0], 6)[3] == np.nextafter(21.0, np.inf)  # the ulp above 21
    ranks = np.argsort(np.argsort(X, axis=1), axis=1) + 1
    np.testing.assert_array_equal(b[1:], ranks[1:])
    np.testing.assert_array_equal(b[0], [1, 2, 6, 5, 3, 3])


def test_hand_computed_two_bins_and_default():
    X = np.array([[0, 3, 1, 2]])
    np.testing.assert_array_equal(bins_of(make_adata(sp.csr_matrix(X)), n_bins=2), [[0, 1, 1, 1]])
    # default n_bins=51: min -> 1, max -> 50
    b = bins_of(make_adata(sp.csr_matrix(X)))
    assert b[0, 2] == 1 and b[0, 1] == 50 and 1 < b[0, 3] < 50


def test_tie_case_draws_uniformly_among_tied_bins():
    # nonzeros [1, 1, 1, 2], n_bins=5 -> edges at positions 0, 1, 2, 3 = [1, 1, 1, 2]
    #   value 1 equals three edges: digitize right=True -> 0, left -> 3: bin drawn from {1, 2, 3}
    #   value 2: right=True -> 3, left -> 4: bin 4 whatever the seed
    X = np.array([[1, 0, 1, 1, 2]])
    seen = []
    for seed in range(150):
        b = bins_of(make_adata(sp.csr_matrix(X)), n_bins=5, seed=seed)[0]
        assert b[1] == 0 and b[4] == 4
        seen.append(b[[0, 2, 3]])
    seen = np.array(seen)
    assert set(np.unique(seen)) == {1, 2, 3}
    counts = np.bincount(seen.ravel(), minlength=4)[1:]
    assert counts.min() > 0.2 * seen.size  # roughly uniform (expected 1/3 each)
    # deterministic for a seed
    a1 = bins_of(make_adata(sp.csr_matrix(X)), n_bins=5, seed=7)
    a2 = bins_of(make_adata(sp.csr_matrix(X)), n_bins=5, seed=7)
    np.testing.assert_array_equal(a1, a2)


def test_all_equal_values_spread_over_all_bins():
    # every edge equals the value: right=True -> 0, left -> n_bins - 1, so any of 1..n_bins-1
    X = np.array([[3, 3, 0, 3, 3, 3, 3, 3, 3]])
    draws = np.concatenate(
        [bins_of(make_adata(sp.csr_matrix(X)), n_bins=4, seed=s)[0] for s in range(40)]
    )
    nz = np.tile(X[0] > 0, 40)
    assert (draws[~nz] == 0).all()
    assert set(np.unique(draws[nz])) == {1, 2, 3}


# --------------------------------------------------------------------------- properties


@st.composite
def distinct_rows(draw):
    n = draw(st.integers(1, 5))
    g = draw(st.integers(2, 12))
    rows = []
    for _ in range(n):
        k = draw(st.integers(2, g))
        vals = draw(st.lists(st.integers(1, 10**6), min_size=k, max_size=k, unique=True))
        cols = draw(st.permutations(range(g)))[:k]
        row = np.zeros(g)
        row[cols] = vals
        rows.append(row)
    X = np.array(rows)
    if draw(st.booleans()):
        X = X / 8.0  # non-integer, exactly representable
    return X


@HYP
@given(
    distinct_rows(),
    st.integers(2, 60),
    st.integers(0, 2**31),
    st.sampled_from(["csr", "csc", "dense"]),
)
def test_distinct_values_match_quantile_digitize(X, n_bins, seed, fmt):
    Xf = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](X)
    b = bins_of(make_adata(Xf), n_bins=n_bins, seed=seed)
    np.testing.assert_array_equal(b, reference_distinct(X, n_bins))


@st.composite
def tied_rows(draw):
    n = draw(st.integers(1, 5))
    g = draw(st.integers(1, 15))
    X = np.array(draw(st.lists(st.integers(0, 4), min_size=n * g, max_size=n * g)), dtype=float)
    return X.reshape(n, g)


@HYP
@given(tied_rows(), st.integers(2, 30), st.integers(0, 2**31), st.integers(1, 3))
def test_any_values_fall_in_scgpt_range(X, n_bins, seed, chunk_size):
    b = bins_of(make_adata(sp.csr_matrix(X)), n_bins=n_bins, seed=seed, chunk_size=chunk_size)
    for i, x in enumerate(X):
        lo, hi = reference_bounds(x, n_bins)
        assert ((b[i] >= lo) & (b[i] <= hi)).all(), (x, b[i], lo, hi)


# --------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def synth():
    return dfm.datasets.synthetic_counts(90, 150, seed=5)


def test_input_formats_agree(synth, input_format):
    """Every storage (conftest.INPUT_FORMATS) gives the bins of the in-memory CSR."""
    expected = bins_of(synth.copy(), seed=3)
    adata, layer = input_format(synth)
    b = bins_of(adata, seed=3, layer=layer, chunk_size=32)
    np.testing.assert_array_equal(b, expected)
    assert adata.layers["dfm_bins"].nnz == synth.X.nnz  # explicit zeros dropped


def test_explicit_zeros_stay_in_the_input_and_leave_the_result(synth):
    X = synth.X.tocsr().copy()
    X.data[::4] = 0  # stored zeros: not expressed
    adata = make_adata(X, obs_names=synth.obs_names, var_names=synth.var_names)
    b = bins_of(adata, seed=3)
    Xd = as_dense(X)
    for i in range(Xd.shape[0]):
        lo, hi = reference_bounds(Xd[i], 51)
        assert ((b[i] >= lo) & (b[i] <= hi)).all()
    assert (adata.X.data == 0).sum() == (X.data == 0).sum()  # zeros still stored
    assert adata.layers["dfm_bins"].nnz == (Xd > 0).sum()  # zeros dropped from the result


def test_sparsity_pattern_follows_input(synth):
    adata = synth.copy()
    dfm.pp.bin_expression(adata)
    bins = adata.layers["dfm_bins"]
    X = synth.X.tocsr()
    np.testing.assert_array_equal(bins.indptr, X.indptr)
    np.testing.assert_array_equal(bins.indices, X.indices)
    assert (bins.data >= 1).all() and (bins.data <= 50).all()


def test_chunk_sizes_agree(synth):
    results = [bins_of(synth.copy(), seed=1, chunk_size=c) for c in (1, 7, 100_000)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_cell_bins_depend_only_on_that_cell(synth):
    full = bins_of(synth.copy(), seed=11)
    idx = np.random.default_rng(0).permutation(synth.n_obs)[:31]
    sub = bins_of(synth[idx].copy(), seed=11)
    np.testing.assert_array_equal(sub, full[idx])


def test_seed_determinism_and_effect(synth):
    a = bins_of(synth.copy(), seed=0)
    b = bins_of(synth.copy(), seed=0)
    c = bins_of(synth.copy(), seed=1)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()  # counts have ties, so some draws change
    assert ((a > 0) == (c > 0)).all()


def test_seed_has_no_effect_without_ties():
    X = np.array([[0, 1, 2, 3, 7, 9, 11], [4, 0, 8, 15, 16, 23, 42]], dtype=float)
    a = bins_of(make_adata(sp.csr_matrix(X)), n_bins=6, seed=0)
    b = bins_of(make_adata(sp.csr_matrix(X)), n_bins=6, seed=12345)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, reference_distinct(X, 6))


def test_empty_cells_warn_and_stay_zero(dfm_log):
    X = np.array([[0, 0, 0], [1, 2, 3], [0, 0, 0]])
    adata = make_adata(sp.csr_matrix(X))
    b = bins_of(adata, n_bins=4)
    assert (b[[0, 2]] == 0).all()
    np.testing.assert_array_equal(b[1], [1, 2, 3])
    assert adata.uns["dfm"]["bins"]["dfm_bins"]["n_empty_cells"] == 2
    text = "\n".join(r.getMessage() for r in dfm_log.records if r.levelno >= logging.WARNING)
    assert "2 cells have no nonzero values" in text and "'c0'" in text and "'c2'" in text


def test_copy_and_key_added(synth):
    adata = synth.copy()
    out = dfm.pp.bin_expression(adata, key_added="b", copy=True)
    assert "b" in out.layers and "b" not in adata.layers and "dfm" not in adata.uns
    assert out.uns["dfm"]["bins"]["b"]["key_added"] == "b"
    assert dfm.pp.bin_expression(adata, key_added="b") is None
    assert (adata.layers["b"] != out.layers["b"]).nnz == 0


def test_backed_matches_in_memory(synth, tmp_path):
    path = tmp_path / "counts.h5ad"
    synth.write_h5ad(path)
    mem = bins_of(synth.copy(), seed=2)
    backed = ad.read_h5ad(path, backed="r")
    try:
        np.testing.assert_array_equal(bins_of(backed, seed=2, chunk_size=17), mem)
    finally:
        backed.file.close()


# --------------------------------------------------------------------------- bad input


@pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")
@pytest.mark.parametrize(
    ("name", "msg"),
    [
        ("negative", "negative"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("empty", "empty"),
        ("dup_obs", "duplicate obs_names"),
        ("dup_var", "duplicate var_names"),
        ("missing_layer", "Layer 'counts' not found"),
        ("n_bins_small", "n_bins must be >= 2"),
        ("n_bins_large", "n_bins must be <= 32767"),
        ("n_bins_float", "n_bins must be an integer"),
    ],
)
def test_bad_input_rejected_and_adata_unchanged(name, msg):
    X = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0], [5.0, 0.0, 1.0]])
    kw = {}
    obs_names = var_names = None
    if name == "negative":
        X[2, 2] = -1
    elif name == "nan":
        X[1, 1] = np.nan
    elif name == "inf":
        X[0, 0] = np.inf
    elif name == "empty":
        X = X[:, :0]
    elif name == "dup_obs":
        obs_names = ["a", "a", "b"]
    elif name == "dup_var":
        var_names = ["x", "y", "y"]
    elif name == "missing_layer":
        kw = {"layer": "counts"}
    elif name == "n_bins_small":
        kw = {"n_bins": 1}
    elif name == "n_bins_large":
        kw = {"n_bins": 40_000}
    elif name == "n_bins_float":
        kw = {"n_bins": 10.5}
    adata = make_adata(sp.csr_matrix(X), obs_names=obs_names, var_names=var_names)
    adata.layers["other"] = adata.X.copy()
    adata.uns["dfm"] = {"bins": {"n_bins": 3}}
    before = adata.copy()
    with pytest.raises((TypeError, DfmInputError), match=msg):
        dfm.pp.bin_expression(adata, **kw)
    for attr in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(adata.X, attr), getattr(before.X, attr))
    assert list(adata.layers) == ["other"]
    assert adata.uns["dfm"] == {"bins": {"n_bins": 3}}


# --------------------------------------------------------------------------- h5ad and real data


def test_h5ad_round_trip(synth, tmp_path):
    adata = synth.copy()
    dfm.pp.bin_expression(adata, n_bins=21, seed=4)
    path = tmp_path / "bins.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert sp.issparse(back.layers["dfm_bins"]) and back.layers["dfm_bins"].dtype == np.int16
    assert (back.layers["dfm_bins"] != adata.layers["dfm_bins"]).nnz == 0
    meta, meta_back = adata.uns["dfm"]["bins"]["dfm_bins"], back.uns["dfm"]["bins"]["dfm_bins"]
    assert set(meta) == set(meta_back)
    for k in meta:
        assert meta_back[k] == meta[k], k


def _check_against_reference(adata, bins, n_bins, sample):
    X = adata.X.tocsr()
    for i in sample:
        x = X[i].toarray().ravel().astype(np.float64)
        lo, hi = reference_bounds(x, n_bins)
        b = bins[i].toarray().ravel()
        np.testing.assert_array_less(lo - 1, b)
        np.testing.assert_array_less(b, hi + 1)
        nz = x > 0
        assert b[nz].min() >= 1 and b[nz].max() == n_bins - 1  # the largest value is in the top bin
        # entries off any edge tie are exact: lo == hi
        exact = nz & (lo == hi)
        np.testing.assert_array_equal(b[exact], hi[exact])


def test_real_pbmc_against_reference(pbmc_path):
    adata = ad.read_h5ad(pbmc_path)
    dfm.pp.bin_expression(adata)
    bins = adata.layers["dfm_bins"]
    sample = np.random.default_rng(0).choice(adata.n_obs, 50, replace=False)
    _check_against_reference(adata, bins, 51, sample)
    # subsetting a batch keeps every cell's bins
    batch = adata.obs["batch"].astype(str).to_numpy()
    sub = adata[batch == batch[0]].copy()
    dfm.pp.bin_expression(sub)
    assert (sub.layers["dfm_bins"] != bins[np.flatnonzero(batch == batch[0])]).nnz == 0


def test_bundled_demo_against_reference():
    adata = dfm.datasets.celllines_demo()
    dfm.pp.bin_expression(adata, n_bins=11, seed=5)
    sample = np.random.default_rng(1).choice(adata.n_obs, 30, replace=False)
    _check_against_reference(adata, adata.layers["dfm_bins"], 11, sample)
