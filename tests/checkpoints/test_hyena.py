"""HyenaDNA checkpoints: equality with the upstream reference, loading rules, tokens.

The fixtures were built by scripts/make_hyena_fixture.py with the upstream code
(the ``LongSafari/hyenadna-*-hf`` checkpoints' ``modeling_hyena.py`` remote code
and HazyResearch/hyena-dna's ``CharacterTokenizer``; repositories and commits in
``fixtures/hyenadna/meta.json``); expected.npz holds the upstream token ids, every
hidden state and the pooled embedding. No torch is needed here.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.io._checkpoints import CheckpointError
from diffbio_sc.models._base import ModelFormatError
from diffbio_sc.models._hyena import fft_size, long_conv, positional_tables, torch_linspace
from diffbio_sc.ops._dna_checkpoint_tokenizers import DnaTokenizerError

FIX = Path(__file__).parent / "fixtures"
NAMES = ["hyenadna", "hyenadna_bin"]
TOL = 1e-5
_COMP = str.maketrans("ACGTN", "TGCAN")


@pytest.fixture(scope="module")
def loaded():
    """``loaded(name)``: the fixture checkpoint ``name``, loaded once per module."""
    return functools.lru_cache(maxsize=None)(lambda name: dfm.models.load_checkpoint(FIX / name))


def _expected():
    e = np.load(FIX / "hyenadna" / "expected.npz")
    n = sum(k.startswith("ids_") for k in e.files)
    return e, [e[f"ids_{i}"] for i in range(n)]


def _copy(tmp_path, name="hyenadna"):
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    return d


@pytest.mark.parametrize("name", NAMES)
def test_family_recognised_from_config(loaded, name):
    m = loaded(name)
    cfg = json.loads((FIX / name / "config.json").read_text())
    assert cfg["model_type"] == "hyenadna"
    assert m.family == "hyenadna" and m.pooling == "mean"
    assert m.hidden_dim == cfg["d_model"] and m.n_layers == cfg["n_layer"]
    assert m.max_tokens == cfg["max_seq_len"] == 1026
    assert m.module.config.vocab_size == 16  # 12 rounded up to a multiple of 8, as upstream


def test_token_ids_equal_upstream_tokenizer(loaded):
    m = loaded("hyenadna")
    e, want = _expected()
    seqs = [str(s) for s in e["all_sequences"]]
    assert len(seqs) == len(want) and any(len(s) + 1 > m.max_tokens for s in seqs)
    for i, (seq, ref) in enumerate(zip(seqs, want, strict=True)):
        ids, mask = m.tokenizer.encode([seq], unknown="token")  # no length limit here
        assert mask.all()
        np.testing.assert_array_equal(ids[0], ref, err_msg=f"sequence {i}: {seq!r}")
    # hand-checked rule: A C G T N -> 7..11, lower case and others [UNK] 6, [SEP] 1 last
    ids, _ = m.tokenizer.encode(["ACGTNacR"], unknown="token")
    assert ids[0].tolist() == [7, 8, 9, 10, 11, 6, 6, 6, 1]


def test_symbols_outside_the_alphabet_are_named(loaded):
    m = loaded("hyenadna")
    with pytest.raises(DnaTokenizerError, match=r"Sequence 1 has 'a' at position 2.*upper\(\)"):
        m.tokenize(["ACGT", "ACaGT"])
    with pytest.raises(DnaTokenizerError, match=r"Sequence 0 has 'R' at position 3.*HyenaDNA"):
        m.tokenize(["ACGRAC"])
    ids, _ = m.tokenize(["ACGTN"])  # N is one of the model's characters
    assert ids[0].tolist() == [7, 8, 9, 10, 11, 1]


@pytest.mark.parametrize("name", NAMES)
def test_every_layer_and_pooled_equal_reference(loaded, name):
    m = loaded(name)
    e, _ = _expected()
    ids = e["input_ids"]
    states = m.hidden_states(ids)
    n = sum(k.startswith("hidden_") for k in e.files)
    assert len(states) == n == m.n_layers + 2  # embeddings, blocks, final LayerNorm
    for layer, got in enumerate(states):
        ref = e[f"hidden_{layer}"]
        assert np.asarray(got).shape == ref.shape
        assert np.abs(ref).max() > 0.1  # not a trivially small state
        np.testing.assert_allclose(np.asarray(got), ref, atol=TOL, rtol=0, err_msg=f"layer {layer}")
    pooled = np.asarray(m.module.pool(ids, states[-1]))
    np.testing.assert_allclose(pooled, e["pooled"], atol=TOL, rtol=0)


def test_embed_from_strings_and_padding_never_changes_a_sequence(loaded):
    m = loaded("hyenadna")
    e, _ = _expected()
    seqs = [str(s) for s in e["sequences"]]
    ids, _ = m.tokenize(seqs, unknown="token")
    np.testing.assert_array_equal(ids, e["input_ids"])
    emb = m.embed(seqs, unknown="token", batch_size=len(seqs))
    assert emb.dtype == np.float32 and emb.shape == e["pooled"].shape
    np.testing.assert_allclose(emb, e["pooled"], atol=TOL, rtol=0)
    # causal: a short sequence alone equals its row of the right-padded batch,
    # every layer at its real positions, and its pooled embedding
    short = int(np.argmin([len(s) for s in seqs]))
    n_real = int((ids[short] != 4).sum())
    alone_ids, _ = m.tokenize([seqs[short]], unknown="token")
    assert alone_ids.shape[1] == n_real < ids.shape[1]
    alone = m.hidden_states(alone_ids)
    batch = m.hidden_states(ids)
    for a, b in zip(alone, batch, strict=True):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[short, :n_real], atol=TOL)
    np.testing.assert_allclose(
        m.embed([seqs[short]], unknown="token")[0], emb[short], atol=TOL, rtol=0
    )


def test_sequence_longer_than_the_context_is_an_error(loaded):
    m = loaded("hyenadna")
    e, _ = _expected()
    long = str(e["all_sequences"][-1])
    with pytest.raises(DnaTokenizerError, match=r"Sequence 1 .*1101 tokens.*context of 1026"):
        m.tokenize(["ACGT", long])
    with pytest.raises(ValueError, match="exceed"):
        m.hidden_states(np.full((1, 1027), 7, np.int32))


def test_fft_long_convolution_equals_the_direct_sum():
    rng = np.random.default_rng(0)
    b, c, n = 2, 3, 37
    u = rng.standard_normal((b, c, n)).astype(np.float32)
    k = rng.standard_normal((c, n)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    want = np.zeros((b, c, n))
    for t in range(n):
        for s in range(t + 1):
            want[..., t] += k[:, s] * u[..., t - s]
    want += u * bias[None, :, None]
    np.testing.assert_allclose(np.asarray(long_conv(u, k, bias)), want, atol=1e-4, rtol=0)
    for m in (2, 74, 2 * 1025, 262146, 2 * 160_002):
        size = fft_size(m)
        assert size >= m and size < 1.35 * m
        f = size
        for p in (2, 3, 5):
            while f % p == 0:
                f //= p
        assert f == 1


def test_torch_linspace_rule():
    got = torch_linspace(0.0, 1.0, 7)
    assert got.dtype == np.float32 and got[0] == 0.0 and got[-1] == 1.0
    np.testing.assert_allclose(got, np.linspace(0, 1, 7), atol=1e-7)
    # the second half is computed from the end: end - (n - 1 - i) * step, in float32
    step = np.float32(1.0) / np.float32(6)
    assert got[5] == np.float32(1.0) - np.float32(1) * step


def test_missing_extra_and_misshaped_tensors_named_in_one_error(tmp_path):
    import safetensors.numpy

    d = _copy(tmp_path)
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    drop = "backbone.layers.1.mlp.fc2.bias"
    reshape = "backbone.layers.0.mixer.in_proj.weight"
    assert drop in w and reshape in w
    w = {k: v for k, v in w.items() if k != drop}
    w[reshape] = w[reshape][:, :-1].copy()
    w["backbone.extra.weight"] = np.zeros(3, np.float32)
    safetensors.numpy.save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ModelFormatError) as err:
        dfm.models.load_checkpoint(d)
    msg = str(err.value)
    assert "missing" in msg and "fc2.bias" in msg
    assert "unexpected" in msg and "backbone.extra.weight" in msg
    assert "has shape" in msg and "model.safetensors" in msg


def test_positional_buffers_are_checked_and_tied_frequencies_must_agree(tmp_path, loaded):
    import safetensors.numpy

    d = _copy(tmp_path)
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    # the tables computed from the config are upstream's buffers to float32 rounding
    z_ref, t_ref, deltas_ref = positional_tables(loaded("hyenadna").module.config)
    pre = "backbone.layers.0.mixer.filter_fn."
    np.testing.assert_allclose(w[pre + "pos_emb.t"][0], t_ref, atol=1e-7, rtol=0)
    np.testing.assert_allclose(w[pre + "modulation.deltas"][0, 0], deltas_ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(w[pre + "pos_emb.z"][0], z_ref, atol=1e-6, rtol=0)
    z = "backbone.layers.0.mixer.filter_fn.pos_emb.z"
    w[z] = w[z] * 1.01
    freq = "backbone.layers.1.mixer.filter_fn.implicit_filter.1.freq"
    w["backbone.layers.1.mixer.filter_fn.implicit_filter.3.freq"] = w[freq] + 1.0
    safetensors.numpy.save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ModelFormatError) as err:
        dfm.models.load_checkpoint(d)
    msg = str(err.value)
    assert "pos_emb.z" in msg and "differs from the table computed" in msg
    assert "implicit_filter.3.freq" in msg and "shares one sin frequency" in msg


def test_missing_frequency_is_named(tmp_path):
    import safetensors.numpy

    d = _copy(tmp_path)
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    w = {k: v for k, v in w.items() if not k.endswith("freq")}
    safetensors.numpy.save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ModelFormatError, match=r"missing.*layers\.0\.mixer\.freq"):
        dfm.models.load_checkpoint(d)


@pytest.mark.parametrize(
    "field, value, what",
    [
        ("hyena_order", 3, "hyena_order 3 is not supported"),
        ("short_filter_order", 4, "short_filter_order 4 is not supported"),
        ("d_model", "32", "must be an integer"),
        ("emb_dim", 4, "emb_dim must be odd"),
        ("vocab_size", 13, "7 special \\+ 5 characters.*vocab_size 13"),
    ],
)
def test_unsupported_or_invalid_configs_are_refused(tmp_path, field, value, what):
    d = _copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(CheckpointError, match=what):
        dfm.models.load_checkpoint(d)


def test_dictionaries_are_refused(loaded):
    with pytest.raises(ValueError, match="carries its own tokenizer: do not pass"):
        dfm.models.load_checkpoint(FIX / "hyenadna", vocab={"A": 0})


def test_save_and_load_back(tmp_path, loaded):
    m = loaded("hyenadna")
    e, _ = _expected()
    seqs = [str(s) for s in e["sequences"]]
    m.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(tmp_path / "saved")
    assert back.family == "hyenadna" and back.max_tokens == m.max_tokens
    assert back.pooling == m.pooling and back.vocab == m.vocab
    assert back.tokenizer.characters == m.tokenizer.characters
    np.testing.assert_array_equal(back.embed(seqs, unknown="token"), m.embed(seqs, unknown="token"))


def _embed_seq(seqs, model, **kw):
    a = dfm.io.sequences_to_adata(seqs, ids=[f"s{i}" for i in range(len(seqs))])
    dfm.tl.embed_sequences(a, encoder=model, **kw)
    return a.obsm["X_dfm_seq"], a.uns["dfm"]["embeddings"]["X_dfm_seq"]


def test_embed_sequences_average_is_strand_invariant_and_batch_independent(loaded):
    m = loaded("hyenadna")
    rng = np.random.default_rng(4)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (5, 12, 20, 27)]
    seqs[2] = seqs[2][:9] + "N" + seqs[2][10:]
    fwd, entry = _embed_seq(seqs, m, reverse_complement=None, batch_size=2)
    np.testing.assert_allclose(fwd, m.embed(seqs), atol=TOL, rtol=0)
    rc = [s.translate(_COMP)[::-1] for s in seqs]
    rc_fwd, _ = _embed_seq(rc, m, reverse_complement=None, batch_size=2)
    assert np.abs(fwd - rc_fwd).max() > 1e-3  # the model alone is not strand-invariant
    avg, entry = _embed_seq(seqs, m, reverse_complement="average", batch_size=2)
    np.testing.assert_allclose(avg, 0.5 * (fwd + rc_fwd), atol=1e-6, rtol=0)
    assert entry["reverse_complement"] == "average"
    back, _ = _embed_seq(rc, m, reverse_complement="average", batch_size=2)
    np.testing.assert_allclose(avg, back, atol=1e-6, rtol=0)
    # a sequence's vector does not depend on its batch-mates
    few, _ = _embed_seq([seqs[3], seqs[0]], m, reverse_complement=None, batch_size=2)
    np.testing.assert_array_equal(few, fwd[[3, 0]])
    # windows count bases: one character per token, plus [SEP]
    with pytest.raises(dfm._validate.DfmInputError, match="window=1025"):
        _embed_seq(seqs, m, window=2000)


def test_blocked_long_inputs_equal_the_reference(loaded, monkeypatch):
    """Channel blocks of the FFT and position blocks of the MLP change nothing."""
    from diffbio_sc.models import _hyena

    m = loaded("hyenadna")
    e, _ = _expected()
    monkeypatch.setattr(_hyena, "CHANNEL_BLOCK", 8)  # 32 channels: 4 blocks
    monkeypatch.setattr(_hyena, "POSITION_BLOCK", 48)  # not a divisor of the width
    assert e["input_ids"].shape[1] % 48
    states = m.module.hidden_states(e["input_ids"])  # eager: the patched sizes are used
    for layer, got in enumerate(states):
        np.testing.assert_allclose(
            np.asarray(got), e[f"hidden_{layer}"], atol=TOL, rtol=0, err_msg=f"layer {layer}"
        )
