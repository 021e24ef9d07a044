"""Bad input across every pp writer: each case gets our own clear error, and the AnnData is unchanged.

The cases come from issue 9 (a hostile user's inputs). Every writer checks all
of its arguments before reading the matrix, and writes only after everything
has been computed, so a failure never leaves a partial result behind.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

COUNTS = np.array(
    [[3, 0, 1, 2, 0], [1, 1, 0, 4, 2], [0, 2, 2, 2, 1], [5, 1, 0, 0, 3]], dtype=np.float32
)
GENES = ["g0", "g1", "g2", "g3", "g4"]

WRITERS = {
    "gene_medians": lambda a, **kw: dfm.pp.gene_medians(a, **kw),
    "tokenize": lambda a, **kw: dfm.pp.tokenize(a, **{"max_tokens": 4, **kw}),
    "bin_expression": lambda a, **kw: dfm.pp.bin_expression(a, **{"n_bins": 5, **kw}),
    "soft_rank": lambda a, **kw: dfm.pp.soft_rank(a, **kw),
}
OUTPUT_KEYS = {
    "gene_medians": ["key_added"],
    "tokenize": ["key_added", "n_tokens_key"],
    "bin_expression": ["key_added"],
    "soft_rank": ["key_added"],
}


def make(X=COUNTS, **layers) -> ad.AnnData:
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(np.shape(X)[0])]),
        var=pd.DataFrame(index=GENES[: np.shape(X)[1]]),
    )
    for k, v in layers.items():
        adata.layers[k] = v
    adata.uns["dfm"] = {"other": {"keep": 1}}
    return adata


def rejects(unchanged, writer: str, adata, err, match, **kw) -> None:
    before = adata.copy()
    with pytest.raises(err, match=match):
        WRITERS[writer](adata, **kw)
    unchanged(adata, before)


# --------------------------------------------------------------------------- output keys

KEY_CASES = [
    (w, key, bad) for w, keys in OUTPUT_KEYS.items() for key in keys for bad in (None, "", "a/b")
]


@pytest.mark.parametrize(("writer", "key", "bad"), KEY_CASES)
def test_bad_output_key_is_refused_before_writing(writer, key, bad, unchanged):
    err = TypeError if bad is None else DfmInputError
    rejects(unchanged, writer, make(sp.csr_matrix(COUNTS)), err, key, **{key: bad})


def test_tokenize_bad_n_tokens_key_writes_neither_medians_nor_tokens(unchanged):
    # on main, the computed medians and the tokens were written before the failure
    adata = make(sp.csr_matrix(COUNTS))
    before = adata.copy()
    with pytest.raises(DfmInputError, match="n_tokens_key"):
        dfm.pp.tokenize(adata, max_tokens=4, n_tokens_key="a/b")
    assert "dfm_median" not in adata.var and "dfm_tokens" not in adata.obsm
    unchanged(adata, before)


# --------------------------------------------------------------------------- integers

NUMBER_CASES = [(w, "chunk_size", bad) for w in WRITERS for bad in (0, 2.5, "10", True)] + [
    ("bin_expression", "seed", 0.7),
    ("bin_expression", "seed", 2**64),
    ("bin_expression", "seed", -1),
    ("bin_expression", "seed", "1"),
    ("bin_expression", "n_bins", "10"),
    ("tokenize", "max_tokens", 2.5),
    ("tokenize", "max_tokens", "10"),
    ("gene_medians", "target_sum", "1e4"),
    ("gene_medians", "target_sum", True),
    ("tokenize", "target_sum", "1e4"),
    ("tokenize", "target_sum", True),
    ("soft_rank", "temperature", True),
]


@pytest.mark.parametrize(("writer", "arg", "bad"), NUMBER_CASES)
def test_numbers_are_real_numbers_in_range(writer, arg, bad, unchanged):
    # no chunk_size=0 meaning "default", no 2.5 truncated, no '10' parsed, no seed=0.7 -> 0,
    # no target_sum='1e4' parsed or True read as 1
    rejects(
        unchanged,
        writer,
        make(sp.csr_matrix(COUNTS)),
        (TypeError, DfmInputError),
        arg,
        **{arg: bad},
    )


BOOL_CASES = [(w, "copy", bad) for w in WRITERS for bad in ("yes", 1)] + [
    ("tokenize", "trust_pickle", "no"),
    ("gene_medians", "require_counts", "no"),
]


@pytest.mark.parametrize(("writer", "arg", "bad"), BOOL_CASES)
def test_flags_are_booleans(writer, arg, bad, unchanged):
    rejects(unchanged, writer, make(sp.csr_matrix(COUNTS)), TypeError, arg, **{arg: bad})


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("where", ["X", "layer"])
def test_float16_is_read_as_float32(writer, where):
    ref = make(sp.csr_matrix(COUNTS))
    WRITERS[writer](ref)
    half = COUNTS.astype(np.float16)
    adata = make(half) if where == "X" else make(np.full(COUNTS.shape, -1.0), counts=half)
    WRITERS[writer](adata, **({} if where == "X" else {"layer": "counts"}))
    for attr in ("var", "obsm", "layers"):
        for k in getattr(ref, attr).keys() if attr != "var" else ref.var.columns:
            got, exp = getattr(adata, attr)[k], getattr(ref, attr)[k]
            got = got.toarray() if sp.issparse(got) else np.asarray(got)
            exp = exp.toarray() if sp.issparse(exp) else np.asarray(exp)
            np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("dtype", [object, complex, "U3"])
def test_non_numeric_dtype_gets_our_message(writer, dtype, unchanged):
    X = COUNTS.astype(dtype)
    rejects(unchanged, writer, make(X), DfmInputError, "has dtype .*astype\\(np.float32\\)")


def test_backed_float16_matches_in_memory(tmp_path):
    ref = make(sp.csr_matrix(COUNTS))
    dfm.pp.tokenize(ref, max_tokens=4)
    path = tmp_path / "half.h5ad"
    make(COUNTS.astype(np.float16)).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        dfm.pp.tokenize(backed, max_tokens=4, chunk_size=3)
        np.testing.assert_array_equal(backed.obsm["dfm_tokens"], ref.obsm["dfm_tokens"])
    finally:
        backed.file.close()


# --------------------------------------------------------------------------- overflow


@pytest.mark.parametrize("writer", list(WRITERS))
def test_totals_beyond_float64_are_refused(writer, unchanged):
    X = COUNTS.astype(np.float64)
    X[2, :3] = 1e308  # the cell's total overflows to inf; on main: all-NaN medians
    rejects(unchanged, writer, make(sp.csr_matrix(X)), DfmInputError, "sum to more than.*'c2'")


def test_soft_rank_values_beyond_float32_are_refused(unchanged):
    X = np.array([[1e100, 1e200, 1e300], [1.0, 2.0, 3.0]])
    adata = ad.AnnData(sp.csr_matrix(X))
    rejects_kw = {"match": "beyond the float32 range"}
    before = adata.copy()
    with pytest.raises(DfmInputError, **rejects_kw):
        dfm.pp.soft_rank(adata)
    unchanged(adata, before)


def test_ops_soft_rank_refuses_float64_overflow_without_x64():
    import jax

    if jax.config.read("jax_enable_x64"):
        pytest.skip("float64 enabled: computed in float64")
    with pytest.raises(ValueError, match="beyond the float32 range.*jax_enable_x64"):
        dfm.ops.soft_rank(np.array([1e100, 1e200, 1e300]))
    # within range: still exact ranks (descending: the largest is rank 1)
    np.testing.assert_allclose(
        dfm.ops.soft_rank(np.array([1e30, 1e20, 1e10]), temperature=1e-3), [1.0, 2.0, 3.0]
    )


# --------------------------------------------------------------------------- raw counts


def test_gene_medians_refuses_log_normalised_data_like_tokenize(unchanged):
    logn = np.log1p(COUNTS / COUNTS.sum(1, keepdims=True) * 1e4).astype(np.float32)
    adata = make(sp.csr_matrix(logn), counts=sp.csr_matrix(COUNTS))
    before = adata.copy()
    for fn in (dfm.pp.gene_medians, dfm.pp.tokenize):
        with pytest.raises(DfmInputError, match="non-integer.*layer="):
            fn(adata)
        unchanged(adata, before)
    dfm.pp.gene_medians(adata, layer="counts")  # the hint works
    assert np.isfinite(adata.var["dfm_median"]).all()


# --------------------------------------------------------------------------- tables


def _write(path, text: str | bytes):
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as fh:
        fh.write(text)
    return path


TABLE_CASES = {
    "csv_duplicate_rows": (
        "m.csv",
        "gene,median\ng0,1.0\ng1,2.0\ng0,3.0\n",
        "more than once.*'g0'",
    ),
    "tsv_duplicate_rows": ("m.tsv", "gene\tmedian\ng1\t1.0\ng1\t2.0\n", "more than once.*'g1'"),
    "json_duplicate_keys": ("m.json", '{"g0": 1.0, "g2": 2.0, "g0": 5.0}', "more than once.*'g0'"),
    "csv_not_a_number": ("m.csv", "gene,median\ng0,1.0\ng1,high\n", "not numbers.*'g1': 'high'"),
    "json_binary": ("m.json", bytes(range(256)) * 4, "not a text file"),
    "csv_binary": ("m.csv", b"\x00\xff\xfe" * 300 + bytes(range(256)), "could not be read"),
    "json_invalid": ("m.json", '{"g0": 1.0,', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
@pytest.mark.parametrize("arg", ["gene_medians", "vocab"])
def test_bad_tables_get_our_error(case, arg, tmp_path, unchanged):
    name, text, match = TABLE_CASES[case]
    if arg == "vocab" and isinstance(text, str):
        text = text.replace("median", "token_id")
        for a, b in (("1.0", "4"), ("2.0", "5"), ("3.0", "6"), ("5.0", "7")):
            text = text.replace(a, b)
    path = _write(tmp_path / name, text)
    adata = make(sp.csr_matrix(COUNTS))
    adata.var["dfm_median"] = 1.0
    before = adata.copy()
    with pytest.raises(DfmInputError, match=match):
        dfm.pp.tokenize(adata, max_tokens=4, **{arg: str(path)})
    unchanged(adata, before)


@pytest.mark.parametrize("arg", ["gene_medians", "vocab"])
def test_directory_and_missing_table_paths(arg, tmp_path, unchanged):
    adata = make(sp.csr_matrix(COUNTS))
    adata.var["dfm_median"] = 1.0
    before = adata.copy()
    folder = tmp_path / "tables.json"
    folder.mkdir()
    with pytest.raises(DfmInputError, match="tables.json is a directory.*file inside it"):
        dfm.pp.tokenize(adata, max_tokens=4, **{arg: str(folder)})
    with pytest.raises(FileNotFoundError, match="missing.csv.*working directory.*Check the path"):
        dfm.pp.tokenize(adata, max_tokens=4, **{arg: str(tmp_path / "missing.csv")})
    unchanged(adata, before)


@pytest.mark.parametrize("bad", [4.5, True, "4", float("nan")])
def test_vocab_ids_are_not_truncated_or_parsed(bad, unchanged):
    # on main int(4.5) silently became token 4, True became 1 and '4' was parsed
    adata = make(sp.csr_matrix(COUNTS))
    adata.var["dfm_median"] = 1.0
    vocab = {"<pad>": 0, **{g: 4 + i for i, g in enumerate(GENES)}, "g2": bad}
    before = adata.copy()
    with pytest.raises(DfmInputError, match="integer token ids.*'g2'"):
        dfm.pp.tokenize(adata, max_tokens=4, vocab=vocab)
    unchanged(adata, before)


def test_identical_gene_ids_stay_text(tmp_path):
    # gene IDs are read as written: '0012' is not 12 and 'NA' is not NaN
    path = _write(tmp_path / "m.csv", "gene,median\n0012,2.0\nNA,4.0\n")
    adata = make(sp.csr_matrix(COUNTS[:, :2]))
    adata.var_names = ["0012", "NA"]
    dfm.pp.tokenize(adata, max_tokens=3, gene_medians=str(path))
    rec = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert rec["n_genes_without_median"] == 0 and rec["n_genes_used"] == 2


# --------------------------------------------------------------------------- provenance


def test_each_key_keeps_its_own_record():
    adata = make(sp.csr_matrix(COUNTS))
    dfm.pp.gene_medians(adata)
    dfm.pp.gene_medians(adata, key_added="med2", target_sum=100)
    dfm.pp.tokenize(adata, max_tokens=4)
    dfm.pp.tokenize(adata, recipe="geneformer_v2", max_tokens=6, key_added="tok2")
    dfm.pp.bin_expression(adata, n_bins=5)
    dfm.pp.bin_expression(adata, n_bins=3, key_added="bins3")
    dfm.pp.soft_rank(adata)
    dfm.pp.soft_rank(adata, temperature=0.5, key_added="sr2")
    uns = adata.uns["dfm"]
    assert uns["gene_medians"]["dfm_median"]["target_sum"] == 10_000
    assert uns["gene_medians"]["med2"]["target_sum"] == 100
    assert uns["tokenizer"]["dfm_tokens"]["recipe"] == "geneformer_v1"
    assert uns["tokenizer"]["tok2"]["recipe"] == "geneformer_v2"
    assert uns["bins"]["dfm_bins"]["n_bins"] == 5 and uns["bins"]["bins3"]["n_bins"] == 3
    assert uns["soft_rank"]["dfm_soft_rank"]["temperature"] == 1.0
    assert uns["soft_rank"]["sr2"]["temperature"] == 0.5
    assert uns["other"] == {"keep": 1}


def test_old_flat_records_are_read_and_kept(tmp_path):
    from diffbio_sc import _uns

    adata = make(sp.csr_matrix(COUNTS))
    # the layout written by 0.1.0: one flat record per section
    adata.uns["dfm"]["tokenizer"] = {"recipe": "geneformer_v1", "key_added": "old_tok"}
    adata.uns["dfm"]["bins"] = {"n_bins": 7}  # no key_added: the default key
    path = tmp_path / "old.h5ad"
    adata.write_h5ad(path)
    adata = ad.read_h5ad(path)
    assert _uns.get_record(adata, "tokenizer", "old_tok")["recipe"] == "geneformer_v1"
    assert _uns.get_record(adata, "tokenizer") is None  # describes old_tok, not dfm_tokens
    assert _uns.get_record(adata, "bins")["n_bins"] == 7
    dfm.pp.tokenize(adata, max_tokens=4)
    dfm.pp.bin_expression(adata, n_bins=3, key_added="b3")
    tok = adata.uns["dfm"]["tokenizer"]
    assert set(tok) == {"old_tok", "dfm_tokens"} and tok["old_tok"]["recipe"] == "geneformer_v1"
    assert set(adata.uns["dfm"]["bins"]) == {"dfm_bins", "b3"}
    assert adata.uns["dfm"]["bins"]["dfm_bins"] == {"n_bins": 7}
    assert _uns.get_record(adata, "tokenizer")["max_tokens"] == 4


def test_median_source_and_fixedness_are_recorded():
    adata = make(sp.csr_matrix(COUNTS))
    dfm.pp.tokenize(adata, max_tokens=4)  # medians computed from these cells
    rec = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
    assert rec["median_source"] == "computed from data" and rec["medians_fixed"] is False
    med_rec = adata.uns["dfm"]["gene_medians"]["dfm_median"]
    assert med_rec["created_by"]["function"] == "diffbio_sc.pp.tokenize"
    dfm.pp.tokenize(adata, max_tokens=4, key_added="t2", n_tokens_key="n2")  # the .var column
    rec2 = adata.uns["dfm"]["tokenizer"]["t2"]
    assert rec2["median_source"] == "var:dfm_median" and rec2["medians_fixed"] is True
    # with fixed medians a cell's tokens do not depend on the other cells; computed ones do
    sub = adata[[0, 1]].copy()
    dfm.pp.tokenize(sub, max_tokens=4, key_added="t2", n_tokens_key="n2")
    np.testing.assert_array_equal(sub.obsm["t2"], adata.obsm["t2"][:2])
    fresh = make(sp.csr_matrix(COUNTS[[0, 1]]))
    dfm.pp.tokenize(fresh, max_tokens=4)
    assert not np.allclose(fresh.var["dfm_median"], adata.var["dfm_median"])


def test_records_survive_h5ad(tmp_path, uns_equal):
    adata = make(sp.csr_matrix(COUNTS))
    dfm.pp.tokenize(adata, max_tokens=4)
    dfm.pp.tokenize(adata, max_tokens=3, key_added="t3", n_tokens_key="n3")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    uns_equal(dict(back.uns["dfm"]), dict(adata.uns["dfm"]))


# --------------------------------------------------------------------------- memory


def test_gene_medians_memory_is_about_8_bytes_per_nonzero():
    import tracemalloc

    rng = np.random.default_rng(0)
    n_cells, n_genes, nnz_per_cell = 4000, 2000, 250  # 1e6 nonzeros
    cols = np.argsort(rng.random((n_cells, n_genes)), axis=1)[:, :nnz_per_cell]
    cols.sort(axis=1)
    X = sp.csr_matrix(
        (
            rng.integers(1, 50, n_cells * nnz_per_cell).astype(np.float32),
            cols.ravel().astype(np.int32),
            np.arange(0, n_cells * nnz_per_cell + 1, nnz_per_cell),
        ),
        shape=(n_cells, n_genes),
    )
    adata = ad.AnnData(X)
    dfm.pp.gene_medians(adata, chunk_size=256)  # warm-up (imports, caches)
    tracemalloc.start()
    dfm.pp.gene_medians(adata, chunk_size=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_nnz = peak / X.nnz
    # the keys (8 bytes) + one chunk's temporaries; main peaked at about 50 bytes
    assert per_nnz < 12, per_nnz
