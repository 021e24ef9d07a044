"""dfm.tl.embed_sequences with published DNA checkpoints (Nucleotide Transformer, GENERator).

Expectations are computed independently of ``embed_sequences``: the model's own
``embed`` (itself tested against the upstream reference in
tests/checkpoints/test_genomic_models.py), a reverse complement written here with
``str.translate``, window layouts cut by hand, and the token counts of 6-mer
tokenization counted by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"
NT1, NT2, GEN = "nucleotide_transformer_v1", "nucleotide_transformer_v2", "generator"
#: Different padded widths change float summation order only.
TOL = 1e-5
_COMP = str.maketrans("ACGTN", "TGCAN")


def revcomp(s: str) -> str:
    return s.translate(_COMP)[::-1]


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = dfm.models.load_checkpoint(FIX / name)
        return cache[name]

    return get


def _seqs(lengths, seed=0, letters="ACGT"):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(letters), n)) for n in lengths]


def _adata(seqs, prefix="s"):
    return dfm.io.sequences_to_adata(seqs, ids=[f"{prefix}{i}" for i in range(len(seqs))])


def _untouched(a) -> bool:
    return not a.obsm and "embeddings" not in a.uns.get("dfm", {})


def _embed(seqs, model, **kw):
    a = _adata(seqs)
    dfm.tl.embed_sequences(a, encoder=model, **kw)
    return a.obsm["X_dfm_seq"], a.uns["dfm"]["embeddings"]["X_dfm_seq"]


def test_nt_v1_equals_model_embed_forward_and_strand_average(loaded):
    m = loaded(NT1)
    seqs = _seqs([5, 12, 23, 40, 66, 90, 120], seed=1)
    seqs[2] = seqs[2][:10] + "N" + seqs[2][11:]  # NT reads N as its own token
    fwd, entry = _embed(seqs, m, reverse_complement=None)
    assert fwd.dtype == np.float32 and fwd.shape == (7, m.hidden_dim)
    np.testing.assert_allclose(fwd, m.embed(seqs), atol=TOL, rtol=0)
    assert entry["reverse_complement"] is None

    avg, entry = _embed(seqs, m, reverse_complement="average")
    want = 0.5 * (m.embed(seqs) + m.embed([revcomp(s) for s in seqs]))
    np.testing.assert_allclose(avg, want, atol=TOL, rtol=0)
    assert entry["reverse_complement"] == "average"
    assert not np.allclose(avg, fwd, atol=1e-3)  # the reverse strand did count


@pytest.mark.parametrize("name", [NT1, NT2, GEN])
def test_average_is_exactly_strand_invariant(loaded, name):
    m = loaded(name)
    seqs = _seqs([3, 11, 30, 58, 84], seed=2)
    if name != GEN:  # NT reads N (its own token, and it ends a 6-mer run)
        seqs[2], seqs[3] = seqs[2][:7] + "N" + seqs[2][8:], "N" + seqs[3][1:]
    a, _ = _embed(seqs, m)  # reverse_complement='average' is the default
    b, _ = _embed([revcomp(s) for s in seqs], m)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # the forward strand alone is not invariant: the test can tell
    f, _ = _embed(seqs, m, reverse_complement=None)
    r, _ = _embed([revcomp(s) for s in seqs], m, reverse_complement=None)
    assert np.abs(f - r).max() > 1e-3


@pytest.mark.parametrize("name", [NT1, GEN])
def test_result_does_not_depend_on_the_batch(loaded, name):
    m = loaded(name)
    seqs = _seqs([4, 9, 17, 33, 50, 61, 75, 80, 8, 70], seed=3)
    full, _ = _embed(seqs, m, batch_size=4)
    keep = [7, 2, 5]
    sub, _ = _embed([seqs[i] for i in keep], m, batch_size=4)
    # same batch shape, other neighbours and order: bit for bit
    np.testing.assert_array_equal(sub, full[keep])
    alone, _ = _embed([seqs[0]], m, batch_size=1)
    np.testing.assert_allclose(alone[0], full[0], atol=1e-6, rtol=0)


def test_windows_weighted_mean_of_window_embeddings(loaded):
    m = loaded(NT1)
    seqs = _seqs([100, 260, 37], seed=4)
    emb, entry = _embed(seqs, m, reverse_complement=None, window=100, stride=60)
    # by hand: 260 bases, window 100, stride 60 -> D = 160, ceil(160/60)+1 = 4 windows
    # (even n: no middle window) at ceil/floor(i*160/3): 0, 54, 106, 160
    starts = [0, 54, 106, 160]
    wins = m.embed([seqs[1][a : a + 100] for a in starts])
    np.testing.assert_allclose(emb[1], wins.mean(0), atol=TOL, rtol=0)
    np.testing.assert_allclose(emb[[0, 2]], m.embed([seqs[0], seqs[2]]), atol=TOL, rtol=0)
    assert entry["window"] == 100 and entry["stride"] == 60 and entry["n_windows"] == 6
    # mirror-symmetric windows keep the strand average invariant
    a, _ = _embed(seqs, m, window=100, stride=60)
    b, _ = _embed([revcomp(s) for s in seqs], m, window=100, stride=60)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_window_in_bases_against_context_in_tokens(loaded):
    m = loaded(NT1)  # 24 tokens: <cls> + 23
    # by hand: w = 118 = 6*19 + 4 gives at most 1 + 19 + max(4, 4) = 24 tokens (117 bases:
    # 1 + 19 + 3; 113 bases: 1 + 18 + 5 = 24); w = 119 = 6*19 + 5 gives 1 + 19 + 5 = 25
    a = _adata(_seqs([300], seed=5))
    with pytest.raises(DfmInputError, match=r"window=119 bases .* 25 tokens.*window=118"):
        dfm.tl.embed_sequences(a, encoder=m, window=119)
    assert _untouched(a)
    # every clean piece of at most 118 bases fits, whatever its length
    seqs = _seqs([113, 117, 118, 300], seed=6)
    emb, entry = _embed(seqs, m, window=118)
    assert np.isfinite(emb).all() and entry["max_window"] == 118 and entry["max_tokens"] == 24
    # without window=, a sequence beyond the context is an error naming it and window=
    with pytest.raises(DfmInputError, match=r"'s3' \(51 tokens\).*window=.*window=118 bases"):
        _embed(seqs, m)
    # N is a token of its own: a window of Ns exceeds the bound, named, data unchanged
    b = _adata(["N" * 118, "ACGT" * 10])
    with pytest.raises(DfmInputError, match=r"'s0\[window 0\]' \(119 tokens\).*smaller window="):
        dfm.tl.embed_sequences(b, encoder=m, window=118)
    assert _untouched(b)
    g = loaded(GEN)  # 16 tokens: <s> + 14 6-mers + </s> -> 84 bases; 85 bases need 15 6-mers
    with pytest.raises(DfmInputError, match=r"window=85 .*window=84"):
        dfm.tl.embed_sequences(_adata(_seqs([200])), encoder=g, window=85)


@pytest.mark.parametrize(
    ("name", "seq", "match"),
    [
        (NT1, "ACGTRACGT", r"'R' in sequence 's1' at position 5.*'ACGTN'"),
        (NT1, "ACGTacgt", r"'a' in sequence 's1' at position 5.*upper-case"),
        (GEN, "ACGTNACGT", r"'N' in sequence 's1' at position 5.*'ACGT'"),
    ],
)
def test_symbols_outside_the_model_alphabet(loaded, name, seq, match):
    a = _adata(["ACGTACGT", "ACGTACGTA"])
    a.obs["sequence"] = ["ACGTACGT", seq]  # as given (sequences_to_adata upper-cases)
    obs = a.obs.copy()
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.embed_sequences(a, encoder=loaded(name))
    assert a.obs.equals(obs) and _untouched(a)


def test_modes_and_pooling(loaded):
    m, g = loaded(NT1), loaded(GEN)
    a = _adata(_seqs([20, 30]))
    with pytest.raises(DfmInputError, match="not reverse-complement equivariant.*'average'"):
        dfm.tl.embed_sequences(a, encoder=m, reverse_complement="equivariant")
    with pytest.raises(DfmInputError, match=r"pooling must be one of \('mean',\)"):
        dfm.tl.embed_sequences(a, encoder=m, pooling="last")
    with pytest.raises(DfmInputError, match="pooling= applies to DNA checkpoints"):
        dfm.tl.embed_sequences(a, encoder=lambda s: np.ones((len(s), 2)), pooling="mean")
    assert _untouched(a)
    seqs = _seqs([20, 45, 84], seed=7)
    last, e_last = _embed(seqs, g, reverse_complement=None)
    mean, e_mean = _embed(seqs, g, reverse_complement=None, pooling="mean")
    np.testing.assert_allclose(last, g.embed(seqs), atol=TOL, rtol=0)
    np.testing.assert_allclose(mean, g.embed(seqs, pooling="mean"), atol=TOL, rtol=0)
    assert e_last["pooling"] == "last" and e_mean["pooling"] == "mean"
    assert e_last["model_family"] == "generator" and e_last["tokenizer"]["n_special_tokens"] == 2


def test_provenance_and_h5ad_round_trip(loaded, tmp_path):
    m = loaded(NT2)
    hub = {"repo_id": "InstaDeepAI/x", "revision": "abc123", "requested_revision": None}
    hm = dataclasses.replace(m, hub=hub)
    a = _adata(_seqs([30, 40]))
    dfm.tl.embed_sequences(a, encoder=hm, reverse_complement=None)
    e = a.uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert e["source"] == "nucleotide_transformer"
    assert e["model_family"] == "nucleotide_transformer_v2" and e["adapter_mode"] == "checkpoint"
    assert e["model_family"] in dfm._keys.MODEL_FAMILIES
    assert e["adapter_mode"] in dfm._keys.ADAPTER_MODES
    assert e["artifact_sha256"] == m.sha256 == e["checkpoint_sha256"] and len(m.sha256) == 64
    assert e["tokenizer"]["k"] == 6 and e["tokenizer"]["alphabet"] == "ACGTN"
    assert e["pooling"] == "mean" and e["layer_index"] == e["n_layers"] == m.n_layers
    assert e["window"] is None and e["stride"] is None and e["n_dims"] == m.hidden_dim
    assert e["hub"]["repo_id"] == "InstaDeepAI/x" and e["hub"]["revision"] == "abc123"
    assert e["weights_retrievable"] is True
    a.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert back["reverse_complement"] is None and back["model_family"] == e["model_family"]
    assert back["hub"]["repo_id"] == "InstaDeepAI/x" and back["hub"]["requested_revision"] is None
    assert back["artifact_sha256"] == m.sha256


def test_directory_paths_are_told_apart_by_config(loaded, tmp_path):
    m = loaded(NT1)
    seqs = _seqs([20, 50], seed=8)
    want, _ = _embed(seqs, m)
    got, e = _embed(seqs, str(FIX / NT1))  # Hugging Face layout -> load_checkpoint
    np.testing.assert_array_equal(got, want)
    assert e["model_path"] == str(FIX / NT1) and e["adapter_mode"] == "checkpoint"
    m.save(tmp_path / "saved")  # diffbio_sc's format holding a DNA checkpoint
    got, e = _embed(seqs, tmp_path / "saved")
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert e["model_family"] == NT1 and e["artifact_sha256"] == m.sha256
    with pytest.raises(DfmInputError, match="geneformer checkpoint.*embed_checkpoint"):
        _embed(seqs, FIX / "geneformer_v1")
