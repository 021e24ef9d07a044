"""Atlas-scale paths of the pp writers: bounded-memory medians, tokens out of core, Dask.

Expectations: ``np.median`` over each gene's nonzero normalised values
(``reference_medians``), the in-memory results of the same call, and a
hand-computed histogram case.
"""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.ops import _medians as om

from .test_medians import reference_medians


def _counts(n=300, g=40, seed=0, density=0.3) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sp.random(n, g, density=density, random_state=rng, format="csr")
    X.data = np.ceil(X.data * 30).astype(np.float32)
    X = X.tolil()
    X[:, 0] = 0  # a gene expressed nowhere: NaN median
    X[np.arange(n), 1 + np.arange(n) % (g - 1)] = 1.0  # no empty cell
    X = sp.csr_matrix(X)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"ENSG{j:011d}" for j in range(g)])
    return ad.AnnData(X=X, obs=obs, var=var)


def test_histogram_bins_hand_case():
    # target_sum 1: value 1 is the top bin's lower edge; 0.5 is one octave (32 bins) below
    b = om.value_bins(np.array([1.0, 0.5, 0.5 * 2 ** (1 / 32), 2.0**-30]), 1.0)
    assert b.tolist() == [om.N_BINS - 1, om.N_BINS - 32, om.N_BINS - 31, 0]  # 1.0: last bin
    # one gene, three values in three bins: the median is in the middle bin, and the
    # interpolated value (rank 0 of 1 in the bin: its centre) lies within that bin
    hist = np.zeros((1, om.N_BINS), np.int64)
    hist[0, [100, 200, 300]] = 1
    med = om.histogram_medians(hist, 1.0)[0]
    lo, hi = 2.0 ** ((200 - om.N_BINS) / 32), 2.0 ** ((201 - om.N_BINS) / 32)
    assert lo < med < hi


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_exact_two_pass_equals_reference(tmp_path, chunk_size):
    a = _counts()
    ref = reference_medians(a.X, 1e4)
    path = tmp_path / "a.h5ad"
    a.write_h5ad(path)
    b = ad.read_h5ad(path, backed="r")  # backed + exact: the two-pass histogram path
    dfm.pp.gene_medians(b, chunk_size=chunk_size)
    got = b.var["dfm_median"].to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)  # float32 values, as the one-pass path
    dfm.pp.gene_medians(a, chunk_size=chunk_size)
    np.testing.assert_array_equal(got, a.var["dfm_median"].to_numpy())
    b.file.close()


def test_histogram_method_error_bound():
    a = _counts(n=500, g=30, seed=1)
    ref = reference_medians(a.X, 1e4)
    dfm.pp.gene_medians(a, method="histogram", chunk_size=64)
    got = a.var["dfm_median"].to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isfinite(ref)
    rel = np.abs(got[ok] / ref[ok] - 1)
    assert rel.max() < 2 ** (1 / 32) - 1  # below one bin width
    assert a.uns["dfm"]["gene_medians"]["dfm_median"]["method"] == "histogram"
    with pytest.raises(DfmInputError, match="method"):
        dfm.pp.gene_medians(a, method="tdigest")


def test_histogram_memory_does_not_grow_with_cells(tmp_path):
    """Peak traced allocation of the histogram method: the same at 1x and 4x the cells."""
    peaks = []
    for n in (1000, 4000):
        a = _counts(n=n, g=50, seed=2)
        path = tmp_path / f"a{n}.h5ad"
        a.write_h5ad(path)
        b = ad.read_h5ad(path, backed="r")
        tracemalloc.start()
        dfm.pp.gene_medians(b, method="histogram", chunk_size=250)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        b.file.close()
    assert peaks[1] < 1.25 * peaks[0]


@pytest.mark.parametrize("backed", [False, True])
def test_tokens_store_equals_in_memory(tmp_path, backed):
    zarr = pytest.importorskip("zarr")
    a = _counts(n=120, g=30, seed=3)
    dfm.pp.gene_medians(a)
    ref = a.copy()
    dfm.pp.tokenize(ref, max_tokens=12)
    src = a
    if backed:
        a.write_h5ad(tmp_path / "a.h5ad")
        src = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    store = tmp_path / "tokens.zarr"
    dfm.pp.tokenize(src, max_tokens=12, chunk_size=25, tokens_store=store)
    assert "dfm_tokens" not in src.obsm
    np.testing.assert_array_equal(zarr.open_array(str(store), mode="r")[:], ref.obsm["dfm_tokens"])
    np.testing.assert_array_equal(src.obs["dfm_n_tokens"], ref.obs["dfm_n_tokens"])
    assert src.uns["dfm"]["tokenizer"]["dfm_tokens"]["tokens_store"] == str(store)
    with pytest.raises(TypeError, match="tokens_store"):
        dfm.pp.tokenize(a, tokens_store=3)


def _lazy_from_zarr(a: ad.AnnData, path, rows: int) -> ad.AnnData:
    """An AnnData whose X is anndata's lazy Dask array over a zarr store."""
    import zarr
    from anndata.experimental import read_elem_lazy

    a.write_zarr(path)
    X = read_elem_lazy(zarr.open_group(str(path), mode="r")["X"], chunks=(rows, a.n_vars))
    return ad.AnnData(X=X, obs=a.obs.copy(), var=a.var.copy())


@pytest.mark.slow
def test_dask_distributed_equals_in_memory(tmp_path):
    """gene_medians and tokenize under a 2-worker LocalCluster give the in-memory results."""
    distributed = pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    a = _counts(n=200, g=30, seed=4)
    lazy = _lazy_from_zarr(a, tmp_path / "a.zarr", rows=45)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        for method in ("exact", "histogram"):
            mem = a.copy()
            dfm.pp.gene_medians(mem, method=method)
            dfm.pp.gene_medians(lazy, method=method)
            np.testing.assert_array_equal(lazy.var["dfm_median"], mem.var["dfm_median"])
        ref = a.copy()
        dfm.pp.gene_medians(ref)
        dfm.pp.gene_medians(lazy)  # exact again (the loop ended with the histogram ones)
        dfm.pp.tokenize(ref, max_tokens=10)
        dfm.pp.tokenize(lazy, max_tokens=10)
        np.testing.assert_array_equal(lazy.obsm["dfm_tokens"], ref.obsm["dfm_tokens"])
        np.testing.assert_array_equal(lazy.obs["dfm_n_tokens"], ref.obs["dfm_n_tokens"])
        store = tmp_path / "tok.zarr"  # written by the workers
        dfm.pp.tokenize(lazy, max_tokens=10, tokens_store=store, key_added="t2")
        np.testing.assert_array_equal(zarr.open_array(str(store))[:], ref.obsm["dfm_tokens"])
        # a bad block is reported from the worker with the in-memory message
        bad = a.copy()
        bad.X = bad.X.copy()
        bad.X.data[5] = 0.5
        lazy_bad = _lazy_from_zarr(bad, tmp_path / "bad.zarr", rows=45)
        with pytest.raises(DfmInputError, match="non-integer"):
            dfm.pp.gene_medians(lazy_bad)


def test_dask_threaded_equals_in_memory(tmp_path):
    """The same task graph on Dask's default (threaded) scheduler, fast."""
    pytest.importorskip("dask")
    a = _counts(n=150, g=25, seed=5)
    lazy = _lazy_from_zarr(a, tmp_path / "a.zarr", rows=40)
    mem = a.copy()
    dfm.pp.gene_medians(mem)
    dfm.pp.gene_medians(lazy)
    np.testing.assert_array_equal(lazy.var["dfm_median"], mem.var["dfm_median"])
    dfm.pp.tokenize(mem, max_tokens=9)
    dfm.pp.tokenize(lazy, max_tokens=9)
    np.testing.assert_array_equal(lazy.obsm["dfm_tokens"], mem.obsm["dfm_tokens"])
