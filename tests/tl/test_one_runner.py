"""The one batched runner under every embedding path: batch-mate independence, eval mode,
one digest per model, no AnnData round trip in the gene encoders, no second bucketing routine."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import diffbio_sc as dfm
from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig
from diffbio_sc.models._runner import eval_split, weights_digest

SRC = Path(dfm.__file__).parent
FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"


def _random(n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", np.uint8)
    return [
        letters[rng.integers(0, 4, rng.integers(lo, hi + 1))].tobytes().decode() for _ in range(n)
    ]


@pytest.fixture(scope="module")
def kmer_encoder():
    cfg = SequenceEncoderConfig(
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        intermediate_dim=16,
        max_length=64,
        dropout=0.1,
        tokenizer="kmer",
        k=3,
        reverse_complement="average",
    )
    return SequenceEncoder(cfg, rngs=nnx.Rngs(params=1))


def test_no_second_runner_or_bucketing_routine():
    pattern = re.compile(
        r"def length_buckets|def bucket_widths|class SequenceRunner|"
        r"class CheckpointSequenceRunner|class _Embedder|def window_starts"
    )
    hits = [
        f"{p.relative_to(SRC)}: {m.group()}"
        for p in SRC.rglob("*.py")
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    ]
    # the one window rule lives in ops (window_starts); nothing else may define one
    assert hits == ["ops/_sequence_alphabet.py: def window_starts"]


@pytest.mark.slow  # pretrains / compiles a long model: the slow step runs it
def test_native_cells_independent_of_batch_mates():
    from diffbio_sc.models import MaskedExpressionConfig

    data = dfm.datasets.synthetic_counts(90, 120, n_cell_types=3, n_batches=1, seed=3)
    cfg = MaskedExpressionConfig(hidden_dim=16, n_layers=1, n_heads=2, max_tokens=64)
    model = dfm.tl.pretrain(data, config=cfg, epochs=1, seed=0, progress_bar=False)
    full = dfm.tl.embed(data, model, batch_size=8, progress_bar=False, copy=True).obsm["X_dfm"]
    idx = np.random.default_rng(0).permutation(data.n_obs)[:29]
    part = dfm.tl.embed(data[idx].copy(), model, batch_size=3, progress_bar=False, copy=True)
    np.testing.assert_allclose(part.obsm["X_dfm"], full[idx], atol=1e-6)
    assert np.linalg.norm(full[idx[0]] - full[idx[1]]) > 1e-3  # not vacuous


@pytest.mark.slow  # 4-13 s: runs in CI's slow step (fast suite budget)
def test_sequence_paths_independent_of_batch_mates(kmer_encoder):
    seqs = _random(10, 5, 30, seed=1)  # two buckets (16, 32 tokens)
    idx = np.random.default_rng(1).permutation(len(seqs))[:5]
    for enc in (kmer_encoder, dfm.models.load_checkpoint(FIX / "nucleotide_transformer_v1")):
        full = dfm.io.sequences_to_adata(seqs)
        dfm.tl.embed_sequences(full, encoder=enc, reverse_complement="average", batch_size=4)
        sub = dfm.io.sequences_to_adata([seqs[i] for i in idx])
        dfm.tl.embed_sequences(sub, encoder=enc, reverse_complement="average", batch_size=2)
        np.testing.assert_allclose(sub.obsm["X_dfm_seq"], full.obsm["X_dfm_seq"][idx], atol=1e-6)


def test_eval_split_leaves_the_mode_and_embeds_without_dropout(kmer_encoder):
    kmer_encoder.train()
    try:
        graphdef, state = eval_split(kmer_encoder)
        assert not kmer_encoder.embed_drop.deterministic  # caller's mode kept
        assert nnx.merge(graphdef, state).embed_drop.deterministic  # split in eval mode
        seqs = _random(4, 5, 14, seed=2)
        a = dfm.io.sequences_to_adata(seqs)
        dfm.tl.embed_sequences(a, encoder=kmer_encoder, reverse_complement="average")
        kmer_encoder.eval()
        b = dfm.io.sequences_to_adata(seqs)
        dfm.tl.embed_sequences(b, encoder=kmer_encoder, reverse_complement="average")
        np.testing.assert_array_equal(a.obsm["X_dfm_seq"], b.obsm["X_dfm_seq"])
    finally:
        kmer_encoder.eval()


def test_weights_hashed_once_per_model(kmer_encoder, monkeypatch):
    calls = []
    real = type(kmer_encoder).weights_sha256

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(type(kmer_encoder), "weights_sha256", counting)
    model = SequenceEncoder(kmer_encoder.config, rngs=nnx.Rngs(params=7))
    first = weights_digest(model)
    assert weights_digest(model) == first and len(calls) == 1
    seqs = _random(3, 5, 14, seed=3)
    for _ in range(2):
        dfm.tl.embed_sequences(dfm.io.sequences_to_adata(seqs), encoder=model)
    assert len(calls) == 1
    model.token_embed.embedding[...] = model.token_embed.embedding[...] + 1.0  # new weights
    assert weights_digest(model) != first and len(calls) == 2


def test_gene_encoders_run_without_anndata(kmer_encoder, monkeypatch):
    from diffbio_sc.tl._genetics import _encoders

    seqs = _random(6, 5, 14, seed=4)
    nt = dfm.models.load_checkpoint(FIX / "nucleotide_transformer_v1")
    want = {}
    for name, enc in (("native", kmer_encoder), ("nt", nt)):
        a = dfm.io.sequences_to_adata(seqs)
        dfm.tl.embed_sequences(a, encoder=enc, reverse_complement=None, batch_size=4)
        want[name] = a.obsm["X_dfm_seq"]

    def refuse(*a, **k):
        raise AssertionError("the gene encoders must not build an AnnData or call dfm.tl")

    monkeypatch.setattr(dfm.tl, "embed_sequences", refuse)
    monkeypatch.setattr(dfm.io, "sequences_to_adata", refuse)
    for name, model in (("native", kmer_encoder), ("nt", nt)):
        enc = _encoders.as_encoder(model, batch_size=4)
        got = np.concatenate([enc.embed(seqs[:4]), enc.embed(seqs[4:])])  # two calls
        np.testing.assert_allclose(got, want[name], atol=1e-6)
