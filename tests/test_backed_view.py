"""A slice of a backed AnnData is refused by every writer before any work."""

import hashlib

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError


@pytest.fixture
def backed_slice(tmp_path):
    rng = np.random.default_rng(0)
    X = sp.random(30, 12, density=0.5, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.ceil(X.data * 10)
    a = ad.AnnData(X)
    a.obs_names = [f"c{i}" for i in range(30)]
    a.var_names = [f"g{i}" for i in range(12)]
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    backed = ad.read_h5ad(path, backed="r")
    yield backed[5:15], path, digest
    backed.file.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda v: dfm.pp.gene_medians(v),
        lambda v: dfm.pp.tokenize(v),
        lambda v: dfm.pp.bin_expression(v),
        lambda v: dfm.tl.embed(v),
        lambda v: dfm.tl.pca_baseline(v),
        # refused by the shared copy= check, before the (absent) file is looked at
        lambda v: dfm.tl.load_embeddings(v, "no_such_embeddings.npz"),
    ],
    ids=["gene_medians", "tokenize", "bin_expression", "embed", "pca_baseline", "load_embeddings"],
)
def test_writers_refuse_a_backed_slice(backed_slice, call):
    view, path, digest = backed_slice
    with pytest.raises(DfmInputError, match=r"to_memory\(\)"):
        call(view)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # the same rows loaded into memory are accepted
    dfm.pp.gene_medians(view.to_memory())
