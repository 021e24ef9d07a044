"""dfm.tl.embed_sequences on AnnData and MuData; provenance; .h5mu round trip; bad input."""

from __future__ import annotations

import anndata as ad
import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig

TINY = {
    "hidden_dim": 8,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 16,
    "max_length": 40,
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def encoder():
    return SequenceEncoder(SequenceEncoderConfig(**TINY), rngs=nnx.Rngs(params=0))


@pytest.fixture(scope="module")
def equivariant():
    cfg = SequenceEncoderConfig(**TINY, reverse_complement="equivariant")
    return SequenceEncoder(cfg, rngs=nnx.Rngs(params=1))


def _seqs(n, lo=17, hi=32, seed=0):
    # one length bucket (17-32 tokens): one compiled step per encoder and mode
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", np.uint8)
    return [
        letters[rng.integers(0, 4, rng.integers(lo, hi + 1))].tobytes().decode() for _ in range(n)
    ]


def _adata(n=20, seed=0, ids=None):
    return dfm.io.sequences_to_adata(_seqs(n, seed=seed), ids=ids)


def test_anndata_embedding_and_provenance(encoder):
    a = _adata()
    assert dfm.tl.embed_sequences(a, encoder=encoder, batch_size=8) is None
    emb = a.obsm["X_dfm_seq"]
    assert emb.shape == (20, 8) and emb.dtype == np.float32
    entry = a.uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert entry["model_family"] == "sequence_transformer"
    assert entry["adapter_mode"] == "native_trainable"
    assert entry["pooling_strategy"] == "mean"
    assert entry["reverse_complement"] == "average"
    assert entry["tokenizer"]["name"] == "char"
    assert entry["weights_sha256"] == encoder.weights_sha256()
    assert entry["weights_retrievable"] is False  # an in-memory encoder nobody saved
    # 'average': the embedding of the reverse complement is the same
    rc = dfm.io.sequences_to_adata(dfm.ops.reverse_complement(list(a.obs["sequence"])))
    dfm.tl.embed_sequences(rc, encoder=encoder, batch_size=8)
    np.testing.assert_allclose(rc.obsm["X_dfm_seq"], emb, atol=1e-5)
    # None: forward strand only, matching the model's own pooled output
    dfm.tl.embed_sequences(
        a, encoder=encoder, batch_size=8, reverse_complement=None, key_added="fwd"
    )
    tok = encoder.config.get_tokenizer()
    ids, valid = tok.encode(list(a.obs["sequence"]), max_length=32)
    fwd = jax.jit(lambda x, v: encoder.embed(x, v, reverse_complement=None))
    np.testing.assert_allclose(a.obsm["fwd"], fwd(ids, valid), atol=1e-5)


def test_batch_independent_and_deterministic(encoder):
    a = _adata(30, seed=1)
    dfm.tl.embed_sequences(a, encoder=encoder, batch_size=8)
    full = a.obsm["X_dfm_seq"].copy()
    # the same sequences in another order and with other companions
    sub = a[[17, 3, 29, 8]].copy()
    dfm.tl.embed_sequences(sub, encoder=encoder, batch_size=8)
    np.testing.assert_allclose(sub.obsm["X_dfm_seq"], full[[17, 3, 29, 8]], atol=1e-6)
    dfm.tl.embed_sequences(a, encoder=encoder, batch_size=8)
    np.testing.assert_array_equal(a.obsm["X_dfm_seq"], full)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mudata_expression_and_sequences_linked_by_gene_id(encoder, equivariant, tmp_path):
    md = pytest.importorskip("mudata")
    genes = [f"g{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    rna = ad.AnnData(
        X=rng.poisson(1.0, (15, 12)).astype(np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(15)]),
        var=pd.DataFrame(index=genes),
    )
    dna = _adata(12, seed=2, ids=genes)  # one promoter sequence per gene
    mdata = md.MuData({"rna": rna, "dna": dna})
    before = mdata["rna"].X.copy()
    dfm.tl.embed_sequences(mdata, mod="dna", encoder=equivariant, batch_size=8)
    assert mdata["dna"].obsm["X_dfm_seq"].shape == (12, 8)
    np.testing.assert_array_equal(mdata["rna"].X, before)
    entry = mdata["dna"].uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert entry["reverse_complement"] == "equivariant" and entry["mod"] == "dna"
    path = tmp_path / "both.h5mu"
    mdata.write(path)
    back = md.read_h5mu(path)
    np.testing.assert_array_equal(back["dna"].obsm["X_dfm_seq"], mdata["dna"].obsm["X_dfm_seq"])
    assert (
        back["dna"].uns["dfm"]["embeddings"]["X_dfm_seq"]["weights_sha256"]
        == entry["weights_sha256"]
    )
    assert list(back["dna"].obs["sequence"]) == list(dna.obs["sequence"])
    # the link: gene ids of the expression modality index the sequence embeddings
    per_gene = pd.DataFrame(back["dna"].obsm["X_dfm_seq"], index=back["dna"].obs_names)
    aligned = per_gene.loc[back["rna"].var_names].to_numpy()
    np.testing.assert_array_equal(aligned[3], mdata["dna"].obsm["X_dfm_seq"][3])
    # copy=True leaves the input alone
    out = dfm.tl.embed_sequences(
        mdata, mod="dna", encoder=encoder, batch_size=8, key_added="k2", copy=True
    )
    assert "k2" in out["dna"].obsm and "k2" not in mdata["dna"].obsm


def test_saved_encoder_path_and_frozen_callable(encoder, tmp_path):
    a = _adata(10, seed=3)
    encoder.save(tmp_path / "enc")
    dfm.tl.embed_sequences(a, encoder=tmp_path / "enc", batch_size=8)
    entry = a.uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert entry["weights_retrievable"] is True and entry["model_path"] == str(tmp_path / "enc")

    def gc_content(seqs):  # a frozen in-process encoder
        return np.array([[s.count("G") + s.count("C"), len(s)] for s in seqs], float)

    dfm.tl.embed_sequences(a, encoder=gc_content, key_added="X_gc", reverse_complement=None)
    want = gc_content(list(a.obs["sequence"]))
    np.testing.assert_allclose(a.obsm["X_gc"], want)
    e = a.uns["dfm"]["embeddings"]["X_gc"]
    assert e["adapter_mode"] == "frozen_encoder" and e["n_dims"] == 2


@pytest.mark.parametrize(
    ("make", "kwargs", "err", "match"),
    [
        (lambda: _adata(3), {"sequence_key": "seq"}, DfmInputError, r"\.obs\['seq'\] not found"),
        (lambda: _adata(3), {"key_added": "a/b"}, DfmInputError, "contains '/'"),
        (lambda: _adata(3), {"reverse_complement": "both"}, DfmInputError, "reverse_complement"),
        (lambda: _adata(3), {"reverse_complement": "equivariant"}, DfmInputError, "built with"),
        (lambda: _adata(3), {"batch_size": 0}, DfmInputError, "batch_size"),
        (lambda: _adata(3), {"save_model": "x"}, TypeError, "only used with encoder=None"),
    ],
)
def test_bad_arguments(encoder, make, kwargs, err, match):
    a = make()
    with pytest.raises(err, match=match):
        dfm.tl.embed_sequences(a, encoder=encoder, **kwargs)
    assert "dfm" not in a.uns or "embeddings" not in a.uns["dfm"]
    assert not a.obsm


def _with_sequence(i, seq):
    a = _adata(4, seed=5)
    s = a.obs["sequence"].tolist()
    s[i] = seq
    a.obs["sequence"] = s
    return a


@pytest.mark.parametrize(
    ("a", "match"),
    [
        (_with_sequence(2, "ACGXT"), r"'X' in sequence 'seq2' at position 4"),
        (_with_sequence(1, "ACGU"), r"'U' in sequence 'seq1' at position 4.*alphabet='rna'"),
        (_with_sequence(0, ""), "Sequence 'seq0' is empty"),
        (_with_sequence(3, "A" * 41), r"longer than the max_length=40.*'seq3' \(41 tokens\)"),
    ],
)
def test_bad_sequences_leave_data_unchanged(encoder, a, match):
    snapshot = a.obs.copy()
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.embed_sequences(a, encoder=encoder)
    pd.testing.assert_frame_equal(a.obs, snapshot)
    assert not a.obsm and "embeddings" not in a.uns.get("dfm", {})


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_duplicate_ids_and_missing_modality(encoder):
    md = pytest.importorskip("mudata")
    a = _adata(3)
    a.obs_names = ["x", "x", "y"]
    with pytest.raises(DfmInputError, match="duplicate sequence ids"):
        dfm.tl.embed_sequences(a, encoder=encoder)
    mdata = md.MuData({"rna": _adata(3)})
    with pytest.raises(DfmInputError, match=r"Modality 'dna' not found; the MuData has \['rna'\]"):
        dfm.tl.embed_sequences(mdata, mod="dna", encoder=encoder)
    assert not mdata["rna"].obsm
    with pytest.raises(TypeError, match="Expected an AnnData or MuData"):
        dfm.tl.embed_sequences({"a": "ACGT"}, encoder=encoder)
