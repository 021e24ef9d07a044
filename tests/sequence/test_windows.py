"""Windowing of long sequences in dfm.tl.embed_sequences (window=, stride=)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig
from diffbio_sc.ops._sequence import window_starts

TINY = {
    "hidden_dim": 8,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 16,
    "max_length": 32,
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def equivariant():
    cfg = SequenceEncoderConfig(**TINY, reverse_complement="equivariant")
    return SequenceEncoder(cfg, rngs=nnx.Rngs(params=3))


def _random(n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", np.uint8)
    return [
        letters[rng.integers(0, 4, rng.integers(lo, hi + 1))].tobytes().decode() for _ in range(n)
    ]


@pytest.mark.parametrize(
    ("length", "window", "stride", "expected"),
    [
        (5, 10, 5, [0]),  # shorter than the window: the whole sequence
        (10, 10, 5, [0]),
        (20, 10, 5, [0, 5, 10]),  # D = 10, n = 3: 0, 5, 10
        (21, 10, 5, [0, 4, 7, 11]),  # D = 11, n = 4: ceil(11/3) = 4, floor(22/3) = 7
        (22, 10, 10, [0, 6, 12]),  # D = 12, n = 3
        (23, 10, 10, [0, 5, 8, 13]),  # D = 13 odd: n = 3 -> 4, ceil(13/3), floor(26/3)
        (7, 2, 2, [0, 2, 3, 5]),  # D = 5, n = 4: gaps 2, 1, 2
        (12, 10, 2, [0, 2]),  # D = 2, n = 2
        (11, 10, 1, [0, 1]),
    ],
)
def test_window_starts_hand_cases(length, window, stride, expected):
    assert window_starts(length, window, stride).tolist() == expected


def test_window_starts_properties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        window = int(rng.integers(1, 40))
        stride = int(rng.integers(1, window + 1))
        length = int(rng.integers(1, 200))
        s = window_starts(length, window, stride)
        span = max(length - window, 0)
        assert s[0] == 0 and s[-1] == span
        assert sorted((span - s).tolist()) == s.tolist()  # mirror-symmetric
        if s.size > 1:
            assert np.diff(s).min() > 0 and np.diff(s).max() <= stride
            # no more windows than needed: ceil(span / stride) + 1, plus one for parity
            assert s.size <= -(-span // stride) + 1 + (span % 2)
        covered = np.zeros(length, bool)
        for a in s:
            covered[a : a + window] = True
        assert covered.all()
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 5)


def test_frozen_callable_hand_checked_tiling():
    def frac_a(seqs):  # an independent, hand-computable "encoder"
        return np.array([[s.count("A") / len(s), len(s)] for s in seqs], np.float32)

    a = dfm.io.sequences_to_adata(["A" * 10 + "C" * 10, "ACGT"], ids=["long", "short"])
    dfm.tl.embed_sequences(
        a, encoder=frac_a, reverse_complement=None, window=10, stride=5, batch_size=2
    )
    # windows of 'long' start at 0, 5, 10: A-fractions 1, 0.5, 0 -> mean 0.5
    np.testing.assert_allclose(a.obsm["X_dfm_seq"], [[0.5, 10.0], [0.25, 4.0]])
    entry = a.uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert (entry["window"], entry["stride"], entry["n_windows"]) == (10, 5, 4)


def test_native_windows_short_unchanged_long_mean_and_rc(equivariant):
    short = _random(6, 5, 30, seed=1)
    long = _random(6, 33, 90, seed=2)
    a = dfm.io.sequences_to_adata(short + long)
    ref = dfm.io.sequences_to_adata(short)
    dfm.tl.embed_sequences(ref, encoder=equivariant, batch_size=8)
    dfm.tl.embed_sequences(a, encoder=equivariant, batch_size=8, window=30, stride=12)
    emb = a.obsm["X_dfm_seq"]
    # sequences no longer than the window: exactly the embedding without windows
    np.testing.assert_array_equal(emb[:6], ref.obsm["X_dfm_seq"])
    # a long one: the mean of its windows' embeddings, computed separately
    s = long[0]
    pieces = [s[i : i + 30] for i in window_starts(len(s), 30, 12)]
    w = dfm.io.sequences_to_adata(pieces)
    dfm.tl.embed_sequences(w, encoder=equivariant, batch_size=8)
    np.testing.assert_allclose(emb[6], w.obsm["X_dfm_seq"].mean(axis=0), atol=1e-6)
    # exact RC invariance carries over (the layout is mirror-symmetric)
    rc = dfm.io.sequences_to_adata(dfm.ops.reverse_complement(short + long))
    dfm.tl.embed_sequences(rc, encoder=equivariant, batch_size=8, window=30, stride=12)
    np.testing.assert_allclose(rc.obsm["X_dfm_seq"], emb, atol=1e-5)


def test_window_errors_leave_data_unchanged(equivariant):
    a = dfm.io.sequences_to_adata(_random(3, 40, 50, seed=4))
    before = a.copy()
    with pytest.raises(DfmInputError, match=r"window="):
        dfm.tl.embed_sequences(a, encoder=equivariant)  # longer than max_length 32
    with pytest.raises(DfmInputError, match="smaller window") as err:
        dfm.tl.embed_sequences(a, encoder=equivariant, window=40)
    # windows are numbered within their own sequence (two 40-bp windows each here)
    assert "'seq1[window 0]'" in str(err.value) and "'seq1[window 1]'" in str(err.value)
    with pytest.raises(DfmInputError, match="stride= needs window="):
        dfm.tl.embed_sequences(a, encoder=equivariant, stride=4)
    with pytest.raises(DfmInputError, match="stride"):
        dfm.tl.embed_sequences(a, encoder=equivariant, window=20, stride=21)
    with pytest.raises(DfmInputError, match="window"):
        dfm.tl.embed_sequences(a, encoder=equivariant, window=0)
    assert "X_dfm_seq" not in a.obsm and "embeddings" not in a.uns["dfm"]
    assert a.obs.equals(before.obs)
