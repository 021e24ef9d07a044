"""Shared fixtures for the pp tests: the input-format matrix and the "AnnData unchanged" check.

``input_format`` is parametrized over every storage a pp writer accepts. Each
variant holds exactly the same values as the reference AnnData (explicit zeros
and duplicate entries are added without changing any value), so a writer must
give the same result on every variant, and must leave the input as it was.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

INPUT_FORMATS = [
    "csr_int32",
    "csr_float32",
    "csr_int64",
    "csc",
    "dense_int",
    "dense_float64",
    "dense_float16",  # read as float32 (whole numbers below 2048 are exact)
    "layer",  # the values in a layer, X unusable
    "unsorted",  # column indices reversed within rows
    "stored_zeros",  # explicit zeros added
    "duplicates",  # each value split over two entries that sum to it
    "backed_csr",
    "backed_dense",
    "dask",
]


def _from_entries(rows, cols, vals, shape) -> sp.csr_matrix:
    """CSR built straight from entries, keeping explicit zeros and repeated (row, col) pairs."""
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sp.csr_matrix((vals[order], cols[order].astype(np.int32), indptr), shape=shape)


def _with_stored_zeros(X: sp.csr_matrix) -> sp.csr_matrix:
    coo = X.tocoo()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, X.shape[0], 50)
    cols = rng.integers(0, X.shape[1], 50)
    free = np.asarray(X[rows, cols]).ravel() == 0
    free &= ~pd.Index(rows * X.shape[1] + cols).duplicated()
    out = _from_entries(
        np.concatenate([coo.row, rows[free]]),
        np.concatenate([coo.col, cols[free]]),
        np.concatenate([coo.data, np.zeros(free.sum(), X.dtype)]),
        X.shape,
    )
    assert (out.data == 0).sum() > 0
    return out


def _with_duplicates(X: sp.csr_matrix) -> sp.csr_matrix:
    coo = X.tocoo()
    half = np.floor(coo.data / 2)
    out = _from_entries(
        np.concatenate([coo.row, coo.row]),
        np.concatenate([coo.col, coo.col]),
        np.concatenate([coo.data - half, half]),
        X.shape,
    )
    out.has_canonical_format = False
    return out


def _unsorted(X: sp.csr_matrix) -> sp.csr_matrix:
    X = X.copy()
    for i in range(X.shape[0]):  # reverse the column order inside every row
        a, b = X.indptr[i], X.indptr[i + 1]
        X.indices[a:b] = X.indices[a:b][::-1].copy()
        X.data[a:b] = X.data[a:b][::-1].copy()
    X.has_sorted_indices = False
    return X


@pytest.fixture(params=INPUT_FORMATS)
def input_format(request, tmp_path):
    """Return ``convert(reference) -> (adata, layer)``: the reference's values in one storage.

    ``reference`` is an in-memory AnnData with CSR integer counts in ``.X``;
    ``.obs``/``.var`` (e.g. a ``dfm_median`` column) are carried over. Backed
    files are closed after the test.
    """
    variant = request.param
    opened = []

    def convert(reference: ad.AnnData):
        X = sp.csr_matrix(reference.X)
        layer = None
        if variant == "csr_float32":
            X = X.astype(np.float32)
        elif variant == "csr_int64":
            X = X.astype(np.int64)
        elif variant == "csc":
            X = X.tocsc()
        elif variant in ("dense_int", "backed_dense", "dask"):
            X = X.toarray()
        elif variant == "dense_float64":
            X = X.toarray().astype(np.float64)
        elif variant == "dense_float16":
            assert X.max() < 2048
            X = X.toarray().astype(np.float16)
        elif variant == "unsorted":
            X = _unsorted(X)
        elif variant == "stored_zeros":
            X = _with_stored_zeros(X)
        elif variant == "duplicates":
            X = _with_duplicates(X.astype(np.float32))
        if variant == "dask":
            da = pytest.importorskip("dask.array")
            X = da.from_array(X, chunks=(max(1, X.shape[0] // 4), X.shape[1]))
        adata = ad.AnnData(X=X, obs=reference.obs.copy(), var=reference.var.copy())
        if variant == "layer":
            adata.layers["counts"] = adata.X
            adata.X = np.full(adata.shape, -1.0)  # rejected if read
            layer = "counts"
        if variant.startswith("backed"):
            path = tmp_path / f"{variant}.h5ad"
            adata.write_h5ad(path)
            adata = ad.read_h5ad(path, backed="r")
            opened.append(adata)
        return adata, layer

    convert.variant = variant
    yield convert
    for a in opened:
        a.file.close()


# --------------------------------------------------------------------------- unchanged checks


def assert_uns_equal(a, b, path="uns"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {set(a)} != {set(b)}"
        for k in a:
            assert_uns_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple, np.ndarray)):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        assert a_arr.shape == b_arr.shape, path
        if a_arr.size:
            if a_arr.dtype.kind in "iufb" and b_arr.dtype.kind in "iufb":
                np.testing.assert_array_equal(a_arr, b_arr, err_msg=path)
            else:
                assert [str(x) for x in a_arr.ravel()] == [str(x) for x in b_arr.ravel()], path
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_matrix_equal(a, b):
    assert sp.issparse(a) == sp.issparse(b)
    if sp.issparse(a):
        assert a.format == b.format and a.dtype == b.dtype
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def assert_unchanged(adata: ad.AnnData, before: ad.AnnData) -> None:
    """Everything a writer could touch is as it was (X bit for bit, stored zeros included)."""
    assert adata.shape == before.shape
    if adata.X is not None or before.X is not None:
        assert_matrix_equal(adata.X, before.X)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert set(adata.obsm) == set(before.obsm)
    for k in before.obsm:
        np.testing.assert_array_equal(adata.obsm[k], before.obsm[k])
    assert set(adata.layers) == set(before.layers)
    for k in before.layers:
        assert_matrix_equal(adata.layers[k], before.layers[k])
    assert_uns_equal(dict(adata.uns), dict(before.uns))


@pytest.fixture
def unchanged():
    """``unchanged(adata, before)``: assert a writer left the AnnData exactly as it was."""
    return assert_unchanged


@pytest.fixture
def uns_equal():
    """``uns_equal(a, b)``: compare two ``.uns`` trees (arrays by value, NaN == NaN)."""
    return assert_uns_equal


@pytest.fixture
def matrix_equal():
    """``matrix_equal(a, b)``: same storage, dtype and stored entries (bit for bit)."""
    return assert_matrix_equal
