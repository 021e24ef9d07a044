"""Tokens and bins are bit-identical to those before the tokenizer plan (issue 21, item 1).

The digests were taken with the code before ``ops/_plan.py`` (main at a79df4a, where
``embed_checkpoint`` tokenized each chunk by calling ``pp.tokenize`` /
``pp.bin_expression`` on a temporary AnnData); the same arrays are computed
here through the plans. Beside them, PBMC tokens are checked against the
documented per-cell rule, independently of any kernel.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm

FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"
SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>", "<eoc>")


def _digest(*arrays) -> str:
    m = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        m.update(str(a.dtype).encode())
        m.update(str(a.shape).encode())
        m.update(a.tobytes())
    return m.hexdigest()[:16]


@pytest.fixture(scope="module")
def pbmc(pbmc_path):
    return ad.read_h5ad(pbmc_path)[:400].copy()


def test_pbmc_tokens_and_bins_unchanged(pbmc):
    b = dfm.pp.tokenize(pbmc, copy=True, chunk_size=150, max_tokens=256)
    assert _digest(b.obsm["dfm_tokens"], b.obs["dfm_n_tokens"].to_numpy()) == "d9eda475fe1f2681"
    # the documented rule, cell by cell: normalise, divide by the median, stable sort
    X = pbmc.X[:50].toarray().astype(np.float64)
    scale = 1.0 / b.var["dfm_median"].to_numpy()
    for i in range(50):
        v = X[i] / X[i].sum() * 10_000 * scale
        cols = np.flatnonzero(v > 0)
        order = cols[np.argsort(-v[cols].astype(np.float32), kind="stable")][:256]
        n = order.size
        np.testing.assert_array_equal(b.obsm["dfm_tokens"][i, :n], order + 4)
        assert (b.obsm["dfm_tokens"][i, n:] == 0).all() and b.obs["dfm_n_tokens"].iloc[i] == n
    b = dfm.pp.tokenize(pbmc, recipe="geneformer_v2", max_tokens=128, copy=True, chunk_size=150)
    assert _digest(b.obsm["dfm_tokens"], b.obs["dfm_n_tokens"].to_numpy()) == "044a10906d955342"
    b = dfm.pp.bin_expression(pbmc, seed=3, copy=True, chunk_size=150)
    x = b.layers["dfm_bins"]
    assert _digest(x.data, x.indices, x.indptr) == "76c849ec7d60ae14"


@pytest.mark.parametrize(
    "name, digest", [("geneformer_v1", "a0869f8bf9871115"), ("geneformer_v2", "bc5183cc0ed448ce")]
)
def test_geneformer_checkpoint_tokens_unchanged(name, digest, checkpoint_cells):
    from diffbio_sc.tl._checkpoint_inputs import geneformer_chunks

    cells = checkpoint_cells
    model = dfm.models.load_checkpoint(FIX / name)
    out = list(geneformer_chunks(cells, model, np.asarray(cells.var_names), None, 3, 24))
    tokens = np.concatenate([o[3] for o in out])
    lengths = np.concatenate([o[4] for o in out])
    assert _digest(tokens, lengths) == digest
    # and equal to pp.tokenize with the checkpoint's dictionaries (the public tokenizer)
    ref = dfm.pp.tokenize(
        cells,
        recipe=model.recipe,
        vocab=model.vocab,
        gene_medians=model.medians,
        max_tokens=24,
        copy=True,
    )
    np.testing.assert_array_equal(tokens, ref.obsm["dfm_tokens"])
    np.testing.assert_array_equal(lengths, ref.obs["dfm_n_tokens"])


def test_scgpt_checkpoint_tokens_unchanged(checkpoint_cells):
    from diffbio_sc.tl._checkpoint_inputs import in_vocab, scgpt_chunks

    cells = checkpoint_cells
    model = dfm.models.load_checkpoint(FIX / "scgpt")
    sym = np.asarray(cells.var["symbol"])
    found = in_vocab(sym, {g for g in model.vocab if g not in SPECIALS})
    out = list(scgpt_chunks(cells, model, sym, found, None, 3, 4, 12))
    arrays = [np.concatenate([o[i] for o in out]) for i in (3, 4, 5)]
    assert _digest(*arrays) == "15145a4f1bf7b97d"
    assert sum(o[6] for o in out) == 5
    # the bins are pp.bin_expression's bins of the vocabulary genes
    sub = cells[:, found].copy()
    sub.var_names = sym[found]
    bins = dfm.pp.bin_expression(sub, n_bins=model.config.n_bins, seed=4, copy=True)
    dense = bins.layers["dfm_bins"].toarray()
    tok_col = {model.vocab[g]: j for j, g in enumerate(sym[found])}
    g, v, n = arrays
    for i in range(cells.n_obs):
        for t, val in zip(g[i, 1 : n[i]], v[i, 1 : n[i]], strict=True):
            assert dense[i, tok_col[int(t)]] == val
