"""Tokenizer plans (``ops/_plan.py``): hand-computed tokens, the sampling rule, the interface.

The expectations are independent of the plans: hand-computed small cases, the
documented per-cell rule (``np.argsort(-v.astype(np.float32), kind="stable")``)
and the bin kernel's own results.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from diffbio_sc.ops._bins import cell_keys, cell_uniforms, quantile_bins
from diffbio_sc.ops._plan import (
    BinPlan,
    CellTokenPlan,
    CellTokens,
    RankValuePlan,
    SequenceTokenPlan,
    TokenPlan,
    sequence_plan,
)

FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"


def _per_cell_rank_value(X, scale, target_sum, lut, k):
    """The documented rule, one cell at a time: ids in rank order and the ranked values."""
    X = np.asarray(X, dtype=np.float64)
    ids, vals = [], []
    for row in X:
        total = row.sum()
        v = row / total * target_sum * scale if total > 0 else np.zeros_like(row)
        cols = np.flatnonzero(v.astype(np.float32) > 0)
        order = cols[np.argsort(-v[cols].astype(np.float32), kind="stable")][:k]
        ids.append([int(lut[c]) for c in order])
        vals.append(v[order].astype(np.float32))
    return ids, vals


def test_rank_value_plan_hand_computed_v2():
    # 3 cells x 5 genes; gene 3 has no token (-1), gene 4 no median (scale 0).
    X = sp.csr_matrix(
        np.array(
            [
                [4, 1, 2, 9, 3],  # total 19; x 10/19 x scale: g0 4*.5, g1 1*2, g2 2*1: a tie
                [0, 0, 0, 5, 0],  # only a gene without token: no gene tokens
                [1, 0, 3, 0, 0],
            ],
            dtype=np.float32,
        )
    )
    plan = RankValuePlan(
        token_ids=[10, 11, 12, -1, 14],
        gene_scale=[0.5, 2.0, 1.0, 1.0, 0.0],
        target_sum=10.0,
        max_length=4,
        pad_id=0,
        cls_id=2,
        eos_id=3,
    )
    ids, vals, lengths = plan(X)
    # cell 0: g0, g1, g2 all 20/19: the tie keeps column order, 2 gene slots
    # cell 2: g2 = 3/4*10 = 7.5, g0 = 1/4*10*0.5 = 1.25
    expected = np.array([[2, 10, 11, 3], [2, 3, 0, 0], [2, 12, 10, 3]], dtype=np.int32)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(lengths, [4, 2, 4])
    t = np.float32(20 / 19)
    np.testing.assert_allclose(vals, [[0, t, t, 0], [0, 0, 0, 0], [0, 7.5, 1.25, 0]], rtol=1e-6)
    assert ids.dtype == np.int32 and lengths.dtype == np.int64
    assert isinstance(plan(X), CellTokens)


def test_rank_value_plan_matches_the_documented_per_cell_rule():
    rng = np.random.default_rng(1)
    X = sp.random(60, 40, density=0.3, random_state=2, data_rvs=lambda n: rng.integers(1, 6, n))
    X = sp.csr_matrix(X, dtype=np.float32)
    scale = rng.uniform(0.2, 3, 40)
    scale[[3, 7]] = 0
    lut = rng.permutation(40) + 4
    plan = RankValuePlan(lut, scale, target_sum=1e4, max_length=9, pad_id=0)
    ids, vals, lengths = plan(X)
    exp_ids, exp_vals = _per_cell_rank_value(X.toarray(), scale, 1e4, lut, 9)
    for i in range(60):
        n = len(exp_ids[i])
        assert lengths[i] == n
        np.testing.assert_array_equal(ids[i, :n], exp_ids[i])
        assert (ids[i, n:] == 0).all() and (vals[i, n:] == 0).all()
        np.testing.assert_allclose(vals[i, :n], exp_vals[i], rtol=1e-6)


def test_rank_value_plan_is_immutable_and_checks_its_inputs():
    lut = np.arange(3) + 4
    plan = RankValuePlan(lut, [1.0, 1.0, 1.0], target_sum=10, max_length=3, pad_id=0)
    lut[0] = 99  # the plan holds its own copy
    assert plan.token_ids[0] == 4
    with pytest.raises(ValueError):
        plan.token_ids[0] = 5
    with pytest.raises(AttributeError):
        plan.max_length = 5
    with pytest.raises(ValueError, match="no room"):
        RankValuePlan(lut, [1.0] * 3, target_sum=10, max_length=2, pad_id=0, cls_id=2, eos_id=3)
    with pytest.raises(ValueError, match="columns"):
        plan(sp.csr_matrix(np.ones((2, 4))))
    assert dict(plan.special_ids) == {"<pad>": 0}
    assert isinstance(plan, CellTokenPlan) and isinstance(plan, TokenPlan)


def _uniform_order(keys, toks, row):
    u = cell_uniforms(keys, np.asarray(toks, dtype=np.uint64), np.full(len(toks), row))
    return np.asarray(toks)[np.argsort(u, kind="stable")]


def test_bin_plan_tokens_hand_checked():
    # 4 cells x 6 columns; columns 1 and 4 are not in the vocabulary.
    X = sp.csr_matrix(
        np.array(
            [
                [1, 7, 2, 3, 0, 4],  # 4 vocabulary genes, 2 slots: sampled
                [0, 0, 5, 0, 9, 0],  # 1 vocabulary gene
                [0, 3, 0, 0, 3, 0],  # none
                [2, 0, 0, 6, 0, 0],  # 2: all kept
            ],
            dtype=np.float32,
        )
    )
    cols = np.array([0, 2, 3, 5])
    tok = np.array([40, 42, 43, 45])
    names = ["a", "b", "c", "d"]
    plan = BinPlan(
        n_bins=5,
        seed=7,
        columns=cols,
        token_ids=tok,
        max_length=3,
        pad_id=1,
        cls_id=9,
        pad_value=-2.0,
    )
    keys = plan.cell_keys(names)
    np.testing.assert_array_equal(keys, cell_keys(names, 7))
    (g, v, lengths), n_sub = plan.encode(X, keys)
    np.testing.assert_array_equal(lengths, [3, 2, 1, 3])
    assert n_sub == 1
    assert (g[:, 0] == 9).all()
    # the bins are the kernel's bins of the vocabulary columns
    sub = sp.csr_matrix(X[:, cols])
    bins = sp.csr_matrix((quantile_bins(sub, 5, keys), sub.indices, sub.indptr), shape=sub.shape)
    dense_bins = bins.toarray()
    # cell 0: the 2 genes with the smallest (seed, cell, token id) uniform, in column order
    kept = set(_uniform_order(keys, tok, 0)[:2].tolist())
    exp0 = [t for t in tok if t in kept]
    np.testing.assert_array_equal(g[0, 1:], exp0)
    np.testing.assert_array_equal(v[0, 1:], [dense_bins[0, list(tok).index(t)] for t in exp0])
    np.testing.assert_array_equal(g[1], [9, 42, 1])
    np.testing.assert_array_equal(v[1], [-2.0, dense_bins[1, 1], -2.0])
    np.testing.assert_array_equal(g[2], [9, 1, 1])
    np.testing.assert_array_equal(g[3], [9, 40, 43])
    # a cell with distinct values: bins by np.quantile / np.digitize (no tie draw)
    assert sorted(v[3, 1:].tolist()) == [1.0, 4.0]
    assert plan(X, keys).ids.tolist() == g.tolist()


def test_bin_plan_sampling_does_not_depend_on_batch_mates():
    rng = np.random.default_rng(3)
    X = sp.csr_matrix(rng.poisson(2.0, size=(30, 25)).astype(np.float32))
    names = [f"cell{i}" for i in range(30)]
    plan = BinPlan(
        n_bins=11,
        seed=1,
        columns=np.arange(0, 25, 2),
        token_ids=np.arange(13) + 5,
        max_length=5,
        pad_id=0,
        cls_id=2,
    )
    whole = plan(X, plan.cell_keys(names))
    order = rng.permutation(30)
    part = plan(X[order], plan.cell_keys([names[i] for i in order]))
    np.testing.assert_array_equal(part.ids, whole.ids[order])
    np.testing.assert_array_equal(part.values, whole.values[order])


def test_bins_only_plan_refuses_tokens_and_keeps_the_callers_arrays():
    X = sp.csr_matrix(np.array([[3, 0, 1, 2]], dtype=np.float32))
    plan = BinPlan(n_bins=4, seed=0)
    before = (X.indices.copy(), X.data.copy())
    b = plan.bins(X, plan.cell_keys(["x"]))
    assert b.dtype == np.int16
    np.testing.assert_array_equal(b.indices, X.indices)
    np.testing.assert_array_equal(X.indices, before[0])
    with pytest.raises(ValueError, match="bins only"):
        plan(X, plan.cell_keys(["x"]))


# --------------------------------------------------------------- sequences
@pytest.mark.parametrize("name", ["char", "kmer", "nt6"])
def test_sequence_tokenizers_follow_the_plan_interface(name):
    from diffbio_sc.ops import get_tokenizer

    tok = get_tokenizer(name, k=3)
    plan = tok.plan(add_cls=True)
    assert isinstance(plan, SequenceTokenPlan) and isinstance(plan, TokenPlan)
    assert plan.scheme == name and plan.pad_id == 0
    assert plan.special_ids["<cls>"] == 2 and plan.special_ids["<pad>"] == 0
    seqs = ["ACGTACGTA", "ACG", "NNACGTTT"]
    ids, lengths = plan.encode(seqs)
    ref_ids, mask = tok.encode(seqs, add_cls=True)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(lengths, mask.sum(axis=1))
    assert (ids[:, 0] == 2).all() and lengths.dtype == np.int64
    if name == "char":  # one token per base, plus <cls>
        np.testing.assert_array_equal(lengths, [10, 4, 9])
    capped = tok.plan(max_length=12)
    assert capped.encode(seqs)[0].shape == (3, 12)
    with pytest.raises(TypeError, match="unknown"):
        sequence_plan(tok, unknown="token")


def test_dna_checkpoint_tokenizer_follows_the_plan_interface():
    from diffbio_sc.ops._dna_checkpoint_tokenizers import NTCheckpointTokenizer

    lines = (FIX / "nucleotide_transformer_v1" / "vocab.txt").read_text().split()
    tok = NTCheckpointTokenizer({t: i for i, t in enumerate(lines)})
    plan = tok.plan(max_length=8, unknown="token")
    assert isinstance(plan, SequenceTokenPlan)
    assert plan.pad_id == lines.index("<pad>")
    assert plan.special_ids["<cls>"] == lines.index("<cls>")
    assert "A" not in plan.special_ids and "ACGTAC" not in plan.special_ids
    ids, lengths = plan.encode(["ACGTACGTACGTA", "ACGTAC"])
    # <cls> + two 6-mers + one base; <cls> + one 6-mer
    np.testing.assert_array_equal(lengths, [4, 2])
    assert ids[0, 1] == lines.index("ACGTAC") and ids[1, 2] == plan.pad_id


# ------------------------------------------------- checkpoint inputs, once
def _gf_model(medians):
    import json

    vocab = json.loads((FIX / "geneformer_v1" / "token_dictionary.json").read_text())
    return SimpleNamespace(recipe="geneformer_v1", vocab=vocab, medians=medians), vocab


def test_geneformer_chunks_warn_once_with_totals(caplog):
    import json

    import anndata as ad
    import pandas as pd

    from diffbio_sc.tl._checkpoint_inputs import geneformer_chunks

    medians = json.loads((FIX / "geneformer_v1" / "gene_median_dictionary.json").read_text())
    cells = np.load(FIX / "cells.npz")
    genes = list(cells["ensembl"])
    medians = {g: m for g, m in medians.items() if g not in genes[:3]}  # 3 without a median
    model, vocab = _gf_model(medians)
    X = np.tile(cells["counts"].astype(np.float32), (6, 1))  # 42 cells
    adata = ad.AnnData(
        sp.csr_matrix(np.hstack([X, np.ones((42, 2), np.float32)])),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(42)]),
        var=pd.DataFrame(index=genes + ["NOTAGENE1", "NOTAGENE2"]),
    )
    ids = np.asarray(adata.var_names)
    logger = logging.getLogger("diffbio_sc")
    level = logger.level
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="diffbio_sc"):
            out = list(geneformer_chunks(adata, model, ids, None, 5, 16))
    finally:
        logger.removeHandler(caplog.handler)
    assert logger.level == level  # nobody changed the package logger's level
    assert len(out) == 9  # chunks of 5 cells
    msgs = [r.getMessage() for r in caplog.records]
    no_med = [m for m in msgs if "no positive median" in m]
    not_voc = [m for m in msgs if "not in the checkpoint's vocabulary" in m]
    n_in = sum(g in vocab for g in genes)  # the fixture's vocabulary lacks a few data genes
    assert 0 < n_in < len(genes) and all(g in vocab for g in genes[:3])
    assert len(no_med) == 1 and no_med[0].startswith(f"3 of {n_in} vocabulary genes")
    assert len(not_voc) == 1 and not_voc[0].startswith(f"{50 - n_in} of 50 genes")
    tokens = np.concatenate([t for _, _, _, t, _ in out])
    # none of the excluded genes appears; the rest follows the documented rule
    excluded = [vocab[g] for g in genes[:3]]
    assert not np.isin(tokens, excluded).any()
    scale = np.array(
        [1 / float(medians[g]) if g in medians and g in vocab else 0.0 for g in genes] + [0, 0]
    )
    lut = np.array([vocab.get(g, -1) for g in genes] + [-1, -1])
    exp_ids, _ = _per_cell_rank_value(adata.X.toarray(), scale, 10_000.0, lut, 16)
    for i, row in enumerate(exp_ids):
        np.testing.assert_array_equal(tokens[i, : len(row)], row)
        assert (tokens[i, len(row) :] == vocab["<pad>"]).all()


@pytest.fixture
def no_public_writers(monkeypatch):
    import diffbio_sc.pp._bins as pbins
    import diffbio_sc.pp._tokenize as ptok

    def refuse(*a, **k):
        raise AssertionError("a public pp writer was called")

    monkeypatch.setattr(ptok, "tokenize", refuse)
    monkeypatch.setattr(pbins, "bin_expression", refuse)


def test_checkpoint_tokens_call_no_public_writer(no_public_writers, checkpoint_cells):
    """The tokens embed_checkpoint runs never pass through pp.tokenize / pp.bin_expression."""
    import diffbio_sc as dfm
    from diffbio_sc.tl._checkpoint_inputs import geneformer_chunks, in_vocab, scgpt_chunks

    adata = checkpoint_cells
    gf = dfm.models.load_checkpoint(FIX / "geneformer_v1")
    ids = np.asarray(adata.var_names)
    (_, _, _, tok, n), *_ = geneformer_chunks(adata, gf, ids, None, 100, 32)
    assert tok.shape == (adata.n_obs, 32) and (n > 0).all()
    sc = dfm.models.load_checkpoint(FIX / "scgpt")
    sym = np.asarray(adata.var["symbol"])
    found = in_vocab(sym, set(sc.vocab))
    (_, _, _, g, v, n, _), *_ = scgpt_chunks(adata, sc, sym, found, None, 100, 0, 16)
    assert (g[:, 0] == sc.config.cls_token_id).all() and (n > 1).all()


@pytest.mark.slow
def test_embed_checkpoint_calls_no_public_writer(no_public_writers, checkpoint_cells):
    import diffbio_sc as dfm

    adata = checkpoint_cells
    dfm.tl.embed_checkpoint(adata, FIX / "geneformer_v1", progress_bar=False)
    dfm.tl.embed_checkpoint(adata, FIX / "scgpt", gene_key="symbol", progress_bar=False)
    assert {"X_geneformer", "X_scgpt"} <= set(adata.obsm)


def test_no_tool_builds_temporary_anndata_or_mutes_the_logger():
    src = Path(__file__).parents[2] / "src" / "diffbio_sc"
    for path in [src / "tl" / "_checkpoint_inputs.py", src / "tl" / "_model_data.py"]:
        text = path.read_text()
        assert "setLevel" not in text and "_tmp_adata" not in text
        assert "from ..pp._tokenize import tokenize" not in text
        assert "bin_expression" not in text.replace("dfm.pp.bin_expression", "")
    assert "AnnData(" not in (src / "tl" / "_checkpoint_inputs.py").read_text()
