"""dfm.tl.pretrain_sequences: masked-language pretraining on the shared trainer."""

from __future__ import annotations

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig

TINY = SequenceEncoderConfig(
    hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, max_length=32, dropout=0.0
)


def _periodic(n=48, seed=0):
    """Rotations of a period-4 pattern: a masked base is fixed by its neighbours."""
    rng = np.random.default_rng(seed)
    unit = "ACGT" * 8
    return dfm.io.sequences_to_adata([unit[r : r + 20] for r in rng.integers(0, 4, n)])


def test_pretrain_learns_save_load_and_seed(tmp_path):
    a = _periodic()
    m = dfm.tl.pretrain_sequences(
        a, config=TINY, epochs=12, batch_size=8, learning_rate=1e-2, progress_bar=False,
        early_stopping_patience=None,
    )
    assert isinstance(m, SequenceEncoder)
    h = m.history
    assert len(h["train_loss"]) == 12 and len(h["val_loss"]) == 12
    # chance level is ln 4 = 1.386; the pattern is learnable from the context
    assert min(h["val_loss"]) < 0.7
    assert m.metadata["training"]["mask_ratio"] == 0.15
    m.save(tmp_path / "enc")
    back = dfm.models.load(tmp_path / "enc")
    assert back.weights_sha256() == m.weights_sha256()
    assert back.history["train_loss"] == h["train_loss"]
    m2 = dfm.tl.pretrain_sequences(
        a, config=TINY, epochs=12, batch_size=8, learning_rate=1e-2, progress_bar=False,
        early_stopping_patience=None,
    )
    assert m2.weights_sha256() == m.weights_sha256()
    # embed_sequences with encoder=None trains one with the same function and keeps it
    b = _periodic(16, seed=1)
    dfm.tl.embed_sequences(
        b, encoder=None, config=TINY, epochs=1, batch_size=8, progress_bar=False,
        save_model=tmp_path / "auto",
    )
    entry = b.uns["dfm"]["embeddings"]["X_dfm_seq"]
    assert entry["weights_retrievable"] is True
    assert dfm.models.load(tmp_path / "auto").weights_sha256() == entry["weights_sha256"]


def test_bad_input():
    a = _periodic(4)
    with pytest.raises(TypeError, match="SequenceEncoderConfig"):
        dfm.tl.pretrain_sequences(a, config={"hidden_dim": 8})
    with pytest.raises(DfmInputError, match="Too few sequences"):
        dfm.tl.pretrain_sequences(a[:1].copy(), config=TINY, validation_fraction=0.5)
    rna = dfm.io.sequences_to_adata(["ACGU"], alphabet="rna")
    with pytest.raises(DfmInputError, match="'U'.*alphabet='rna'"):
        dfm.tl.pretrain_sequences(rna, config=TINY)
