"""Streaming passes over a backed CSR matrix reuse the chunk's arrays: same chunks, same results.

Expectations: the chunks read into fresh arrays (``reuse_buffers=False``, the
reader as it was), the in-memory matrix, and the medians / tokens computed with
the reuse switched off.
"""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
import diffbio_sc._validate as va
import diffbio_sc.pp._tokenize as tok
from diffbio_sc.ops import _medians as om


def _uneven(n=203, g=60, seed=0) -> ad.AnnData:
    """Counts whose cells hold 1 to ``g`` nonzeros, in runs: chunks of very different sizes."""
    rng = np.random.default_rng(seed)
    # small cells, then large, then small again: the buffers grow, then are reused
    # by smaller chunks, then grow again
    per_cell = np.concatenate(
        [rng.integers(1, 4, n // 3), rng.integers(g // 2, g + 1, n // 3), rng.integers(1, g, n)]
    )[:n]
    rows, cols = [], []
    for i, k in enumerate(per_cell):
        rows.append(np.full(k, i))
        cols.append(np.sort(rng.choice(g, k, replace=False)))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    vals = rng.negative_binomial(2, 0.2, rows.size).astype(np.float32) + 1
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, g))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"ENSG{j:011d}" for j in range(g)])
    return ad.AnnData(X=X, obs=obs, var=var)


def _backed(a: ad.AnnData, path, half: bool = False) -> ad.AnnData:
    a.write_h5ad(path)
    if half:  # scipy has no float16: rewrite the stored values as float16
        with h5py.File(path, "r+") as f:
            data = f["X/data"][:]
            del f["X/data"]
            f.create_dataset("X/data", data=data.astype(np.float16))
    return ad.read_h5ad(path, backed="r")


@pytest.fixture
def no_reuse(monkeypatch):
    """Switch the reuse off everywhere (the chunk reader as it was)."""
    plain = va.iter_row_chunks

    def fresh(*args, **kwargs):
        kwargs["reuse_buffers"] = False
        return plain(*args, **kwargs)

    def switch():
        monkeypatch.setattr(va, "iter_row_chunks", fresh)
        monkeypatch.setattr(tok, "iter_row_chunks", fresh)

    return switch


@pytest.mark.parametrize("half", [False, True])
def test_reused_chunks_equal_fresh_chunks(tmp_path, half):
    a = _uneven()
    b = _backed(a, tmp_path / "a.h5ad", half)
    try:
        fresh = [c for _, _, c in va.iter_row_chunks(b, None, 17)]
        reused = va.iter_row_chunks(b, None, 17, reuse_buffers=True)
        previous = None
        shared = 0
        for k, (start, stop, chunk) in enumerate(reused):
            ref = fresh[k]
            assert chunk.shape == ref.shape == (stop - start, a.n_vars)
            assert chunk.dtype == np.float32
            np.testing.assert_array_equal(chunk.indptr, ref.indptr)
            np.testing.assert_array_equal(chunk.indices, ref.indices)
            np.testing.assert_array_equal(chunk.data, ref.data)
            np.testing.assert_array_equal(chunk.toarray(), a.X[start:stop].toarray())
            if previous is not None and np.shares_memory(previous, chunk.indices):
                shared += 1
            previous = chunk.indices
        assert k + 1 == len(fresh) == -(-a.n_obs // 17)
        # the point of the option: most chunks are read into the previous chunk's arrays
        assert shared >= len(fresh) // 2
        # without it, every chunk has arrays of its own
        assert not np.shares_memory(fresh[0].indices, fresh[1].indices)
    finally:
        b.file.close()


@pytest.mark.parametrize("chunk_size", [13, 64])
@pytest.mark.parametrize("three_pass", [False, True])
def test_medians_and_tokens_same_with_and_without_reuse(
    tmp_path, monkeypatch, no_reuse, chunk_size, three_pass
):
    pytest.importorskip("zarr")
    import zarr

    if three_pass:  # the sub-bin pass and the selection pass read the chunks too
        monkeypatch.setattr(om, "CANDIDATE_BUDGET", 0)
    a = _uneven(seed=1)
    mem = a.copy()
    dfm.pp.gene_medians(mem)
    results = {}
    for reuse in (True, False):
        if not reuse:
            no_reuse()
        b = _backed(a, tmp_path / f"a{reuse}.h5ad")
        try:
            dfm.pp.gene_medians(b, chunk_size=chunk_size)
            exact = b.var["dfm_median"].to_numpy().copy()
            dfm.pp.gene_medians(b, chunk_size=chunk_size, method="histogram", key_added="h")
            store = tmp_path / f"tokens{reuse}.zarr"
            dfm.pp.tokenize(b, max_tokens=24, chunk_size=chunk_size, tokens_store=store)
            results[reuse] = (
                exact,
                b.var["h"].to_numpy().copy(),
                zarr.open_array(str(store), mode="r")[:],
                b.obs["dfm_n_tokens"].to_numpy().copy(),
            )
        finally:
            b.file.close()
    for got, ref in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(got, ref)
    # and both are the in-memory medians and tokens
    np.testing.assert_array_equal(results[True][0], mem.var["dfm_median"].to_numpy())
    dfm.pp.tokenize(mem, max_tokens=24)
    np.testing.assert_array_equal(results[True][2], mem.obsm["dfm_tokens"])
