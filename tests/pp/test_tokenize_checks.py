"""``pp.tokenize`` checks its input inside the rank kernel's pass (issue 25, item 4).

The checks that ``validate_chunk`` does before encoding (finite, non-negative,
whole-number values; canonical CSR indices; finite, positive cell totals) run
per row in the kernel; pieces of ``chunk_size`` cells with a flagged row then
go through ``validate_chunk`` itself. These tests hold the fused path to the
unfused one: the same error message, from the same chunk, on random mixes of
defects; the same tokens on non-canonical input; the AnnData unchanged.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError, validated_chunks
from diffbio_sc.ops import _rank_value_nb as nb
from diffbio_sc.ops._csr import row_totals
from diffbio_sc.ops._rank_value import rank_value_encode
from diffbio_sc.pp._tokenize import TokenizerRecipe

N_CELLS, N_GENES, CHUNK = 70, 40, 16


def _counts(dtype, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = rng.poisson(0.8, (N_CELLS, N_GENES)) * (rng.random((N_CELLS, N_GENES)) < 0.5)
    X[:, 0] += 1  # no empty cell
    return sp.csr_matrix(X.astype(dtype))


def _adata(X) -> ad.AnnData:
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]),
    )
    adata.var["dfm_median"] = np.linspace(0.5, 3.0, X.shape[1])
    return adata


def _put(X: sp.csr_matrix, kind: str, row: int, rng) -> None:
    """Write one defect of ``kind`` into ``row`` of ``X`` (in place, structure kept)."""
    a, b = X.indptr[row], X.indptr[row + 1]
    j = a + int(rng.integers(b - a))
    if kind == "empty":
        X.data[a:b] = 0  # stored zeros only: the cell has no counts
    elif kind == "overflow":  # finite values whose total is not
        X.data[a:b] = 1.5e308
    else:
        X.data[j] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "neg": -2, "frac": 2.5}[kind]


def _unfused_error(adata: ad.AnnData, chunk_size: int) -> str | None:
    """The message of the unfused path: validate each chunk before encoding it."""
    try:
        for _ in validated_chunks(adata, None, chunk_size, require_integer=True):
            pass
    except DfmInputError as err:
        return str(err)
    return None


def _reference(X: sp.csr_matrix, medians: np.ndarray, max_tokens: int) -> np.ndarray:
    """The documented per-cell rule on a canonical matrix (float32 values, stable order)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sum_duplicates()
    scale = 1.0 / medians
    out = np.zeros((X.shape[0], max_tokens), np.int32)
    for i in range(X.shape[0]):
        a, b = X.indptr[i], X.indptr[i + 1]
        g, d = X.indices[a:b], X.data[a:b]
        v = ((scale[g] * d) * (10_000.0 / d.sum())).astype(np.float32)
        keep = v > 0
        g, v = g[keep], v[keep]
        order = np.argsort(-v, kind="stable")[:max_tokens]
        out[i, : order.size] = g[order] + 4
    return out


FLOAT_KINDS = ["nan", "inf", "-inf", "neg", "frac", "empty", "overflow"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint16])
def test_random_defects_give_the_unfused_error(dtype, unchanged):
    """1-3 defects in random rows: the error of the first bad chunk, word for word."""
    kinds = FLOAT_KINDS if np.dtype(dtype).kind == "f" else ["neg", "empty"]
    if np.dtype(dtype).kind == "u":
        kinds = ["empty"]
    if dtype == np.float32:
        kinds = [k for k in kinds if k != "overflow"]  # 1.5e308 is inf in float32
    rng = np.random.default_rng(int(np.dtype(dtype).num))
    for case in range(12):
        X = _counts(dtype, seed=case)
        for _ in range(int(rng.integers(1, 4))):
            _put(X, str(rng.choice(kinds)), int(rng.integers(N_CELLS)), rng)
        adata = _adata(X)
        expected = _unfused_error(adata, CHUNK)
        assert expected is not None
        before = adata.copy()
        with pytest.raises(DfmInputError) as err:
            dfm.pp.tokenize(adata, max_tokens=12, chunk_size=CHUNK)
        assert str(err.value) == expected, (case, dtype)
        unchanged(adata, before)


def test_value_error_comes_before_an_earlier_empty_cell_of_the_same_chunk(unchanged):
    X = _counts(np.float32)
    rng = np.random.default_rng(0)
    _put(X, "empty", 17, rng)  # chunk 1 (rows 16-31)
    _put(X, "nan", 20, rng)  # same chunk: values are checked before totals
    _put(X, "neg", 3, rng)  # ... unless an earlier chunk has a problem
    adata = _adata(X)
    before = adata.copy()
    with pytest.raises(DfmInputError, match="1 negative values"):
        dfm.pp.tokenize(adata, max_tokens=12, chunk_size=CHUNK)
    unchanged(adata, before)
    adata.X.data[adata.X.data < 0] = 1
    before = adata.copy()
    with pytest.raises(DfmInputError, match="1 NaN or infinite values"):
        dfm.pp.tokenize(adata, max_tokens=12, chunk_size=CHUNK)
    unchanged(adata, before)


def _scrambled(X: sp.csr_matrix, rows_unsorted, rows_split) -> sp.csr_matrix:
    """The same values with some rows' indices reversed and others split into duplicates."""
    data, indices, indptr = [], [], [0]
    for i in range(X.shape[0]):
        a, b = X.indptr[i], X.indptr[i + 1]
        d, g = X.data[a:b], X.indices[a:b]
        if i in rows_split:  # each value v as v - v // 2 and v // 2 on the same gene
            d = np.concatenate([d - d // 2, d // 2])
            g = np.concatenate([g, g])
        if i in rows_unsorted:
            d, g = d[::-1], g[::-1]
        data.append(d)
        indices.append(g)
        indptr.append(indptr[-1] + d.size)
    out = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=X.shape
    )
    out.has_sorted_indices = False
    return out


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_non_canonical_rows_give_the_canonical_tokens(dtype, unchanged):
    X = _counts(dtype, seed=3)
    scrambled = _scrambled(X, rows_unsorted={2, 40, 41}, rows_split={5, 40, 69})
    ref = _adata(X)
    dfm.pp.tokenize(ref, max_tokens=12, chunk_size=CHUNK)
    adata = _adata(scrambled)
    before = adata.copy()
    dfm.pp.tokenize(adata, max_tokens=12, chunk_size=CHUNK)
    np.testing.assert_array_equal(adata.obsm["dfm_tokens"], ref.obsm["dfm_tokens"])
    np.testing.assert_array_equal(adata.obs["dfm_n_tokens"], ref.obs["dfm_n_tokens"])
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"], _reference(X, ref.var["dfm_median"].to_numpy(), 12)
    )
    rec, rec_ref = (a.uns["dfm"]["tokenizer"]["dfm_tokens"] for a in (adata, ref))
    assert rec["frac_counts_in_vocab"] == rec_ref["frac_counts_in_vocab"]
    # the input's arrays were not canonicalised in place
    assert_x = before.X
    np.testing.assert_array_equal(adata.X.indices, assert_x.indices)
    np.testing.assert_array_equal(adata.X.data, assert_x.data)


def test_totals_beyond_2_53_take_the_exact_path():
    """Whole numbers whose total reaches 2**53 are summed by row_totals, as before."""
    X = _counts(np.int64, seed=4)
    big = np.flatnonzero(np.diff(X.indptr) >= 3)[:3]
    for r in big:
        a = X.indptr[r]
        X.data[a : a + 3] = [2**53 - 1, 3, 2**52 + 1]
    adata = _adata(X)
    dfm.pp.tokenize(adata, max_tokens=12, chunk_size=CHUNK)
    np.testing.assert_array_equal(
        adata.obsm["dfm_tokens"], _reference(X, adata.var["dfm_median"].to_numpy(), 12)
    )


def test_kernel_flags_each_problem_and_encodes_the_other_rows():
    X = _counts(np.float64, seed=5)
    rng = np.random.default_rng(5)
    bad = {3: "nan", 9: "neg", 12: "frac", 20: "empty", 33: "inf"}
    for row, kind in bad.items():
        _put(X, kind, row, rng)
    X = sp.csr_matrix(X)
    X.indices[X.indptr[50] : X.indptr[51]] = X.indices[X.indptr[50] : X.indptr[51]][::-1].copy()
    scale = 1.0 / np.linspace(0.5, 3.0, N_GENES)
    flags = np.full(N_CELLS, 255, np.uint8)
    totals = np.full(N_CELLS, -1.0)
    ids, _, n_tok = rank_value_encode(
        X, scale, target_sum=1e4, max_tokens=12, check=flags, require_integer=True,
        totals_out=totals, with_values=False,
    )  # fmt: skip
    expect = {3: nb.NONFINITE, 9: nb.NEGATIVE, 12: nb.NOT_WHOLE, 20: nb.EMPTY,
              33: nb.NONFINITE, 50: nb.NOT_CANONICAL}  # fmt: skip
    for r in range(N_CELLS):
        want = expect.get(r, 0)
        assert flags[r] & want == want, r
        if r not in expect:
            assert flags[r] == 0, r
    good = np.flatnonzero(flags == 0)
    assert n_tok[flags != 0].sum() == 0
    Xg = X[good]
    ref_ids, _, ref_n = rank_value_encode(Xg, scale, target_sum=1e4, max_tokens=12)
    np.testing.assert_array_equal(ids[good], ref_ids)
    np.testing.assert_array_equal(n_tok[good], ref_n)
    np.testing.assert_array_equal(totals[good], row_totals(Xg))
    # fractional values are fine without require_integer (totals then come from row_totals)
    flags2 = np.empty(N_CELLS, np.uint8)
    rank_value_encode(X, scale, target_sum=1e4, max_tokens=12, check=flags2)
    assert flags2[12] == 0 and flags2[3] & nb.NONFINITE


@pytest.mark.parametrize("dtype", [np.int32, np.float64, "fractional"])
def test_counts_in_vocabulary_are_summed_in_the_kernel_as_before(dtype):
    """``frac_counts_in_vocab`` equals the unfused sums (``chunk @ in_vocab``) bit for bit."""
    frac = dtype == "fractional"
    X = _counts(np.float32 if frac else dtype, seed=6)
    if frac:  # values of many magnitudes: the order of summation changes the rounding
        rng = np.random.default_rng(6)
        X.data = (rng.random(X.nnz) * 10.0 ** rng.integers(-8, 9, X.nnz)).astype(np.float32)
    adata = _adata(X)
    vocab = {"<pad>": 0, **{f"g{j}": j + 7 for j in range(N_GENES) if j % 3}}
    recipe = TokenizerRecipe("v1_values", 12, False, False, requires_counts=not frac)
    in_vocab = np.array([j % 3 != 0 for j in range(N_GENES)], dtype=np.float64)
    total = vocab_sum = 0.0
    for _, _, chunk, totals in validated_chunks(adata, None, CHUNK, require_integer=not frac):
        total += float(totals.sum())
        vocab_sum += float((chunk @ in_vocab).sum())
    dfm.pp.tokenize(adata, recipe=recipe, vocab=vocab, chunk_size=CHUNK)
    rec = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert 0 < rec["frac_counts_in_vocab"] < 1
    assert rec["frac_counts_in_vocab"] == vocab_sum / total


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float64, "fractional"])
def test_kernel_vocab_sums_equal_scipy_row_by_row(dtype):
    """Per row, ``vocab_out`` is ``X @ mask`` bit for bit (fractional values: the same order)."""
    frac = dtype == "fractional"
    X = _counts(np.float32 if frac else dtype, seed=7)
    if frac:  # 70 bits of magnitudes: sums depend on the order of the additions
        rng = np.random.default_rng(7)
        X.data = (rng.random(X.nnz) * 10.0 ** rng.integers(-8, 9, X.nnz)).astype(np.float32)
    mask = np.arange(N_GENES) % 3 != 0
    flags = np.empty(N_CELLS, np.uint8)
    got = np.full(N_CELLS, np.nan)
    scale = np.ones(N_GENES)
    rank_value_encode(
        X, scale, target_sum=1e4, max_tokens=12, check=flags, require_integer=not frac,
        vocab_mask=mask, vocab_out=got, with_values=False,
    )  # fmt: skip
    assert not flags.any()
    np.testing.assert_array_equal(got, X @ mask.astype(np.float64))
