"""GENERator and Nucleotide Transformer v1 checkpoints: equality with the upstream reference.

The fixtures were built by scripts/make_genomic_fixtures.py with the upstream
code (transformers' LlamaForCausalLM / EsmForMaskedLM and EsmTokenizer,
GENERator's own DNAKmerTokenizer; for NT v2 InstaDeep's own JAX/Haiku model);
their expected.npz holds the upstream token ids, every hidden state and the
pooled embedding. No torch is needed here.
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
from diffbio_sc.ops._dna_checkpoint_tokenizers import DnaTokenizerError

FIX = Path(__file__).parent / "fixtures"
FAMILIES = {
    "nucleotide_transformer_v1": "nucleotide_transformer",
    "nucleotide_transformer_v1_bin": "nucleotide_transformer",
    "nucleotide_transformer_v2": "nucleotide_transformer",
    "generator": "generator",
}
TOL = 1e-5


@pytest.fixture(scope="module")
def loaded():
    """Checkpoints loaded once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = dfm.models.load_checkpoint(FIX / name)
        return cache[name]

    return get


def _expected(name):
    e = np.load(FIX / name / "expected.npz")
    n = sum(k.startswith("ids_") for k in e.files)
    return e, [e[f"ids_{i}"] for i in range(n)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_recognised_from_config(loaded, name):
    m = loaded(name)
    assert m.family == FAMILIES[name]
    cfg = json.loads((FIX / name / "config.json").read_text())
    assert m.hidden_dim == cfg["hidden_size"]
    assert m.n_layers == cfg["num_hidden_layers"]
    if name.endswith("v2"):  # as NT v2's own config: no model_type, an auto_map to its code
        assert "model_type" not in cfg and "modeling_esm" in json.dumps(cfg["auto_map"])
        assert m.settings["version"] == "v2" and m.module.config.glu_ffn


@pytest.mark.parametrize("name", list(FAMILIES))
def test_token_ids_equal_upstream_tokenizer(loaded, name):
    m = loaded(name)
    e, want = _expected(name)
    seqs = [str(s) for s in e["all_sequences"]]
    assert len(seqs) == len(want)
    for i, (seq, ref) in enumerate(zip(seqs, want, strict=True)):
        ids, mask = m.tokenizer.encode([seq], unknown="token")
        assert mask.all()
        np.testing.assert_array_equal(ids[0], ref, err_msg=f"sequence {i}: {seq!r}")
        clean = set(seq) <= set(m.tokenizer.alphabet)
        if not clean:
            with pytest.raises(DnaTokenizerError, match=r"Sequence 0 has .* at position \d+"):
                m.tokenizer.encode([seq])
        elif len(ref) <= m.max_tokens:
            ids, _ = m.tokenize([seq])  # default unknown='error' gives the same ids
            np.testing.assert_array_equal(ids[0], ref)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_layer_and_pooled_equal_reference(loaded, name):
    m = loaded(name)
    e, _ = _expected(name)
    ids = e["input_ids"]
    states = m.hidden_states(ids)
    n_layers = sum(k.startswith("hidden_") for k in e.files)
    assert len(states) == n_layers == m.n_layers + 1
    # the Haiku reference (NT v2) masks padded queries too: its padded rows differ by design
    keep = e["attention_mask"] if name.endswith("v2") else np.ones(ids.shape, bool)
    for layer, got in enumerate(states):
        ref = e[f"hidden_{layer}"]
        assert np.asarray(got).shape == ref.shape
        np.testing.assert_allclose(
            np.asarray(got)[keep], ref[keep], atol=TOL, rtol=0, err_msg=f"layer {layer}"
        )
    pooled = np.asarray(m.module.pool(ids, states[-1]))
    np.testing.assert_allclose(pooled, e["pooled"], atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "name", ["nucleotide_transformer_v1", "nucleotide_transformer_v2", "generator"]
)
def test_embed_from_strings_equals_reference_and_rows_are_independent(loaded, name):
    m = loaded(name)
    e, _ = _expected(name)
    seqs = [str(s) for s in e["sequences"]]
    ids, _ = m.tokenize(seqs, unknown="token")
    np.testing.assert_array_equal(ids, e["input_ids"])
    emb = m.embed(seqs, unknown="token")
    assert emb.dtype == np.float32 and emb.shape == e["pooled"].shape
    np.testing.assert_allclose(emb, e["pooled"], atol=TOL, rtol=0)
    alone = m.embed(seqs[:1], unknown="token")
    np.testing.assert_allclose(alone[0], e["pooled"][0], atol=TOL, rtol=0)


def test_generator_mean_pooling_is_the_masked_mean(loaded):
    m = loaded("generator")
    e, _ = _expected("generator")
    seqs = [str(s) for s in e["sequences"]]
    got = m.embed(seqs, pooling="mean", unknown="token")
    last, mask = e[f"hidden_{m.n_layers}"], e["attention_mask"]
    want = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="pooling"):
        m.embed(seqs, pooling="cls", unknown="token")


@pytest.mark.parametrize("name", ["nucleotide_transformer_v1", "generator"])
def test_sequence_longer_than_context_is_an_error(loaded, name):
    m = loaded(name)
    long = "ACGTAC" * (m.max_tokens + 1)
    with pytest.raises(
        DnaTokenizerError, match=rf"Sequence 1 .* more than the model's context of {m.max_tokens}"
    ):
        m.tokenize(["ACGTAC", long])
    with pytest.raises(ValueError, match="exceed"):
        m.hidden_states(np.full((1, m.max_tokens + 1), 5, np.int32))


def test_symbols_outside_the_alphabet_are_named(loaded):
    nt, gen = loaded("nucleotide_transformer_v1"), loaded("generator")
    with pytest.raises(DnaTokenizerError, match=r"Sequence 1 has 'a' at position 2.*upper\(\)"):
        nt.tokenize(["ACGT", "ACaGT"])
    with pytest.raises(DnaTokenizerError, match=r"Sequence 0 has 'N' at position 3.*GENERator"):
        gen.tokenize(["ACGNAC"])
    with pytest.raises(DnaTokenizerError, match="unknown must be"):
        gen.tokenize(["ACGTAC"], unknown="skip")
    with pytest.raises(DnaTokenizerError, match="not one string"):
        gen.tokenize("ACGTAC")


def _copy(tmp_path, name):
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    return d


def test_missing_extra_and_misshaped_tensors_named_in_one_error(tmp_path):
    import safetensors.numpy

    for name, drop, reshape in [
        (
            "nucleotide_transformer_v1",
            "esm.encoder.layer.1.intermediate.dense.bias",
            "esm.encoder.layer.0.attention.self.query.weight",
        ),
        (
            "generator",
            "model.layers.1.mlp.up_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
        ),
    ]:
        d = _copy(tmp_path, name)
        w = safetensors.numpy.load_file(str(d / "model.safetensors"))
        assert drop in w and reshape in w
        w = {k: v for k, v in w.items() if k != drop}
        w[reshape] = w[reshape][:, :-1].copy()
        w["model.extra.weight" if name == "generator" else "esm.extra.weight"] = np.zeros(
            3, np.float32
        )
        safetensors.numpy.save_file(w, str(d / "model.safetensors"))
        with pytest.raises(ModelFormatError) as err:
            dfm.models.load_checkpoint(d)
        msg = str(err.value)
        assert "missing" in msg and "unexpected" in msg and "extra.weight" in msg
        assert "has shape" in msg and "model.safetensors" in msg


def test_unknown_family_and_unsupported_variants(tmp_path):
    d = _copy(tmp_path, "generator")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(
        CheckpointError, match=r"config\.json: model_type 'gpt2' is no.*'llama'.*'esm'"
    ):
        dfm.models.load_checkpoint(d)
    (d / "config.json").write_text(
        json.dumps({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    )
    with pytest.raises(ValueError, match="yarn"):
        dfm.models.load_checkpoint(d)

    d = _copy(tmp_path, "nucleotide_transformer_v1")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "rotary"}))
    with pytest.raises(ValueError, match=r"rotary ESM without add_bias_fnn"):
        dfm.models.load_checkpoint(d)
    (d / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="relative_key"):
        dfm.models.load_checkpoint(d)

    d = _copy(tmp_path, "nucleotide_transformer_v2")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "add_bias_fnn": True}))
    with pytest.raises(ModelFormatError, match=r"missing weights.*inter\.bias"):
        dfm.models.load_checkpoint(d)


@pytest.mark.parametrize("name", ["nucleotide_transformer_v1", "generator"])
def test_tokenizer_file_must_match_the_vocabulary(tmp_path, name):
    d = _copy(tmp_path, name)
    lines = (d / "vocab.txt").read_text().splitlines()
    (d / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(
        CheckpointError, match=rf"{len(lines) - 1} tokens .* vocab_size {len(lines)}"
    ):
        dfm.models.load_checkpoint(d)
    (d / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="vocab.txt"):
        dfm.models.load_checkpoint(d)


def test_transformers4_style_llama_config_loads_the_same(tmp_path, loaded):
    d = _copy(tmp_path, "generator")
    cfg = json.loads((d / "config.json").read_text())
    theta = cfg.pop("rope_parameters")["rope_theta"]
    (d / "config.json").write_text(json.dumps({**cfg, "rope_theta": theta, "rope_scaling": None}))
    m = dfm.models.load_checkpoint(d)
    assert m.module.config == loaded("generator").module.config


def test_dictionaries_are_refused_for_dna_checkpoints():
    with pytest.raises(ValueError, match="do not pass"):
        dfm.models.load_checkpoint(FIX / "generator", vocab={"A": 0})


def test_tiled_causal_attention_equals_the_plain_formula():
    from diffbio_sc.models._llama import causal_attention

    rng = np.random.default_rng(0)
    b, h, t, d = 2, 2, 520, 4  # 520 tokens: query blocks of 104
    q, k, v = (rng.standard_normal((b, h, t, d)).astype(np.float32) for _ in range(3))
    keep = np.ones((b, t), bool)
    keep[1, 300:] = False
    got = np.asarray(causal_attention(q, k, v, keep))
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) / np.sqrt(d)
    allowed = np.tril(np.ones((t, t), bool))[None, None] & keep[:, None, None, :]
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_embed_in_batches_equals_one_batch(loaded):
    m = loaded("nucleotide_transformer_v1")
    e, _ = _expected("nucleotide_transformer_v1")
    seqs = [str(s) for s in e["sequences"]]
    whole = m.embed(seqs, unknown="token", batch_size=len(seqs))
    parts = m.embed(seqs, unknown="token", batch_size=2)
    np.testing.assert_allclose(parts, whole, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.embed(seqs, unknown="token", batch_size=0)


@pytest.mark.parametrize("name", ["nucleotide_transformer_v1", "generator"])
def test_save_and_load_back(tmp_path, loaded, name):
    m = loaded(name)
    e, _ = _expected(name)
    seqs = [str(s) for s in e["sequences"]]
    m.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(tmp_path / "saved")
    assert back.family == m.family and back.max_tokens == m.max_tokens
    assert back.pooling == m.pooling and back.vocab == m.vocab
    np.testing.assert_array_equal(back.embed(seqs, unknown="token"), m.embed(seqs, unknown="token"))


def test_cell_embedding_refuses_a_dna_checkpoint(loaded):
    import anndata as ad

    adata = ad.AnnData(np.ones((3, 4), np.float32))
    with pytest.raises(dfm._validate.DfmInputError, match="embeds sequences, not cells"):
        dfm.tl.embed_checkpoint(adata, FIX / "generator")
    with pytest.raises(dfm._validate.DfmInputError, match="embeds sequences, not cells"):
        dfm.tl.embed_checkpoint(adata, loaded("generator"))
    assert "X_dfm" not in adata.obsm and not adata.uns


def _write_bf16_safetensors(path, weights):
    """A safetensors file with every float tensor stored as bfloat16 (round to nearest even)."""
    header, blobs, offset = {}, [], 0
    for name, w in weights.items():
        bits = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        blob = rounded.tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(w.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_bfloat16_checkpoint_loads_widened_exactly(tmp_path, loaded):
    import safetensors.numpy

    d = _copy(tmp_path, "generator")
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    _write_bf16_safetensors(d / "model.safetensors", w)
    m = dfm.models.load_checkpoint(d)
    got = np.asarray(m.module.embed.embedding[...])
    ref = w["model.embed_tokens.weight"]
    assert not np.array_equal(got, ref)  # rounded to 8 mantissa bits
    np.testing.assert_allclose(got, ref, rtol=2.0**-8, atol=0)
    assert np.array_equal(got.view(np.uint32) & 0xFFFF, np.zeros_like(got, np.uint32))
    emb = m.embed(["ACGTACGTACGT"])
    np.testing.assert_allclose(emb, loaded("generator").embed(["ACGTACGTACGT"]), atol=0.1)


@pytest.mark.parametrize(
    "name, field, value, what",
    [
        ("nucleotide_transformer_v1", "hidden_size", "16", "must be an integer"),
        ("nucleotide_transformer_v1", "layer_norm_eps", -1.0, "layer_norm_eps must be > 0"),
        ("nucleotide_transformer_v1", "token_dropout", 1, "must be"),
        ("generator", "num_hidden_layers", 2.0, "must be an integer"),
        ("generator", "rms_norm_eps", 0.0, "rms_norm_eps must be > 0"),
        ("generator", "rope_parameters", {"rope_type": "default", "rope_theta": "1e4"}, "must be"),
    ],
)
def test_config_fields_are_read_uncoerced_and_checked(tmp_path, name, field, value, what):
    """Issue 24: ``"hidden_size": "16"`` is refused, not coerced; eps must be positive."""
    d = _copy(tmp_path, name)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(CheckpointError, match=what) as err:
        dfm.models.load_checkpoint(d)
    assert "config.json" in str(err.value) or field in str(err.value)


@pytest.mark.parametrize("name", ["nucleotide_transformer_v1", "generator"])
def test_integer_weight_tensors_are_refused(tmp_path, name):
    """Issue 24: an int8 tensor read as raw values would give wrong embeddings silently."""
    import safetensors.numpy

    d = _copy(tmp_path, name)
    w = safetensors.numpy.load_file(str(d / "model.safetensors"))
    target = next(k for k in w if k.endswith("query.weight") or k.endswith("q_proj.weight"))
    w[target] = np.round(w[target] * 100).astype(np.int8)
    safetensors.numpy.save_file(w, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"{target}.*int8.*not floating point"):
        dfm.models.load_checkpoint(d)
