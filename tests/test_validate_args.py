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
