"""DNABERT-2 in JAX: equality with its published reference code.

The fixture was built by scripts/make_dnabert2_fixture.py with DNABERT-2's own
remote code (``bert_layers.py`` / ``bert_padding.py`` / ``configuration_bert.py``
as published with ``zhihan1996/DNABERT-2-117M``; the repository and commit are in
its meta.json) on a tiny random configuration, and a BPE tokenizer trained with
the ``tokenizers`` library, read by ``transformers.PreTrainedTokenizerFast``.
No torch is needed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.io._checkpoints import CheckpointError
from diffbio_sc.models._base import ModelFormatError
from diffbio_sc.models._dnabert2 import alibi_slopes, is_dnabert2_config
from diffbio_sc.ops._dna_checkpoint_tokenizers import DnaTokenizerError

pytest.importorskip("tokenizers")

FIX = Path(__file__).parent / "fixtures" / "dnabert2"
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return dfm.models.load_checkpoint(FIX)


@pytest.fixture(scope="module")
def expected():
    e = np.load(FIX / "expected.npz")
    n = sum(k.startswith("ids_") for k in e.files)
    return e, [e[f"ids_{i}"] for i in range(n)]


def _copy(tmp_path, name="ckpt"):
    d = tmp_path / name
    shutil.copytree(FIX, d)
    return d


def test_family_recognised_from_config(model):
    cfg = json.loads((FIX / "config.json").read_text())
    # as DNABERT-2's own config: model_type 'bert' and an auto_map to its bert_layers code
    assert cfg["model_type"] == "bert" and "bert_layers.BertModel" in json.dumps(cfg["auto_map"])
    assert is_dnabert2_config(cfg)
    assert not is_dnabert2_config({"model_type": "bert", "hidden_size": 8})  # Geneformer's
    assert model.family == "dnabert2"
    assert model.hidden_dim == cfg["hidden_size"]
    assert model.n_layers == cfg["num_hidden_layers"]
    assert model.max_tokens == cfg["max_position_embeddings"]
    assert model.module.config.pad_token_id == model.tokenizer.pad_id == 3


def test_token_ids_equal_upstream_tokenizer(model, expected):
    e, want = expected
    seqs = [str(s) for s in e["all_sequences"]]
    assert len(seqs) == len(want)
    assert any("N" in s for s in seqs) and any(s != s.upper() for s in seqs)
    assert any(len(r) > model.max_tokens for r in want)
    for i, (seq, ref) in enumerate(zip(seqs, want, strict=True)):
        ids, mask = model.tokenizer.encode([seq], unknown="token")
        assert mask.all()
        np.testing.assert_array_equal(ids[0], ref, err_msg=f"sequence {i}: {seq!r}")
        if set(seq) <= set("ACGT") and len(ref) <= model.max_tokens:
            ids, _ = model.tokenize([seq])
            np.testing.assert_array_equal(ids[0], ref)
    ids, mask = model.tokenize([str(s) for s in e["sequences"]], unknown="token")
    np.testing.assert_array_equal(ids, e["input_ids"])
    np.testing.assert_array_equal(mask, e["attention_mask"])


def test_every_layer_and_pooled_equal_reference(model, expected):
    e, _ = expected
    states = model.hidden_states(e["input_ids"])
    n = sum(k.startswith("hidden_") for k in e.files)
    assert len(states) == n == model.n_layers + 1
    for i, h in enumerate(states):
        np.testing.assert_allclose(
            np.asarray(h), e[f"hidden_{i}"], rtol=0, atol=TOL, err_msg=f"hidden_{i}"
        )
    pooled = np.asarray(model.module.pool(e["input_ids"], states[-1]))
    np.testing.assert_allclose(pooled, e["pooled"], rtol=0, atol=TOL)
    emb = model.embed([str(s) for s in e["sequences"]], unknown="token", batch_size=3)
    np.testing.assert_allclose(emb, e["pooled"], rtol=0, atol=TOL)


def test_alibi_slopes_as_upstream():
    # power of two: 2 ** (-8 / n) geometric; otherwise the interleaved rule (DNABERT-2 has 12)
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(k + 1) for k in range(8)])
    s6 = alibi_slopes(6)
    assert s6[:4] == alibi_slopes(4) and s6[4:] == alibi_slopes(8)[0::2][:2]
    assert len(alibi_slopes(12)) == 12


def test_sequence_longer_than_context_is_an_error(model, expected):
    e, _ = expected
    long = [s for s in map(str, e["all_sequences"]) if s not in set(map(str, e["sequences"]))]
    assert long
    with pytest.raises(
        DnaTokenizerError,
        match=rf"Sequence 1 .* more than the model's context of {model.max_tokens}",
    ):
        model.tokenize(["ACGT", long[0]])
    with pytest.raises(DnaTokenizerError, match="context"):
        model.embed(long)
    with pytest.raises(ValueError, match="exceed"):
        model.hidden_states(np.full((1, model.max_tokens + 1), 5, np.int32))


def test_symbols_outside_the_alphabet_are_named(model):
    with pytest.raises(DnaTokenizerError, match=r"Sequence 0 has 'N' at position 3.*DNABERT-2"):
        model.tokenize(["ACGNT"])
    with pytest.raises(DnaTokenizerError, match=r"'a' at position 0.*upper\(\)"):
        model.tokenize(["acgt"])


def test_missing_extra_and_misshaped_tensors_named_in_one_error(tmp_path):
    import safetensors.numpy

    d = _copy(tmp_path)
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    drop = "bert.encoder.layer.1.mlp.gated_layers.weight"
    reshape = "bert.encoder.layer.0.attention.self.Wqkv.weight"
    assert drop in w and reshape in w
    w = {k: v for k, v in w.items() if k != drop}
    w[reshape] = w[reshape][:, :-1].copy()
    w["bert.extra.weight"] = np.zeros(3, np.float32)
    safetensors.numpy.save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ModelFormatError) as err:
        dfm.models.load_checkpoint(d)
    msg = str(err.value)
    assert "missing" in msg and "layers.1.gated.kernel" in msg
    assert "unexpected" in msg and "bert.extra.weight" in msg
    assert "has shape" in msg and "layers.0.wqkv.kernel" in msg and "model.safetensors" in msg


def test_tokenizer_must_match_the_vocabulary(tmp_path):
    d = _copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 1}))
    with pytest.raises(
        CheckpointError,
        match=rf"tokenizer\.json has {cfg['vocab_size']} tokens .* vocab_size {cfg['vocab_size'] + 1}",
    ):
        dfm.models.load_checkpoint(d)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(DnaTokenizerError, match="not a tokenizers file"):
        dfm.models.load_checkpoint(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        dfm.models.load_checkpoint(d)


def test_unsupported_config_and_dictionaries_are_refused(tmp_path):
    d = _copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(CheckpointError, match="hidden_act 'relu'"):
        dfm.models.load_checkpoint(d)
    (d / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 5}))
    with pytest.raises(CheckpointError, match="not a multiple"):
        dfm.models.load_checkpoint(d)
    with pytest.raises(ValueError, match="do not pass"):
        dfm.models.load_checkpoint(FIX, vocab={"A": 0})


def test_save_and_load_back(tmp_path, model, expected):
    e, _ = expected
    out = model.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(out)
    assert back.family == "dnabert2" and back.max_tokens == model.max_tokens
    seqs = [str(s) for s in e["sequences"]]
    np.testing.assert_array_equal(
        back.tokenize(seqs, unknown="token")[0], model.tokenize(seqs, unknown="token")[0]
    )
    np.testing.assert_allclose(back.embed(seqs, unknown="token"), e["pooled"], rtol=0, atol=TOL)


def test_embed_sequences_takes_dnabert2_object_or_directory(model):
    seqs = ["ACGTACGT", "TTGACA"]
    a = dfm.io.sequences_to_adata(seqs, ids=["s0", "s1"])
    dfm.tl.embed_sequences(a, encoder=model, reverse_complement=None)
    np.testing.assert_allclose(a.obsm["X_dfm_seq"], model.embed(seqs), rtol=0, atol=TOL)
    b = dfm.io.sequences_to_adata(seqs, ids=["s0", "s1"])
    dfm.tl.embed_sequences(b, encoder=FIX, reverse_complement=None)
    np.testing.assert_array_equal(b.obsm["X_dfm_seq"], a.obsm["X_dfm_seq"])
    assert b.uns["dfm"]["embeddings"]["X_dfm_seq"]["model_family"] == "dnabert2"


def test_pytorch_model_bin_loads_the_same(model, expected):
    # the published checkpoint ships pytorch_model.bin: read by the restricted unpickler
    e, _ = expected
    binary = dfm.models.load_checkpoint(FIX.parent / "dnabert2_bin")
    assert binary.family == "dnabert2"
    assert binary.path.name == "dnabert2_bin"
    for a, b in zip(
        binary.hidden_states(e["input_ids"]), model.hidden_states(e["input_ids"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
