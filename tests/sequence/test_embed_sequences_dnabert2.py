"""DNABERT-2 (BPE tokens) through embed_sequences / genomics_tasks, windows in bases.

The fixture is the tiny random DNABERT-2 of tests/checkpoints (its own remote code
checked it layer by layer): a 24-token context, so every window of at most 22
bases fits (one BPE token covers at least one base, plus ``[CLS]`` and ``[SEP]``).
Expectations come from ``model.embed`` on the pieces the window rule cuts.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.ops._sequence_alphabet import tile_sequences

pytest.importorskip("tokenizers")

FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures" / "dnabert2"
TOL = 1e-5
_COMP = str.maketrans("ACGT", "TGCA")


def revcomp(s: str) -> str:
    return s.translate(_COMP)[::-1]


@pytest.fixture(scope="module")
def m():
    return dfm.models.load_checkpoint(FIX)


def _seqs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), n)) for n in lengths]


def _embed(seqs, model, **kw):
    a = dfm.io.sequences_to_adata(seqs, ids=[f"s{i}" for i in range(len(seqs))])
    dfm.tl.embed_sequences(a, encoder=model, **kw)
    return a.obsm["X_dfm_seq"], a.uns["dfm"]["embeddings"]["X_dfm_seq"]


def test_context_in_tokens_gives_windows_in_bases(m):
    from diffbio_sc.tl._sequence._dna_checkpoint import max_window, token_bound

    assert m.max_tokens == 24
    assert token_bound(m, 22) == 24 and max_window(m) == 22
    # the bound is never below the real count: one base per token is the worst case
    for s in _seqs([1, 5, 22, 22, 22], seed=7) + ["A" * 22, "ACGT" * 5 + "AC"]:
        assert len(m.tokenizer.tokens(s)) <= token_bound(m, len(s))


def test_whole_sequences_equal_model_embed(m):
    seqs = _seqs([3, 9, 15, 22], seed=1)
    fwd, entry = _embed(seqs, m, reverse_complement=None)
    np.testing.assert_allclose(fwd, m.embed(seqs), atol=TOL, rtol=0)
    avg, entry = _embed(seqs, m)
    want = 0.5 * (m.embed(seqs) + m.embed([revcomp(s) for s in seqs]))
    np.testing.assert_allclose(avg, want, atol=TOL, rtol=0)
    assert entry["model_family"] == "dnabert2" and entry["window"] is None
    assert entry["max_window"] == 22
    counts = [len(m.tokenizer.tokens(s)) for s in seqs + [revcomp(s) for s in seqs]]
    assert entry["max_piece_tokens"] == max(counts)
    assert not np.allclose(avg, fwd, atol=1e-3)  # the reverse strand did count


def test_windows_equal_model_embed_of_the_pieces(m, tmp_path):
    seqs = _seqs([60, 22, 47, 9], seed=2)
    emb, entry = _embed(seqs, m, reverse_complement=None, window=22, stride=10)
    pieces, owner, _ = tile_sequences(seqs, 22, 10)
    assert all(len(p) == 22 for p in pieces[: np.sum(owner == 0)])
    # 60 bases, window 22, stride 10: D = 38 -> ceil(38 / 10) + 1 = 5 windows
    assert np.sum(owner == 0) == 5 and np.sum(owner == 1) == 1
    vec = m.embed(pieces)
    for i, s in enumerate(seqs):
        own = np.flatnonzero(owner == i)
        lens = np.array([len(pieces[j]) for j in own], float)
        want = (vec[own] * lens[:, None]).sum(0) / lens.sum()
        np.testing.assert_allclose(emb[i], want, atol=TOL, rtol=0, err_msg=s)
    assert entry["window"] == 22 and entry["stride"] == 10
    assert entry["n_windows"] == len(pieces)
    assert entry["tokenizer"]["k"] is None and "BPE" in entry["preprocessing_version"]
    assert 2 < entry["max_piece_tokens"] <= 24
    # the record (k = None for BPE) survives h5ad
    a = dfm.io.sequences_to_adata(seqs, ids=[f"s{i}" for i in range(4)])
    dfm.tl.embed_sequences(a, encoder=m, window=22, stride=10)
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(b.obsm["X_dfm_seq"], a.obsm["X_dfm_seq"])


def test_average_with_windows_is_strand_invariant(m):
    seqs = _seqs([60, 37, 22, 5], seed=3)
    a, _ = _embed(seqs, m, window=22, stride=9)
    b, _ = _embed([revcomp(s) for s in seqs], m, window=22, stride=9)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    f, _ = _embed(seqs, m, reverse_complement=None, window=22, stride=9)
    r, _ = _embed([revcomp(s) for s in seqs], m, reverse_complement=None, window=22, stride=9)
    assert np.abs(f - r).max() > 1e-3  # the forward strand alone is not: the test can tell


def test_result_does_not_depend_on_the_batch(m):
    seqs = _seqs([4, 9, 17, 22, 50, 61, 13, 80, 8, 30], seed=4)
    full, _ = _embed(seqs, m, window=22, batch_size=4)
    keep = [7, 2, 5, 0]
    sub, _ = _embed([seqs[i] for i in keep], m, window=22, batch_size=4)
    np.testing.assert_allclose(sub, full[keep], atol=1e-6, rtol=0)
    alone, _ = _embed([seqs[4]], m, window=22, batch_size=1)
    np.testing.assert_allclose(alone[0], full[4], atol=1e-6, rtol=0)


def test_too_long_for_the_context_is_one_clear_error(m):
    seqs = _seqs([30, 200], seed=5)
    a = dfm.io.sequences_to_adata(seqs, ids=["short", "long"])
    before = a.copy()
    with pytest.raises(DfmInputError, match="The largest window that fits is window=22"):
        dfm.tl.embed_sequences(a, encoder=m, window=23)
    # without windows, every sequence's tokens (both strands) are counted before any compute
    with pytest.raises(DfmInputError, match=r"'long'.*window=22 bases"):
        dfm.tl.embed_sequences(a, encoder=m)
    assert not a.obsm and "embeddings" not in a.uns["dfm"]
    assert a.obs.equals(before.obs)
    with pytest.raises(DfmInputError, match="Invalid character 'N'"):
        dfm.tl.embed_sequences(dfm.io.sequences_to_adata(["ACGNT"], ids=["n"]), encoder=m)


def test_genomics_tasks_with_a_dnabert2_frozen_encoder(m):
    rng = np.random.default_rng(0)
    motif, seqs, labels = "TATAATGCGCAT", [], []
    for i in range(40):
        s = "".join(rng.choice(list("ACGT"), int(rng.integers(30, 60))))
        if i % 2:
            p = int(rng.integers(0, len(s) - len(motif)))
            s = s[:p] + motif + s[p + len(motif) :]
        seqs.append(s)
        labels.append("motif" if i % 2 else "none")
    a = dfm.io.sequences_to_adata(seqs, ids=[f"s{i}" for i in range(40)])
    a.obs["label"] = labels
    df = dfm.tl.genomics_tasks(
        data=a, methods="kmer_logreg", frozen_encoders={"dnabert2": m}, task_name="motif"
    )
    assert "dnabert2" in set(df["embedding"])
    assert np.isfinite(df.loc[df["embedding"] == "dnabert2", "value"]).all()
    report = df.attrs["report"]
    rec = report["frozen_encoders"]["dnabert2"]
    assert rec["model_family"] == "dnabert2" and rec["max_window"] == 22
    used = report["tasks"]["motif"]["frozen_encoders"]["dnabert2"]
    assert (used["window"], used["stride"]) == (22, 11) and used["n_windows"] > 40
    assert 2 < used["max_piece_tokens"] <= 24
