"""Tests for ``dfm.pp.tokenize`` (Geneformer-style rank-value encoding).

Expectations come from hand-computed cases and from a plain per-cell loop
written below (:func:`reference_tokens`), never from the kernel under test.
"""

from __future__ import annotations

import json
import logging
import pickle

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

PAD, MASK, CLS, EOS = 0, 1, 2, 3
N_SPECIAL = 4  # default vocabulary: <pad> <mask> <cls> <eos>, then var_names

HYP = hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- helpers


def make_adata(X, *, var_names=None, obs_names=None, medians=None) -> ad.AnnData:
    n, g = X.shape
    obs = pd.DataFrame(
        index=list(obs_names) if obs_names is not None else [f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame(
        index=list(var_names) if var_names is not None else [f"g{j}" for j in range(g)]
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    if medians is not None:
        adata.var["dfm_median"] = np.asarray(medians, dtype=np.float64)
    return adata


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def reference_tokens(
    X,
    medians,
    *,
    max_tokens: int,
    recipe: str = "geneformer_v1",
    token_of=None,
    pad: int = PAD,
    cls: int = CLS,
    eos: int = EOS,
    target_sum: float = 10_000.0,
):
    """The documented rule, one cell at a time.

    Normalise the row by its total, divide by the gene median (multiply by
    ``1 / median``, in the same order as documented so that float64 rounding is
    the same), compare in float32, argsort descending with a stable sort so
    that ties keep gene order, keep the top genes, add special tokens, pad.
    """
    X = dense(X)
    medians = np.asarray(medians, dtype=np.float64)
    n, g = X.shape
    v2 = recipe == "geneformer_v2"
    n_genes_max = max_tokens - (2 if v2 else 0)
    token_of = np.arange(g) + N_SPECIAL if token_of is None else np.asarray(token_of)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(np.isfinite(medians) & (medians > 0), 1.0 / medians, 0.0)
    usable = (scale > 0) & (token_of >= 0)
    out = np.full((n, max_tokens), pad, dtype=np.int64)
    n_tok = np.zeros(n, dtype=np.int64)
    for i in range(n):
        x = X[i]
        v = (scale * x) * (target_sum / x.sum())
        v32 = v.astype(np.float32)
        genes = np.flatnonzero((v32 > 0) & usable)
        order = genes[np.argsort(-v32[genes], kind="stable")][:n_genes_max]
        seq = list(token_of[order])
        if v2:
            seq = [cls, *seq, eos]
        out[i, : len(seq)] = seq
        n_tok[i] = len(seq)
    return out, n_tok


def warnings_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# Two cells x four genes, worked by hand below.
HAND_X = np.array([[4, 0, 2, 4], [0, 3, 0, 1]])
HAND_MED = np.array([2.0, 1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- hand-computed


def test_v1_hand_computed():
    # cell 0: total 10 -> [4000, 0, 2000, 4000] / median [2, 1, 1, 1] = [2000, 0, 2000, 4000]
    #   ranked: g3 (4000), then g0 and g2 tie at 2000 -> gene order: g0, g2
    # cell 1: total 4 -> [0, 7500, 0, 2500]: g1, g3
    adata = make_adata(sp.csr_matrix(HAND_X), medians=HAND_MED)
    dfm.pp.tokenize(adata, max_tokens=5)
    tokens = adata.obsm["dfm_tokens"]
    assert tokens.dtype == np.int32 and tokens.shape == (2, 5)
    np.testing.assert_array_equal(
        tokens, [[3 + 4, 0 + 4, 2 + 4, PAD, PAD], [1 + 4, 3 + 4, PAD, PAD, PAD]]
    )
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [3, 2])
    # truncation keeps the top of the ranking
    dfm.pp.tokenize(adata, max_tokens=2)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], [[7, 4], [5, 7]])
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [2, 2])
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["recipe"] == "geneformer_v1" and meta["max_tokens"] == 2
    assert meta["median_source"] == "var:dfm_median" and meta["target_sum"] == 10_000.0
    assert meta["pad_id"] == PAD and meta["vocab_size"] == 4 + 4
    assert meta["special_token_ids"] == {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    assert not meta["prepend_cls"] and not meta["append_eos"]
    assert "stable" in meta["tie_breaking"]


def test_v2_hand_computed_cls_eos_pad():
    adata = make_adata(sp.csr_matrix(HAND_X), medians=HAND_MED)
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=6)
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"],
        [[CLS, 7, 4, 6, EOS, PAD], [CLS, 5, 7, EOS, PAD, PAD]],
    )
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [5, 4])
    # truncated: <eos> still closes the sequence right after the last kept gene
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=4)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], [[CLS, 7, 4, EOS], [CLS, 5, 7, EOS]])
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [4, 4])
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["recipe"] == "geneformer_v2" and meta["prepend_cls"] and meta["append_eos"]
    assert meta["max_gene_tokens"] == 2


def test_recipe_default_lengths():
    adata = make_adata(sp.csr_matrix(HAND_X), medians=HAND_MED)
    dfm.pp.tokenize(adata)
    assert adata.obsm["dfm_tokens"].shape == (2, 2048)
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["max_gene_tokens"] == 2048
    dfm.pp.tokenize(adata, recipe="geneformer_v2")
    tokens = adata.obsm["dfm_tokens"]
    assert tokens.shape == (2, 4096) and tokens.dtype == np.int32
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["max_gene_tokens"] == 4094
    np.testing.assert_array_equal(tokens[:, :5], [[CLS, 7, 4, 6, EOS], [CLS, 5, 7, EOS, PAD]])
    assert (tokens[:, 5:] == PAD).all()


def test_custom_recipe_object():
    from diffbio_sc.pp._tokenize import TokenizerRecipe

    rec = TokenizerRecipe(
        "cls_only",
        max_tokens=5,
        prepend_cls=True,
        append_eos=False,
        target_sum=100.0,
        requires_counts=False,
    )
    # halving the counts changes no normalised value; non-integers are fine for this recipe
    adata = make_adata(sp.csr_matrix(HAND_X * 0.5), medians=HAND_MED)
    dfm.pp.tokenize(adata, recipe=rec)
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"], [[CLS, 7, 4, 6, PAD], [CLS, 5, 7, PAD, PAD]]
    )
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [4, 3])
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert (
        meta["recipe"] == "cls_only"
        and meta["target_sum"] == 100.0
        and meta["max_gene_tokens"] == 4
    )


def test_custom_vocab_hand_computed():
    vocab = {"<pad>": 7, "<cls>": 8, "<eos>": 9, "g0": 100, "g1": 50, "g2": 20, "g3": 10}
    adata = make_adata(sp.csr_matrix(HAND_X), medians=HAND_MED)
    dfm.pp.tokenize(adata, recipe="geneformer_v2", vocab=vocab, max_tokens=6)
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"], [[8, 10, 100, 20, 9, 7], [8, 50, 10, 9, 7, 7]]
    )
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["pad_id"] == 7 and meta["vocab_size"] == 7 and meta["vocab_source"] == "mapping"
    assert meta["special_token_ids"] == {"<pad>": 7, "<cls>": 8, "<eos>": 9}


def test_cells_without_usable_genes_get_only_special_tokens(dfm_log):
    X = np.array([[3, 0, 1], [0, 5, 0]])
    adata = make_adata(sp.csr_matrix(X), medians=[1.0, np.nan, 1.0])
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=5)
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"], [[CLS, 4, 6, EOS, PAD], [CLS, EOS, PAD, PAD, PAD]]
    )
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [4, 2])
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["n_cells_without_gene_tokens"] == 1
    text = warnings_text(dfm_log)
    assert "1 cells express none of the usable genes" in text and "'c1'" in text


# --------------------------------------------------------------------------- properties


@st.composite
def counts_and_medians(draw, power_of_two_medians: bool):
    n = draw(st.integers(1, 6))
    g = draw(st.integers(1, 9))
    X = np.array(draw(st.lists(st.integers(0, 6), min_size=n * g, max_size=n * g))).reshape(n, g)
    X[X.sum(axis=1) == 0, draw(st.integers(0, g - 1))] = 1  # every cell has counts
    if power_of_two_medians:
        # exact arithmetic: equal ratios (2/2 == 1/1) are exact ties, broken by gene order
        choices = st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, np.nan])
    else:
        choices = st.one_of(st.floats(0.05, 50.0), st.just(np.nan))
    med = np.array(draw(st.lists(choices, min_size=g, max_size=g)), dtype=np.float64)
    if not np.isfinite(med).any():
        med[0] = 1.0
    recipe = draw(st.sampled_from(["geneformer_v1", "geneformer_v2"]))
    n_special = 2 if recipe == "geneformer_v2" else 0
    max_tokens = draw(st.integers(n_special + 1, g + n_special + 2))
    fmt = draw(st.sampled_from(["csr", "csc", "dense"]))
    return X, med, recipe, max_tokens, fmt


def _to_format(X, fmt):
    return {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](X)


@HYP
@given(counts_and_medians(power_of_two_medians=True))
def test_matches_reference_with_exact_ties(case):
    X, med, recipe, max_tokens, fmt = case
    adata = make_adata(_to_format(X, fmt), medians=med)
    dfm.pp.tokenize(adata, recipe=recipe, max_tokens=max_tokens)
    expected, n_tok = reference_tokens(X, med, max_tokens=max_tokens, recipe=recipe)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], n_tok)


@HYP
@given(counts_and_medians(power_of_two_medians=False), st.integers(1, 4))
def test_matches_reference_any_medians_and_chunking(case, chunk_size):
    X, med, recipe, max_tokens, fmt = case
    adata = make_adata(_to_format(X, fmt), medians=med)
    dfm.pp.tokenize(adata, recipe=recipe, max_tokens=max_tokens, chunk_size=chunk_size)
    expected, n_tok = reference_tokens(X, med, max_tokens=max_tokens, recipe=recipe)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], n_tok)


@HYP
@given(counts_and_medians(power_of_two_medians=True), st.data())
def test_custom_vocab_matches_reference(case, data):
    X, med, recipe, max_tokens, _ = case
    g = X.shape[1]
    ids = data.draw(st.permutations(list(range(10, 10 + 2 * g))))[:g]
    in_vocab = data.draw(st.lists(st.booleans(), min_size=g, max_size=g))
    in_vocab[0] = True
    vocab = {"<pad>": 5, "<cls>": 6, "<eos>": 7}
    vocab.update({f"g{j}": ids[j] for j in range(g) if in_vocab[j]})
    med = med.copy()
    if not np.isfinite(med[np.asarray(in_vocab)]).any():
        med[0] = 1.0
    token_of = np.array([ids[j] if in_vocab[j] else -1 for j in range(g)])
    adata = make_adata(sp.csr_matrix(X), medians=med)
    dfm.pp.tokenize(adata, recipe=recipe, max_tokens=max_tokens, vocab=vocab)
    expected, n_tok = reference_tokens(
        X, med, max_tokens=max_tokens, recipe=recipe, token_of=token_of, pad=5, cls=6, eos=7
    )
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], n_tok)


@HYP
@given(counts_and_medians(power_of_two_medians=False), st.integers(1, 12), st.data())
def test_kernel_contract(case, max_tokens, data):
    """``rank_value_encode`` (used by other modules): indices, values and lengths, and the
    ``lut``/``out``/``pad_value`` options, against the per-cell rule."""
    from diffbio_sc.ops._rank_value import rank_value_encode

    X, med, _, _, _ = case
    n, g = X.shape
    with np.errstate(divide="ignore"):
        scale = np.where(np.isfinite(med), 1.0 / med, 0.0)
    gene_idx, values, n_tokens = rank_value_encode(
        sp.csr_matrix(X), scale, target_sum=100.0, max_tokens=max_tokens
    )
    expected, n_exp = reference_tokens(
        X, med, max_tokens=max_tokens, token_of=np.arange(g), pad=-1, target_sum=100.0
    )
    np.testing.assert_array_equal(gene_idx, expected)
    np.testing.assert_array_equal(n_tokens, n_exp)
    for i in range(n):
        k = n_exp[i]
        v = ((scale * X[i]) * (100.0 / X[i].sum())).astype(np.float32)
        np.testing.assert_array_equal(values[i, :k], v[gene_idx[i, :k]])
        assert (values[i, k:] == 0).all()
    # a non-affine id map written into a strided view of a bigger array
    lut = np.array(data.draw(st.permutations(range(100, 100 + g))))
    big = np.full((n, max_tokens + 3), -7, dtype=np.int32)
    ids, vals, n_tok2 = rank_value_encode(
        sp.csr_matrix(X),
        scale,
        target_sum=100.0,
        max_tokens=max_tokens,
        lut=lut,
        pad_value=9,
        out=big[:, 1 : 1 + max_tokens],
        with_values=False,
        n_jobs=2,
    )
    assert vals is None and np.shares_memory(ids, big)
    np.testing.assert_array_equal(ids, np.where(expected >= 0, lut[np.maximum(expected, 0)], 9))
    assert (big[:, 0] == -7).all() and (big[:, 1 + max_tokens :] == -7).all()
    np.testing.assert_array_equal(n_tok2, n_tokens)


# --------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def synth():
    adata = dfm.datasets.synthetic_counts(120, 200, seed=3)
    dfm.pp.gene_medians(adata)
    return adata


def _tokens(adata, **kw):
    dfm.pp.tokenize(adata, max_tokens=60, **kw)
    return adata.obsm["dfm_tokens"].copy(), adata.obs["dfm_n_tokens"].to_numpy().copy()


def test_reference_on_synthetic_data(synth):
    adata = synth.copy()
    tokens, n_tok = _tokens(adata)
    expected, n_exp = reference_tokens(adata.X, adata.var["dfm_median"], max_tokens=60)
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(n_tok, n_exp)


def test_input_formats_give_identical_tokens(synth, input_format, matrix_equal):
    """Every storage (conftest.INPUT_FORMATS) gives the tokens of the in-memory CSR."""
    expected = _tokens(synth.copy())
    adata, layer = input_format(synth)  # .var['dfm_median'] carried over
    before = None if adata.isbacked else adata.copy()
    tokens, n_tok = _tokens(adata, layer=layer, chunk_size=32)
    np.testing.assert_array_equal(tokens, expected[0])
    np.testing.assert_array_equal(n_tok, expected[1])
    if before is not None:  # input never modified (stored zeros, duplicates, order)
        X, X0 = (
            adata.layers[layer] if layer else adata.X,
            before.layers[layer] if layer else before.X,
        )
        if sp.issparse(X) or isinstance(X, np.ndarray):
            matrix_equal(X, X0)
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["layer"] == (layer or "X")


def test_chunk_sizes_give_identical_tokens(synth):
    results = [_tokens(synth.copy(), chunk_size=c) for c in (1, 7, 10_000)]
    for tokens, n_tok in results[1:]:
        np.testing.assert_array_equal(tokens, results[0][0])
        np.testing.assert_array_equal(n_tok, results[0][1])


def test_threads_give_identical_tokens(synth):
    old = dfm.settings.n_jobs
    try:
        dfm.settings.n_jobs = 1
        one = _tokens(synth.copy())
        dfm.settings.n_jobs = 2
        two = _tokens(synth.copy())
    finally:
        dfm.settings.n_jobs = old
    np.testing.assert_array_equal(one[0], two[0])


def test_cell_tokens_depend_only_on_that_cell(synth):
    full_tokens, full_n = _tokens(synth.copy())
    rng = np.random.default_rng(0)
    idx = rng.permutation(synth.n_obs)[:37]  # a subset, shuffled
    sub = synth[idx].copy()
    tokens, n_tok = _tokens(sub)
    np.testing.assert_array_equal(tokens, full_tokens[idx])
    np.testing.assert_array_equal(n_tok, full_n[idx])


def test_default_medians_are_computed_and_written(synth):
    adata = synth.copy()
    del adata.var["dfm_median"]
    _tokens(adata)
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["median_source"] == "computed from data"
    np.testing.assert_array_equal(adata.var["dfm_median"], synth.var["dfm_median"])
    expected = reference_tokens(adata.X, synth.var["dfm_median"], max_tokens=60)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected[0])


def test_copy_and_keys(synth, unchanged):
    adata = synth.copy()
    before = adata.copy()
    out = dfm.pp.tokenize(adata, max_tokens=30, copy=True, key_added="tok", n_tokens_key="ntok")
    assert out is not adata
    unchanged(adata, before)
    assert "tok" in out.obsm and "ntok" in out.obs and "dfm_tokens" not in out.obsm
    meta = out.uns["dfm"]["tokenizer"]["tok"]
    assert meta["key_added"] == "tok" and meta["n_tokens_key"] == "ntok"
    assert dfm.pp.tokenize(adata, max_tokens=30) is None
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], out.obsm["tok"])


@pytest.mark.parametrize("storage", ["csr", "csr_layer", "csc", "dense"])
def test_backed_matches_in_memory(synth, tmp_path, storage):
    mem = synth.copy()
    del mem.var["dfm_median"]
    layer = None
    if storage == "csr_layer":
        mem.layers["counts"] = mem.X.copy()
        mem.X = sp.csr_matrix(mem.shape, dtype=np.float32)  # all zero: rejected if read
        layer = "counts"
    elif storage == "csc":
        mem.X = mem.X.tocsc()
    elif storage == "dense":
        mem.X = mem.X.toarray()
    path = tmp_path / "counts.h5ad"
    mem.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        dfm.pp.tokenize(backed, recipe="geneformer_v2", max_tokens=50, chunk_size=16, layer=layer)
        dfm.pp.tokenize(mem, recipe="geneformer_v2", max_tokens=50, layer=layer)
        np.testing.assert_array_equal(backed.obsm["dfm_tokens"], mem.obsm["dfm_tokens"])
        np.testing.assert_array_equal(backed.obs["dfm_n_tokens"], mem.obs["dfm_n_tokens"])
        np.testing.assert_array_equal(backed.var["dfm_median"], mem.var["dfm_median"])
        expected = reference_tokens(
            synth.X, mem.var["dfm_median"], max_tokens=50, recipe="geneformer_v2"
        )
        np.testing.assert_array_equal(backed.obsm["dfm_tokens"], expected[0])
        with pytest.raises(DfmInputError, match="backed"):
            dfm.pp.tokenize(backed, max_tokens=50, copy=True, layer=layer)
    finally:
        backed.file.close()


def test_backed_bad_value_is_reported(synth, tmp_path):
    mem = synth.copy()
    X = mem.X.tocsr().astype(np.float32)
    X.data[-3] = 0.5  # non-integer, in the last chunk
    mem.X = X
    path = tmp_path / "bad.h5ad"
    mem.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(DfmInputError, match="non-integer"):
            dfm.pp.tokenize(backed, max_tokens=20, chunk_size=32)
        assert "dfm_tokens" not in backed.obsm and "tokenizer" not in backed.uns["dfm"]
        assert "dfm_median" in backed.var  # from synth: unchanged
    finally:
        backed.file.close()


# --------------------------------------------------------------------------- tables


@pytest.fixture
def small():
    """Three cells x four genes with hand-picked medians."""
    X = np.array([[5, 1, 0, 2], [0, 3, 3, 0], [1, 1, 1, 1]])
    med = {"g0": 2.0, "g1": 0.5, "g2": 1.5, "g3": 1.0}
    adata = make_adata(sp.csr_matrix(X))
    return adata, X, med


def _write_table(path, med, *, header, sep):
    lines = [f"gene{sep}{header}"] if header else []
    lines += [f"{k}{sep}{v}" for k, v in med.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "source",
    [
        "var",
        "mapping",
        "json",
        "csv_median",
        "csv_value",
        "csv_no_header",
        "tsv_median",
        "tsv_no_header",
        "txt",
    ],
)
def test_median_sources_agree(small, tmp_path, source):
    adata, X, med = small
    if source == "var":
        adata.var["my_median"] = [med[g] for g in adata.var_names]
        arg, expected_source = "my_median", "var:my_median"
    elif source == "mapping":
        arg, expected_source = med, "mapping"
    elif source == "json":
        arg = tmp_path / "m.json"
        arg.write_text(json.dumps(med))
        expected_source = f"file:{arg}"
    else:
        kind, _, header = source.partition("_")
        sep = "," if kind == "csv" else "\t"
        header = {"median": "median", "value": "value", "no": None}.get(
            header.split("_")[0], "median"
        )
        arg = _write_table(tmp_path / f"m.{kind}", med, header=header, sep=sep)
        expected_source = f"file:{arg}"
    dfm.pp.tokenize(adata, gene_medians=arg, max_tokens=4)
    medv = [med[g] for g in adata.var_names]
    expected, n_tok = reference_tokens(X, medv, max_tokens=4)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], n_tok)
    assert adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["median_source"] == expected_source
    assert "dfm_median" not in adata.var  # only written when computed from the data


def test_csv_table_with_index_column_and_extra_columns(small, tmp_path):
    adata, X, med = small
    df = pd.DataFrame({"symbol": list(med), "note": ["x"] * 4, "gene_median": list(med.values())})
    path = tmp_path / "m.csv"
    df.set_index("symbol").to_csv(path)
    dfm.pp.tokenize(adata, gene_medians=path, max_tokens=4)
    expected, _ = reference_tokens(X, list(med.values()), max_tokens=4)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)


@pytest.mark.parametrize("source", ["mapping", "json", "csv", "csv_no_header", "tsv"])
def test_vocab_sources_agree(small, tmp_path, source):
    adata, X, med = small
    vocab = {
        "<pad>": 0,
        "<mask>": 1,
        "<cls>": 2,
        "<eos>": 3,
        "g0": 40,
        "g1": 30,
        "g2": 20,
        "g3": 10,
    }
    if source == "mapping":
        arg = vocab
    elif source == "json":
        arg = tmp_path / "v.json"
        arg.write_text(json.dumps(vocab))
    else:
        kind = source.split("_")[0]
        sep = "," if kind == "csv" else "\t"
        arg = _write_table(
            tmp_path / f"v.{kind}",
            vocab,
            header=None if "no_header" in source else "token_id",
            sep=sep,
        )
    dfm.pp.tokenize(adata, gene_medians=med, vocab=arg, recipe="geneformer_v2", max_tokens=6)
    expected, _ = reference_tokens(
        X, list(med.values()), max_tokens=6, recipe="geneformer_v2", token_of=[40, 30, 20, 10]
    )
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["vocab_size"] == 8
    assert meta["vocab_source"] == ("mapping" if source == "mapping" else f"file:{arg}")


def test_pickle_needs_trust_flag(small, tmp_path, unchanged):
    adata, X, med = small
    med_path = tmp_path / "gene_median_dictionary.pkl"
    with open(med_path, "wb") as fh:
        pickle.dump(med, fh)
    before = adata.copy()
    with pytest.raises(DfmInputError, match="pickle") as err:
        dfm.pp.tokenize(adata, gene_medians=med_path, max_tokens=4)
    assert "JSON" in str(err.value) and "json.dump" in str(err.value)
    assert "trust_pickle=True" in str(err.value)
    unchanged(adata, before)
    vocab_path = tmp_path / "token_dictionary.pickle"
    with open(vocab_path, "wb") as fh:
        pickle.dump({"<pad>": 0, "g0": 5, "g1": 6, "g2": 7, "g3": 8}, fh)
    with pytest.raises(DfmInputError, match="JSON"):
        dfm.pp.tokenize(adata, gene_medians=med, vocab=vocab_path, max_tokens=4)
    unchanged(adata, before)
    dfm.pp.tokenize(adata, gene_medians=med_path, vocab=vocab_path, max_tokens=4, trust_pickle=True)
    expected, _ = reference_tokens(X, list(med.values()), max_tokens=4, token_of=[5, 6, 7, 8])
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)


@pytest.mark.parametrize("versioned_side", ["var_names", "tables"])
def test_ensembl_versions_are_matched(versioned_side):
    ids = ["ENSG00000139618", "ENSG00000000003", "ENSMUSG00000000001", "MYGENE"]
    versioned = ["ENSG00000139618.15", "ENSG00000000003.4", "ENSMUSG00000000001.2", "MYGENE"]
    X = np.array([[5, 1, 0, 2], [0, 3, 3, 1]])
    var_names = versioned if versioned_side == "var_names" else ids
    table_keys = ids if versioned_side == "var_names" else versioned
    med = dict(zip(table_keys, [2.0, 0.5, 1.5, 1.0], strict=True))
    vocab = {"<pad>": 0, **dict(zip(table_keys, [11, 12, 13, 14], strict=True))}
    adata = make_adata(sp.csr_matrix(X), var_names=var_names)
    dfm.pp.tokenize(adata, gene_medians=med, vocab=vocab, max_tokens=4)
    expected, _ = reference_tokens(X, [2.0, 0.5, 1.5, 1.0], max_tokens=4, token_of=[11, 12, 13, 14])
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], expected)
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["n_genes_used"] == 4 and meta["frac_genes_in_vocab"] == 1.0


def test_missing_genes_are_excluded_reported_and_recorded(dfm_log):
    # genes a b c d; vocab lacks c; medians lack b (and c)
    X = np.array([[1, 2, 3, 4], [0, 5, 0, 5]])
    adata = make_adata(sp.csr_matrix(X), var_names=["a", "b", "c", "d"])
    vocab = {"<pad>": 0, "a": 10, "b": 11, "d": 13}
    med = {"a": 1.0, "c": 1.0, "d": 2.0}
    dfm.pp.tokenize(adata, gene_medians=med, vocab=vocab, max_tokens=3)
    # cell 0: a 1000/1 = 1000, d 4000/2 = 2000 -> [d, a]; cell 1: d 5000/2 -> [d]
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], [[13, 10, 0], [13, 0, 0]])
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], [2, 1])
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["n_genes"] == 4 and meta["n_genes_in_vocab"] == 3 and meta["n_genes_used"] == 2
    assert meta["frac_genes_in_vocab"] == pytest.approx(3 / 4)
    # counts of a, b, d over all counts: (1 + 2 + 4 + 5 + 5) / (10 + 10)
    assert meta["frac_counts_in_vocab"] == pytest.approx(17 / 20)
    assert list(meta["genes_not_in_vocab"]) == ["c"]
    assert list(meta["genes_without_median"]) == ["b"] and meta["n_genes_without_median"] == 1
    text = warnings_text(dfm_log)
    assert "1 of 3 vocabulary genes have no positive median" in text and "'b'" in text
    assert "1 of 4 genes are not in the vocabulary" in text and "'c'" in text


def test_nonpositive_medians_are_excluded(dfm_log):
    X = np.array([[1, 2, 3]])
    adata = make_adata(sp.csr_matrix(X), medians=[1.0, 0.0, -1.0])
    dfm.pp.tokenize(adata, max_tokens=3)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], [[4, 0, 0]])
    assert "2 of 3 vocabulary genes have no positive median" in warnings_text(dfm_log)


@pytest.mark.parametrize(
    ("vocab", "recipe", "missing"),
    [
        ({"g0": 4, "g1": 5}, "geneformer_v1", "<pad>"),
        ({"<pad>": 0, "<eos>": 3, "g0": 4, "g1": 5}, "geneformer_v2", "<cls>"),
        ({"<pad>": 0, "<cls>": 2, "g0": 4, "g1": 5}, "geneformer_v2", "<eos>"),
    ],
)
def test_vocab_without_special_tokens_is_an_error(vocab, recipe, missing, unchanged):
    adata = make_adata(sp.csr_matrix(np.array([[1, 2]])), medians=[1.0, 1.0])
    before = adata.copy()
    with pytest.raises(DfmInputError, match=missing):
        dfm.pp.tokenize(adata, vocab=vocab, recipe=recipe, max_tokens=4)
    unchanged(adata, before)


def test_v1_vocab_needs_only_pad():
    adata = make_adata(sp.csr_matrix(np.array([[1, 2]])), medians=[1.0, 1.0])
    dfm.pp.tokenize(adata, vocab={"<pad>": 9, "g0": 4, "g1": 5}, max_tokens=3)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], [[5, 4, 9]])


# --------------------------------------------------------------------------- bad input


def _bad_case(name):
    """(adata, kwargs, error type, message fragment) for one kind of bad input."""
    X = np.array([[3, 0, 1, 2], [1, 1, 0, 4], [0, 2, 2, 2]], dtype=np.float64)
    med = [1.0, 2.0, 1.0, 0.5]
    kw = {"max_tokens": 4}
    err, msg = DfmInputError, None
    var_names = obs_names = None
    if name == "negative":
        X[1, 0] = -1
        msg = "negative"
    elif name == "nan":
        X[0, 1] = np.nan
        msg = "NaN or infinite"
    elif name == "inf":
        X[2, 3] = np.inf
        msg = "NaN or infinite"
    elif name == "non_integer":
        X[0, 0] = 0.5
        msg = "non-integer"
    elif name == "all_zero_cell":
        X[1] = 0
        msg = "1 cells have no counts.*'c1'"
    elif name == "empty_cells":
        X = X[:0]
        msg = "empty"
    elif name == "empty_genes":
        X, med = X[:, :0], []
        msg = "empty"
    elif name == "dup_obs":
        obs_names = ["a", "b", "a"]
        msg = "duplicate obs_names.*'a'"
    elif name == "dup_var":
        var_names = ["x", "y", "x", "z"]
        msg = "duplicate var_names.*'x'"
    elif name == "dup_var_after_version_strip":
        var_names = ["ENSG00000139618.1", "ENSG00000139618.2", "b", "c"]
        msg = "Ensembl version.*ENSG00000139618"
    elif name == "unknown_recipe":
        kw = {"recipe": "scgpt"}
        msg = "Unknown recipe 'scgpt'.*geneformer_v1"
    elif name == "max_tokens_v1":
        kw = {"max_tokens": 0}
        msg = "max_tokens=0 leaves no room"
    elif name == "max_tokens_v2":
        kw = {"max_tokens": 2, "recipe": "geneformer_v2"}
        msg = "max_tokens=2 leaves no room"
    elif name == "missing_layer":
        kw = {"layer": "counts", "max_tokens": 4}
        msg = "Layer 'counts' not found"
    elif name == "missing_median_column":
        kw = {"gene_medians": "nope", "max_tokens": 4}
        msg = "gene_medians='nope' is neither a .var column"
    elif name == "non_numeric_median_column":
        kw = {"gene_medians": "label", "max_tokens": 4}
        msg = "not numeric"
    elif name == "non_numeric_median_value":
        kw = {"gene_medians": {"g0": "high", "g1": 1.0}, "max_tokens": 4}
        msg = "'g0' is 'high', not a number"
    elif name == "vocab_duplicate_ids":
        kw = {"vocab": {"<pad>": 0, "g0": 4, "g1": 4}, "max_tokens": 4}
        msg = "same id"
    elif name == "vocab_not_integer":
        kw = {"vocab": {"<pad>": 0, "g0": "four"}, "max_tokens": 4}
        msg = "integer token ids"
    elif name == "no_gene_matches_vocab":
        kw = {"vocab": {"<pad>": 0, "ENSG00000139618": 4}, "max_tokens": 4}
        msg = "No gene is both in the vocabulary.*symbols vs Ensembl"
    elif name == "median_table_missing":
        kw = {"gene_medians": "/nonexistent/medians.json", "max_tokens": 4}
        err, msg = FileNotFoundError, "medians.json"
    elif name == "vocab_wrong_type":
        kw = {"vocab": 12, "max_tokens": 4}
        err, msg = TypeError, "vocab must be"
    elif name == "target_sum":
        kw = {"target_sum": 0, "max_tokens": 4}
        msg = "target_sum must be > 0"
    elif name == "not_anndata":
        return X, kw, TypeError, "Expected an AnnData"
    adata = make_adata(sp.csr_matrix(X), var_names=var_names, obs_names=obs_names, medians=med)
    adata.var["label"] = "x"
    adata.obsm["X_other"] = np.arange(X.shape[0] * 2, dtype=float).reshape(-1, 2)
    adata.uns["dfm"] = {"tokenizer": {"recipe": "previous"}}
    return adata, kw, err, msg


BAD = [
    "negative", "nan", "inf", "non_integer", "all_zero_cell", "empty_cells", "empty_genes",
    "dup_obs", "dup_var", "dup_var_after_version_strip", "unknown_recipe", "max_tokens_v1",
    "max_tokens_v2", "missing_layer", "missing_median_column", "non_numeric_median_column",
    "non_numeric_median_value", "vocab_duplicate_ids", "vocab_not_integer",
    "no_gene_matches_vocab", "median_table_missing", "vocab_wrong_type", "target_sum",
    "not_anndata",
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")
@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_rejected_and_adata_unchanged(name, unchanged):
    adata, kw, err, msg = _bad_case(name)
    if not isinstance(adata, ad.AnnData):
        with pytest.raises(err, match=msg):
            dfm.pp.tokenize(adata, **kw)
        return
    before = adata.copy()
    with pytest.raises(err, match=msg):
        dfm.pp.tokenize(adata, **kw)
    unchanged(adata, before)


@pytest.mark.parametrize("name", ["negative", "nan", "all_zero_cell"])
def test_bad_input_with_computed_medians_leaves_adata_unchanged(name, unchanged):
    """The medians pass must not write .var['dfm_median'] before the error."""
    adata, kw, err, msg = _bad_case(name)
    del adata.var["dfm_median"]
    before = adata.copy()
    with pytest.raises(err, match=msg):
        dfm.pp.tokenize(adata, **kw)
    assert "dfm_median" not in adata.var
    unchanged(adata, before)


def test_bad_value_in_a_late_chunk_leaves_adata_unchanged(synth, unchanged):
    adata = synth.copy()
    X = adata.X.tocsr().astype(np.float32)
    X.data[-1] = -2.0  # last cell, so every earlier chunk is processed first
    adata.X = X
    before = adata.copy()
    with pytest.raises(DfmInputError, match="negative"):
        dfm.pp.tokenize(adata, max_tokens=20, chunk_size=10)
    unchanged(adata, before)


# --------------------------------------------------------------------------- h5ad


def test_h5ad_round_trip(synth, tmp_path, uns_equal):
    adata = synth.copy()
    del adata.var["dfm_median"]
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=40)
    adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["genes_not_in_vocab"] = [
        "keep",
        "these",
    ]  # non-empty list
    path = tmp_path / "tok.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["dfm_tokens"], adata.obsm["dfm_tokens"])
    assert back.obsm["dfm_tokens"].dtype == np.int32
    np.testing.assert_array_equal(back.obs["dfm_n_tokens"], adata.obs["dfm_n_tokens"])
    np.testing.assert_array_equal(back.var["dfm_median"], adata.var["dfm_median"])
    uns_equal(dict(back.uns["dfm"]), dict(adata.uns["dfm"]))
    meta = back.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert (
        meta["recipe"] == "geneformer_v2"
        and meta["created_by"]["function"] == "diffbio_sc.pp.tokenize"
    )
    assert meta["special_token_ids"]["<cls>"] == CLS


# --------------------------------------------------------------------------- real data


def test_real_pbmc_matches_reference(pbmc_path):
    adata = ad.read_h5ad(pbmc_path)
    dfm.pp.tokenize(adata)  # v1, medians computed from the data
    tokens = adata.obsm["dfm_tokens"]
    med = adata.var["dfm_median"].to_numpy()
    X = adata.X.tocsr()
    nnz = np.diff(X.indptr)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], np.minimum(nnz, 2048))
    sample = np.random.default_rng(0).choice(adata.n_obs, 60, replace=False)
    expected, n_tok = reference_tokens(X[sample], med, max_tokens=2048)
    np.testing.assert_array_equal(tokens[sample], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"].to_numpy()[sample], n_tok)
    # every kept token is a distinct gene id
    for row, n in zip(tokens[sample], n_tok, strict=True):
        assert len(set(row[:n])) == n
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["frac_genes_in_vocab"] == 1.0 and meta["frac_counts_in_vocab"] == 1.0


def test_real_pbmc_v2_subset_equals_rows(pbmc_path):
    adata = ad.read_h5ad(pbmc_path)
    dfm.pp.gene_medians(adata)
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=512)
    batch = adata.obs["batch"].astype(str).to_numpy()
    sub = adata[batch == batch[0]].copy()
    dfm.pp.tokenize(sub, recipe="geneformer_v2", max_tokens=512)  # uses the copied medians
    np.testing.assert_array_equal(
        sub.obsm["dfm_tokens"], adata.obsm["dfm_tokens"][batch == batch[0]]
    )
    tokens = adata.obsm["dfm_tokens"]
    assert (tokens[:, 0] == CLS).all()
    n = adata.obs["dfm_n_tokens"].to_numpy()
    assert (tokens[np.arange(adata.n_obs), n - 1] == EOS).all()


def test_bundled_demo_with_ensembl_vocab_file(tmp_path):
    adata = dfm.datasets.celllines_demo()
    assert adata.var_names[0].startswith("ENSG")
    dfm.pp.gene_medians(adata)
    # a user vocabulary keyed by versioned Ensembl IDs, covering 3 of every 4 genes
    rng = np.random.default_rng(1)
    ids = rng.permutation(adata.n_vars) + 100
    keep = np.arange(adata.n_vars) % 4 != 3
    vocab = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    vocab.update(
        {f"{g}.7": int(i) for g, i, k in zip(adata.var_names, ids, keep, strict=True) if k}
    )
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab))
    dfm.pp.tokenize(adata, recipe="geneformer_v2", vocab=path, max_tokens=300)
    token_of = np.where(keep, ids, -1)
    sample = rng.choice(adata.n_obs, 40, replace=False)
    expected, n_tok = reference_tokens(
        adata.X[sample],
        adata.var["dfm_median"],
        max_tokens=300,
        recipe="geneformer_v2",
        token_of=token_of,
    )
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"][sample], expected)
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"].to_numpy()[sample], n_tok)
    meta = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert meta["n_genes_in_vocab"] == keep.sum()
    X = adata.X.tocsr()
    frac_counts = X[:, np.flatnonzero(keep)].sum() / X.sum()
    assert meta["frac_counts_in_vocab"] == pytest.approx(frac_counts, rel=1e-12)
