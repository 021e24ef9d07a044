"""Tests for ``dfm.pp.gene_medians`` (per-gene nonzero medians of normalised counts).

Expectations are hand-computed or come from ``np.median`` over each gene's
nonzero normalised values, written out below.
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

# Every cell totals 10, so with target_sum=10 the normalised values are the counts.
HAND_X = np.array(
    [
        [1, 2, 0, 7],
        [3, 0, 0, 7],
        [0, 4, 0, 6],
        [5, 1, 0, 4],
    ]
)
# g0: {1, 3, 5} -> 3 (odd count); g1: {2, 4, 1} -> 2; g2: expressed nowhere -> NaN;
# g3: {7, 7, 6, 4} -> (6 + 7) / 2 = 6.5 (even count)
HAND_MEDIANS = np.array([3.0, 2.0, np.nan, 6.5])


def make_adata(X, *, var_names=None, obs_names=None) -> ad.AnnData:
    n, g = X.shape
    obs = pd.DataFrame(
        index=list(obs_names) if obs_names is not None else [f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame(
        index=list(var_names) if var_names is not None else [f"g{j}" for j in range(g)]
    )
    return ad.AnnData(X=X, obs=obs, var=var)


def reference_medians(X, target_sum: float) -> np.ndarray:
    """``np.median`` of each gene's nonzero values after scaling every cell to ``target_sum``."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    totals = X.sum(axis=1)
    out = np.full(X.shape[1], np.nan)
    for j in range(X.shape[1]):
        cells = X[:, j] > 0
        if cells.any():
            out[j] = np.median(X[cells, j] / totals[cells] * target_sum)
    return out


def assert_same_medians(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    # values are kept as float32 before the median (8 bytes per nonzero)
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=2e-7)


# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_odd_even_and_unexpressed():
    adata = make_adata(sp.csr_matrix(HAND_X))
    dfm.pp.gene_medians(adata, target_sum=10)
    med = adata.var["dfm_median"].to_numpy()
    assert med.dtype == np.float64
    np.testing.assert_array_equal(med, HAND_MEDIANS)  # exact: small integers
    meta = adata.uns["dfm"]["gene_medians"]["dfm_median"]
    assert meta["n_genes_without_median"] == 1 and meta["target_sum"] == 10.0
    assert meta["layer"] == "X" and meta["key_added"] == "dfm_median"
    assert meta["created_by"]["function"] == "diffbio_sc.pp.gene_medians"


def test_hand_computed_default_target_sum_and_depths():
    # cell totals differ: normalisation is by each cell's own total
    X = np.array([[2, 2, 0], [1, 0, 3], [0, 1, 1]])
    adata = make_adata(sp.csr_matrix(X))
    dfm.pp.gene_medians(adata)
    # normalised: c0 [5000, 5000, 0], c1 [2500, 0, 7500], c2 [0, 5000, 5000]
    np.testing.assert_allclose(adata.var["dfm_median"], [3750.0, 5000.0, 6250.0], rtol=1e-7)


def test_unexpressed_gene_is_excluded_by_tokenize_with_a_warning(dfm_log):
    adata = make_adata(sp.csr_matrix(HAND_X))
    dfm.pp.gene_medians(adata, target_sum=10)
    dfm.pp.tokenize(adata, max_tokens=4, target_sum=10)
    text = "\n".join(r.getMessage() for r in dfm_log.records if r.levelno >= logging.WARNING)
    assert "1 of 4 vocabulary genes have no positive median" in text and "'g2'" in text
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["n_genes_without_median"] == 1 and list(meta["genes_without_median"]) == ["g2"]
    assert meta["n_genes_used"] == 3
    assert not (adata.obsm["dfm_tokens"] == 2 + 4).any()  # g2's token id never appears


def test_zero_cells_are_allowed_and_ignored():
    X = np.vstack([HAND_X, np.zeros((1, 4), dtype=int)])
    adata = make_adata(sp.csr_matrix(X))
    dfm.pp.gene_medians(adata, target_sum=10)
    np.testing.assert_array_equal(adata.var["dfm_median"], HAND_MEDIANS)


# --------------------------------------------------------------------------- properties


@st.composite
def count_matrices(draw):
    n = draw(st.integers(1, 12))
    g = draw(st.integers(1, 8))
    values = st.one_of(st.just(0), st.integers(0, 3), st.integers(1, 500))
    X = np.array(draw(st.lists(values, min_size=n * g, max_size=n * g))).reshape(n, g)
    return X


@HYP
@given(count_matrices(), st.sampled_from([1.0, 10.0, 10_000.0, 1e6]), st.integers(1, 5))
def test_matches_np_median_over_nonzeros(X, target_sum, chunk_size):
    adata = make_adata(sp.csr_matrix(X))
    dfm.pp.gene_medians(adata, target_sum=target_sum, chunk_size=chunk_size)
    assert_same_medians(adata.var["dfm_median"], reference_medians(X, target_sum))


@HYP
@given(count_matrices(), st.randoms(use_true_random=False))
def test_cell_order_does_not_matter(X, rnd):
    order = list(range(X.shape[0]))
    rnd.shuffle(order)
    a = make_adata(sp.csr_matrix(X))
    b = make_adata(sp.csr_matrix(X[order]))
    dfm.pp.gene_medians(a)
    dfm.pp.gene_medians(b)
    np.testing.assert_array_equal(a.var["dfm_median"], b.var["dfm_median"])


# --------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def synth():
    return dfm.datasets.synthetic_counts(150, 120, seed=4)


def test_synthetic_matches_reference(synth):
    adata = synth.copy()
    dfm.pp.gene_medians(adata)
    assert_same_medians(adata.var["dfm_median"], reference_medians(synth.X, 10_000))


def test_input_formats_agree(synth, input_format):
    """Every storage (conftest.INPUT_FORMATS) gives the medians of the in-memory CSR."""
    expected = synth.copy()
    dfm.pp.gene_medians(expected)
    adata, layer = input_format(synth)
    dfm.pp.gene_medians(adata, layer=layer, chunk_size=32)
    np.testing.assert_array_equal(adata.var["dfm_median"], expected.var["dfm_median"])
    assert adata.uns["dfm"]["gene_medians"]["dfm_median"]["layer"] == (layer or "X")


def test_chunk_sizes_agree(synth):
    results = []
    for c in (1, 7, 100_000):
        adata = synth.copy()
        dfm.pp.gene_medians(adata, chunk_size=c)
        results.append(adata.var["dfm_median"].to_numpy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_backed_matches_in_memory(synth, tmp_path):
    path = tmp_path / "counts.h5ad"
    synth.write_h5ad(path)
    mem = synth.copy()
    dfm.pp.gene_medians(mem)
    backed = ad.read_h5ad(path, backed="r")
    try:
        dfm.pp.gene_medians(backed, chunk_size=13)
        np.testing.assert_array_equal(backed.var["dfm_median"], mem.var["dfm_median"])
        with pytest.raises(DfmInputError, match="backed"):
            dfm.pp.gene_medians(backed, copy=True)
    finally:
        backed.file.close()


def test_copy_and_key_added(synth):
    adata = synth.copy()
    out = dfm.pp.gene_medians(adata, key_added="med", copy=True)
    assert "med" in out.var and "med" not in adata.var and "dfm" not in adata.uns
    assert out.uns["dfm"]["gene_medians"]["med"]["key_added"] == "med"
    assert dfm.pp.gene_medians(adata, key_added="med") is None
    np.testing.assert_array_equal(adata.var["med"], out.var["med"])


# --------------------------------------------------------------------------- bad input


@pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")
@pytest.mark.parametrize(
    ("name", "err", "msg"),
    [
        ("negative", DfmInputError, "negative"),
        ("nan", DfmInputError, "NaN or infinite"),
        ("inf", DfmInputError, "NaN or infinite"),
        ("empty", DfmInputError, "empty"),
        ("dup_var", DfmInputError, "duplicate var_names"),
        ("missing_layer", DfmInputError, "Layer 'raw' not found"),
        ("target_sum", ValueError, "target_sum must be > 0"),
        ("bool", DfmInputError, "boolean"),
    ],
)
def test_bad_input(name, err, msg):
    X = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]])
    kw = {}
    var_names = None
    if name == "negative":
        X[0, 1] = -3
    elif name == "nan":
        X[1, 1] = np.nan
    elif name == "inf":
        X[1, 2] = np.inf
    elif name == "empty":
        X = X[:0]
    elif name == "dup_var":
        var_names = ["a", "b", "a"]
    elif name == "missing_layer":
        kw = {"layer": "raw"}
    elif name == "target_sum":
        kw = {"target_sum": -1}
    elif name == "bool":
        X = X > 0
    adata = make_adata(sp.csr_matrix(X), var_names=var_names)
    adata.var["dfm_median"] = 1.0
    adata.uns["dfm"] = {"gene_medians": {"target_sum": 5.0}}
    before = adata.copy()
    with pytest.raises(err, match=msg):
        dfm.pp.gene_medians(adata, **kw)
    for attr in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(adata.X, attr), getattr(before.X, attr))
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert adata.uns["dfm"] == {"gene_medians": {"target_sum": 5.0}}


def test_non_integer_values_need_require_counts_false():
    X = np.array([[0.5, 1.5], [2.0, 0.0]])
    adata = make_adata(sp.csr_matrix(X))
    with pytest.raises(DfmInputError, match="raw counts.*layer=.*require_counts=False"):
        dfm.pp.gene_medians(adata, target_sum=1.0)
    assert "dfm_median" not in adata.var and "dfm" not in adata.uns
    dfm.pp.gene_medians(adata, target_sum=1.0, require_counts=False)
    np.testing.assert_allclose(adata.var["dfm_median"], [(0.25 + 1.0) / 2, 0.75], rtol=1e-7)


# --------------------------------------------------------------------------- h5ad and real data


def test_h5ad_round_trip(tmp_path):
    adata = make_adata(sp.csr_matrix(HAND_X))
    dfm.pp.gene_medians(adata, target_sum=10)
    path = tmp_path / "m.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.var["dfm_median"], HAND_MEDIANS)
    assert back.uns["dfm"]["gene_medians"]["dfm_median"]["n_genes_without_median"] == 1
    assert back.uns["dfm"]["gene_medians"]["dfm_median"]["target_sum"] == 10.0
    assert (
        back.uns["dfm"]["gene_medians"]["dfm_median"]["created_by"]
        == adata.uns["dfm"]["gene_medians"]["dfm_median"]["created_by"]
    )


def test_real_pbmc_matches_reference(pbmc_path):
    adata = ad.read_h5ad(pbmc_path)
    dfm.pp.gene_medians(adata)
    genes = np.random.default_rng(0).choice(adata.n_vars, 80, replace=False)
    X = adata.X.toarray().astype(np.float64)
    totals = X.sum(axis=1)
    for j in genes:
        nz = X[:, j] > 0
        expected = np.median(X[nz, j] / totals[nz] * 10_000) if nz.any() else np.nan
        assert_same_medians([adata.var["dfm_median"].iloc[j]], [expected])


def test_bundled_demo_matches_reference():
    adata = dfm.datasets.celllines_demo()
    dfm.pp.gene_medians(adata, chunk_size=300)
    assert_same_medians(adata.var["dfm_median"], reference_medians(adata.X, 10_000))


# --------------------------------------------------------------------------- three-pass exact


def _three_pass(X, target_sum, chunk=17):
    """Exact medians of the bounded-memory method with its third pass forced."""
    from diffbio_sc.ops import _medians as om

    acc = om.HistogramMedianAccumulator(X.shape[1], target_sum=target_sum)
    chunks = [X[i : i + chunk] for i in range(0, X.shape[0], chunk)]
    for c in chunks:
        acc.add(c)
    acc.start_refine()
    assert acc.needs_select()
    for c in chunks:
        acc.refine(c)
    acc.start_select()
    for c in chunks:
        acc.select(c)
    return acc.exact()


@pytest.mark.parametrize("kind", ["counts", "ties", "spread"])
def test_three_pass_exact_matches_all_values(kind, monkeypatch):
    """The third pass (median sub-bins) gives the medians of every value, ties included."""
    from diffbio_sc.ops import _medians as om

    monkeypatch.setattr(om, "CANDIDATE_BUDGET", -1)
    rnd = np.random.default_rng(7)
    n, g = 400, 60
    if kind == "counts":  # integer counts, depths varying: distinct normalised values
        X = sp.random(n, g, density=0.3, random_state=1, data_rvs=lambda k: rnd.integers(1, 9, k))
    elif kind == "ties":  # few distinct depths: many equal normalised values per sub-bin
        X = rnd.integers(0, 3, (n, g)).astype(np.float64)
        X[:, 0] = 1.0
    else:  # values over many octaves, far below target_sum too (histogram bin 0)
        X = sp.random(n, g, density=0.4, random_state=2, data_rvs=lambda k: rnd.lognormal(0, 6, k))
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    X[:, g - 1] = 0.0  # one gene expressed nowhere
    X = sp.csr_matrix(X)
    ts = 10_000.0
    got = _three_pass(X, ts)
    expected = om.nonzero_medians(*om.normalised_nonzeros(X, ts), g)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])
    assert np.isnan(got[g - 1])


def test_backed_three_pass_matches_in_memory(synth, tmp_path, monkeypatch):
    from diffbio_sc.ops import _medians as om

    path = tmp_path / "counts.h5ad"
    synth.write_h5ad(path)
    mem = synth.copy()
    dfm.pp.gene_medians(mem)
    monkeypatch.setattr(om, "CANDIDATE_BUDGET", 10)
    backed = ad.read_h5ad(path, backed="r")
    try:
        dfm.pp.gene_medians(backed, chunk_size=13)
        np.testing.assert_array_equal(backed.var["dfm_median"], mem.var["dfm_median"])
    finally:
        backed.file.close()


def test_sub_bins_cover_their_bin():
    """Every float32 of a histogram bin lies inside the bit range its sub-bins span."""
    from diffbio_sc.ops import _medians as om

    ts = 10_000.0
    v = np.random.default_rng(3).uniform(-30, 0.5, 200_000)
    v = (ts * np.exp2(v)).astype(np.float32)
    v = np.concatenate([v, np.nextafter(v, np.float32(np.inf)), np.float32([ts, 1e-30])])
    b = om.value_bins(v, ts)
    base, span = om.bin_bit_ranges(b, ts)
    off = v.view(np.uint32).astype(np.int64) - base
    assert np.all(off >= 0) and np.all(off < span)
    # between the first and last bins: at most 2 x 2.2% of an octave's 2**23 float32s
    mid = (b > 0) & (b < om.N_BINS - 1)
    assert np.all(span[mid] <= 2 * 2**23 * (2 ** (1 / om.BINS_PER_OCTAVE) - 1) + 128)
