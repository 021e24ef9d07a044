"""The version-2 native model: latent cross-attention encoder and negative-binomial decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nnx = pytest.importorskip("flax.nnx")

from diffbio_sc.models import MaskedExpressionConfig, MaskedExpressionModel, load  # noqa: E402
from diffbio_sc.models._latent import CrossAttentionBlock  # noqa: E402
from diffbio_sc.models._likelihoods import nb_log_prob  # noqa: E402
from diffbio_sc.models._masked import random_token_mask  # noqa: E402

DATA = Path(__file__).parent / "data"
VOCAB = 40


def _model(seed=0, **kw):
    base = dict(
        vocab_size=VOCAB,
        hidden_dim=16,
        n_layers=1,
        n_heads=2,
        max_tokens=8,
        n_latents=4,
        profile_likelihood="nb",
        decoder_dim=8,
    )
    base.update(kw)
    return MaskedExpressionModel(
        MaskedExpressionConfig(**base), rngs=nnx.Rngs(params=jax.random.key(seed))
    )


def _tokens():
    ids = np.array([[5, 9, 7, 12, 0, 0, 0, 0], [20, 6, 0, 0, 0, 0, 0, 0]], np.int32)
    vals = np.array([[9.0, 4.0, 2.0, 1.0, 0, 0, 0, 0], [3.0, 0.5, 0, 0, 0, 0, 0, 0]], np.float32)
    return ids, vals


# ---------------------------------------------------------------- likelihood
def test_nb_log_prob_matches_scipy_and_hand_values():
    from scipy.stats import nbinom

    x = np.array([0, 0, 1, 5, 30, 2, 0], np.float64)
    mu = np.array([1e-3, 0.5, 2.0, 5.0, 10.0, 3.0, 40.0])
    theta = np.array([0.3, 1.0, 1.0, 10.0, 2.0, 0.05, 5.0])
    ref = nbinom.logpmf(x, theta, theta / (theta + mu))
    np.testing.assert_allclose(np.asarray(nb_log_prob(x, mu, theta)), ref, rtol=2e-5, atol=1e-5)
    # Hand case: x=0 gives theta * log(theta / (theta + mu)); x=1, theta=1, mu=1: log(1/4).
    np.testing.assert_allclose(float(nb_log_prob(0.0, 3.0, 2.0)), 2 * np.log(2 / 5), rtol=1e-6)
    np.testing.assert_allclose(float(nb_log_prob(1.0, 1.0, 1.0)), np.log(0.25), rtol=1e-6)


# ---------------------------------------------------------------- cross-attention
@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_cross_attention_is_a_weighted_softmax_average_by_hand():
    """One head, no dropout: the block's attention equals a numpy recomputation."""
    blk = CrossAttentionBlock(4, 1, 8, 0.0, rngs=nnx.Rngs(params=jax.random.key(2)))
    rng = np.random.default_rng(0)
    q_in = rng.normal(size=(1, 2, 4)).astype(np.float32)
    tok = rng.normal(size=(1, 5, 4)).astype(np.float32)
    w = np.array([[1.0, 0.5, 0.0, 1.0, 0.25]], np.float32)
    bias = np.where(w > 0, np.log(np.maximum(w, 1e-30)), -1e9).astype(np.float32)
    out = np.asarray(blk(jnp.asarray(q_in), jnp.asarray(tok), jnp.asarray(bias)))

    def ln(x, mod):
        m = x.mean(-1, keepdims=True)
        v = x.var(-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-6) * np.asarray(mod.scale) + np.asarray(mod.bias)

    def lin(x, mod):
        return x @ np.asarray(mod.kernel) + np.asarray(mod.bias)

    q = lin(ln(q_in[0], blk.ln_q), blk.q)
    kv = lin(ln(tok[0], blk.ln_kv), blk.kv)
    k, v = kv[:, :4], kv[:, 4:]
    logits = q @ k.T / 2.0 + np.log(np.maximum(w[0], 1e-30))
    logits[:, w[0] == 0] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    x = q_in[0] + lin(p @ v, blk.out)
    hid = lin(ln(x, blk.ln2), blk.ff1)
    y = lin(np.asarray(jax.nn.gelu(jnp.asarray(hid))), blk.ff2)
    np.testing.assert_allclose(out[0], x + y, atol=1e-5)


@pytest.mark.slow  # ~35 s: one compilation per padded shape
def test_latent_embedding_independent_of_padding_and_batch_mates():
    model = _model()
    ids, vals = _tokens()
    emb = np.asarray(model.embed(ids, vals))
    # Longer padding with garbage values at the padded positions.
    ids_long = np.concatenate([ids, np.zeros((2, 24), np.int32)], axis=1)
    vals_long = np.concatenate([vals, np.full((2, 24), 1e3, np.float32)], axis=1)
    np.testing.assert_allclose(np.asarray(model.embed(ids_long, vals_long)), emb, atol=1e-5)
    # Each cell alone, truncated to its own tokens.
    np.testing.assert_allclose(
        np.asarray(model.embed(ids[:1, :4], vals[:1, :4]))[0], emb[0], atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(model.embed(ids[1:, :2], vals[1:, :2]))[0], emb[1], atol=1e-5
    )
    # A cell without tokens embeds to zero; the others are unaffected.
    ids3 = np.concatenate([ids, np.zeros((1, 8), np.int32)])
    vals3 = np.concatenate([vals, np.zeros((1, 8), np.float32)])
    e3 = np.asarray(model.embed(ids3, vals3))
    np.testing.assert_array_equal(e3[2], 0.0)
    np.testing.assert_allclose(e3[:2], emb, atol=1e-5)
    assert np.abs(emb[0] - emb[1]).max() > 1e-3  # cells differ


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_latent_soft_path_reaches_the_hard_path():
    model = _model(max_tokens=3)
    ids = np.array([5, 9, 7, 12, 20], np.int32)
    expr = np.array([[9.0, 0.0, 2.0, 4.0, 1.0], [0.5, 3.0, 0.0, 0.0, 6.0]], np.float32)
    soft = np.asarray(model.embed_soft(ids, expr, temperature=1e-4, keep_temperature=1e-3))
    hard_ids = np.array([[5, 12, 7], [20, 9, 5]], np.int32)
    hard_vals = np.array([[9.0, 4.0, 2.0], [6.0, 3.0, 0.5]], np.float32)
    np.testing.assert_allclose(soft, np.asarray(model.embed(hard_ids, hard_vals)), atol=1e-4)


# ---------------------------------------------------------------- objective
@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_nb_loss_matches_an_independent_computation():
    from scipy.stats import nbinom

    model = _model(n_profile_genes=3, n_batches=2)
    ids, vals = _tokens()
    counts = np.array([[3.0, 0.0, 7.0], [0.0, 2.0, 1.0]], np.float32)
    batch = np.array([1, 0])
    key = jax.random.key(4)
    loss, parts = model.loss(ids, vals, key=key, profile=counts, batch=batch)
    mask_key, _ = jax.random.split(key)
    masked = np.asarray(random_token_mask(mask_key, jnp.asarray(ids != 0), 0.3))
    _, emb = model(ids, vals, masked=jnp.asarray(masked))
    z = np.asarray(emb) + np.asarray(model.batch_embed(jnp.asarray(batch)))
    mu, theta = (
        np.asarray(a, np.float64) for a in model.decode_counts(jnp.asarray(z), counts.sum(1))
    )
    # Means sum to each cell's library size over the profile genes.
    np.testing.assert_allclose(mu.sum(1), counts.sum(1), rtol=1e-5)
    ref_prof = -nbinom.logpmf(counts, theta, theta / (theta + mu)).mean()
    np.testing.assert_allclose(float(parts["profile"]), ref_prof, rtol=1e-5)
    # Masked values are decoded from the gene's identity and the cell embedding.
    q = model.value_query(model.gene_embed(jnp.asarray(ids)))
    hid = jax.nn.gelu(q + model.value_cell(emb)[:, None, :])
    bemb = model.batch_embed(jnp.asarray(batch))[:, None, :]
    pred = np.asarray(model.value_head(hid + bemb))[..., 0]
    ref_val = ((pred - np.log1p(vals)) ** 2)[masked].mean()
    np.testing.assert_allclose(float(parts["value"]), ref_val, rtol=1e-5)
    cfg = model.config
    np.testing.assert_allclose(
        float(loss), cfg.value_weight * ref_val + cfg.profile_weight * ref_prof, rtol=1e-5
    )
    # The batch enters the decoder only: another batch changes the likelihood.
    _, parts_b = model.loss(ids, vals, key=key, profile=counts, batch=1 - batch)
    assert float(parts_b["profile"]) != float(parts["profile"])


# ---------------------------------------------------------------- config and format
def test_config_versions_and_new_fields():
    cfg = MaskedExpressionConfig(vocab_size=VOCAB)
    assert cfg.config_version == 2
    assert MaskedExpressionConfig.from_dict(cfg.to_dict()) == cfg
    old = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in ("config_version", "n_latents", "profile_likelihood", "decoder_dim")
    }
    legacy = MaskedExpressionConfig.from_dict(old)
    assert (legacy.config_version, legacy.n_latents, legacy.profile_likelihood) == (1, 0, "mse")
    for kw, match in [
        (dict(n_latents=-1), "n_latents"),
        (dict(profile_likelihood="zinb"), "profile_likelihood"),
        (dict(decoder_dim=0), "decoder_dim"),
        (dict(config_version=3), "config_version"),
        (dict(n_latents=4, use_cls=True), "use_cls"),
    ]:
        with pytest.raises(ValueError, match=match):
            MaskedExpressionConfig(vocab_size=VOCAB, **kw)


def test_model_saved_by_the_previous_main_loads_as_its_architecture():
    """A format-2 model saved by main dd6d1e5 (no config_version) embeds as it did."""
    ref = json.loads((DATA / "masked_v2_expected.json").read_text())
    m = load(DATA / "masked_v2_dd6d1e5")
    assert m.config.config_version == 1 and m.config.n_latents == 0
    assert m.config.profile_likelihood == "mse" and m.config.n_profile_genes == 3
    emb = np.asarray(m.embed(np.asarray(ref["ids"], np.int32), np.asarray(ref["vals"], np.float32)))
    np.testing.assert_allclose(emb, np.asarray(ref["embedding"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # fast-suite budget: builds and reloads a latent model eagerly (~13 s)
def test_latent_nb_model_save_load_round_trip(tmp_path):
    model = _model(seed=3, n_profile_genes=4, n_batches=2)
    out = model.save(tmp_path / "m")
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["config_version"] == 2 and doc["config"]["n_latents"] == 4
    loaded = load(out)
    assert loaded.config == model.config
    ids, vals = _tokens()
    np.testing.assert_array_equal(
        np.asarray(loaded.embed(ids, vals)), np.asarray(model.embed(ids, vals))
    )
    np.testing.assert_array_equal(
        np.asarray(loaded.log_theta[...]), np.asarray(model.log_theta[...])
    )
