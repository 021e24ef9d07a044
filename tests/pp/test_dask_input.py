"""Out-of-core input: a Dask-backed AnnData gives the same results as in memory."""

from __future__ import annotations

import numpy as np
import pytest

import diffbio_sc as dfm


def test_tokenize_and_bins_on_dask_match_in_memory():
    da = pytest.importorskip("dask.array")
    ref = dfm.datasets.synthetic_counts(120, 80, seed=3)
    lazy = ref.copy()
    lazy.X = da.from_array(ref.X.toarray(), chunks=(25, 80))
    for a in (ref, lazy):
        dfm.pp.gene_medians(a, chunk_size=32)
        dfm.pp.tokenize(a, max_tokens=50, chunk_size=32)
        dfm.pp.bin_expression(a, n_bins=11, chunk_size=32)
    np.testing.assert_array_equal(ref.var["dfm_median"], lazy.var["dfm_median"])
    np.testing.assert_array_equal(ref.obsm["dfm_tokens"], lazy.obsm["dfm_tokens"])
    np.testing.assert_array_equal(
        ref.layers["dfm_bins"].toarray(), lazy.layers["dfm_bins"].toarray()
    )
    assert hasattr(lazy.X, "compute"), "the Dask array must not be loaded into .X"
