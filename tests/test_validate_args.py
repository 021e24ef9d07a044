"""The shared scalar argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from diffbio_sc._validate import (
    DfmInputError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_key,
    check_seed,
)


@pytest.mark.parametrize("bad", [2.5, 2.0, "10", True, None, [3]])
def test_check_int_refuses_non_integers(bad):
    with pytest.raises(TypeError, match="chunk_size must be an integer"):
        check_int("chunk_size", bad, minimum=1)


def test_check_int_range_and_numpy():
    assert check_int("n", np.int64(5), minimum=1) == 5 and type(check_int("n", 5)) is int
    with pytest.raises(DfmInputError, match=">= 1, got 0"):
        check_int("chunk_size", 0, minimum=1)
    with pytest.raises(DfmInputError, match="<= 3"):
        check_int("n", 4, maximum=3)
    assert check_int("n", None, allow_none=True) is None


@pytest.mark.parametrize("bad", [0.7, -1, 2**64, 2**32])
def test_check_seed(bad):
    with pytest.raises((TypeError, DfmInputError), match="seed"):
        check_seed(bad)
    assert check_seed(2**32 - 1) == 2**32 - 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", True])
def test_check_float_refuses_non_finite(bad):
    with pytest.raises((TypeError, DfmInputError), match="weight_decay"):
        check_float("weight_decay", bad)


def test_check_float_range():
    assert check_float("lr", 1) == 1.0
    with pytest.raises(DfmInputError, match="> 0"):
        check_float("lr", 0.0, minimum=0.0, strict_min=True)


@pytest.mark.parametrize("bad", [None, "", "  ", "a/b", 3])
def test_check_key(bad):
    with pytest.raises((TypeError, DfmInputError), match="key_added"):
        check_key("key_added", bad)
    assert check_key("key_added", "X_dfm") == "X_dfm"


def test_check_choice_and_bool():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(DfmInputError, match="'a', 'b'"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(DfmInputError):
        check_choice("mode", ["a"], ("a", "b"))
    assert check_bool("copy", np.bool_(True)) is True
    with pytest.raises(TypeError, match="copy"):
        check_bool("copy", 1)


# --------------------------------------------------------------------------- the chunk reader


def _adata(X):
    import anndata as ad

    return ad.AnnData(X)


@pytest.mark.parametrize("bad", [0, 2.5, "10", True, -3])
def test_chunk_reader_refuses_bad_chunk_sizes(bad):
    # on main, chunk_size=0 silently meant "the default" and 2.5 was truncated
    from diffbio_sc._validate import iter_row_chunks

    with pytest.raises((TypeError, DfmInputError), match="chunk_size"):
        next(iter_row_chunks(_adata(np.ones((3, 2), np.float32)), None, bad))


def test_chunk_reader_reads_float16_as_float32():
    from diffbio_sc._validate import iter_row_chunks

    X = np.array([[1.5, 0.0], [0.0, 2048.0], [3.0, 0.25]], dtype=np.float16)
    chunks = list(iter_row_chunks(_adata(X), None, 2))
    assert [c.dtype for _, _, c in chunks] == [np.float32, np.float32]
    got = np.vstack([c.toarray() for _, _, c in chunks])
    np.testing.assert_array_equal(got, X.astype(np.float32))


@pytest.mark.parametrize("dtype", [object, complex, "U4"])
def test_chunk_reader_names_non_numeric_dtypes(dtype):
    from diffbio_sc._validate import iter_row_chunks

    X = np.ones((3, 2)).astype(dtype)
    with pytest.raises(DfmInputError, match=f"adata.X has dtype {np.dtype(dtype)}.*astype"):
        next(iter_row_chunks(_adata(X), None, None))


def test_validated_chunks_sum_duplicates_and_refuse_overflowing_totals():
    import scipy.sparse as sp

    from diffbio_sc._validate import validated_chunks

    # a CSR with a repeated (row, col) entry: 2 + 3 must read as 5
    X = sp.csr_matrix(
        (np.array([2.0, 3.0, 1.0]), np.array([0, 0, 1]), np.array([0, 2, 3])), shape=(2, 2)
    )
    ((_, _, chunk, totals),) = list(validated_chunks(_adata(X), None, None, require_integer=True))
    np.testing.assert_array_equal(chunk.toarray(), [[5.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(totals, [5.0, 1.0])
    big = sp.csr_matrix(np.array([[1e308, 1e308], [1.0, 1.0]]))
    with pytest.raises(DfmInputError, match="1 cells.*sum to more than the largest float64"):
        list(validated_chunks(_adata(big), None, None, require_integer=False))


def test_copy_helpers():
    import anndata as ad

    from diffbio_sc._validate import check_copy, resolve_copy

    adata = ad.AnnData(np.ones((2, 2), np.float32))
    assert resolve_copy(adata, False) is adata
    copied = resolve_copy(adata, True)
    assert copied is not adata and copied.X is not adata.X
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="copy must be True or False"):
            check_copy(adata, bad)
