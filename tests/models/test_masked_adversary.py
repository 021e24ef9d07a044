"""Integration objectives of the native model: the batch adversary (gradient reversal)
and the variational bottleneck."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nnx = pytest.importorskip("flax.nnx")

from diffbio_sc.models import MaskedExpressionConfig, MaskedExpressionModel, load  # noqa: E402
from diffbio_sc.models._layers import gradient_reversal  # noqa: E402
from diffbio_sc.models._masked import random_token_mask  # noqa: E402

VOCAB = 40


def _model(seed=0, **kw):
    base = dict(
        vocab_size=VOCAB,
        hidden_dim=16,
        n_layers=1,
        n_heads=2,
        max_tokens=8,
        n_batches=3,
        n_profile_genes=5,
        decoder_dim=8,
        dropout=0.0,
        batch_adversary_weight=2.5,
    )
    base.update(kw)
    return MaskedExpressionModel(
        MaskedExpressionConfig(**base), rngs=nnx.Rngs(params=jax.random.key(seed))
    )


def _inputs():
    ids = np.array(
        [[5, 9, 7, 12, 0, 0, 0, 0], [20, 6, 0, 0, 0, 0, 0, 0], [8, 30, 31, 0, 0, 0, 0, 0]],
        np.int32,
    )
    vals = np.array(
        [[9.0, 4.0, 2.0, 1.0, 0, 0, 0, 0], [3.0, 0.5, 0, 0, 0, 0, 0, 0], [5, 2, 1, 0, 0, 0, 0, 0]],
        np.float32,
    )
    counts = np.array([[3, 0, 1, 7, 2], [0, 0, 4, 1, 1], [9, 2, 0, 0, 5]], np.float32)
    return ids, vals, counts, np.array([0, 2, 1], np.int32)


def test_gradient_reversal_is_identity_forward_and_negated_backward():
    x = jnp.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(gradient_reversal(x, 0.5)), np.asarray(x))
    # d/dx sum(g(x)^2) = -scale * 2x, by hand.
    grad = jax.grad(lambda v: jnp.sum(gradient_reversal(v, 0.5) ** 2))(x)
    np.testing.assert_allclose(np.asarray(grad), [-1.0, 2.0, -3.0])
    grad_jit = jax.jit(jax.grad(lambda v: jnp.sum(3.0 * gradient_reversal(v))))(x)
    np.testing.assert_allclose(np.asarray(grad_jit), [-3.0, -3.0, -3.0])


def _masked_call(model, ids, vals, key):
    """Token states and embedding of the cells as ``loss`` sees them (same mask)."""
    mask_key, _ = jax.random.split(key)
    masked = random_token_mask(mask_key, jnp.asarray(ids) != 0, model.config.mask_ratio)
    return masked, *model(ids, vals, masked=masked)


def _parts_by_hand(model, ids, vals, counts, batch, key):
    """Reconstruction loss and adversary cross-entropy, written out without the reversal."""
    cfg = model.config
    masked, hidden, emb = _masked_call(model, ids, vals, key)
    bemb = model.batch_embed(jnp.asarray(batch))
    pred = model.value_head(hidden + bemb[:, None, :])[..., 0]
    m = masked.astype(jnp.float32)
    value = jnp.sum(m * (pred - jnp.log1p(vals)) ** 2) / m.sum()
    profile = -jnp.mean(model.profile_log_prob(emb + bemb, counts))
    logits = model.adversary_out(jax.nn.gelu(model.adversary_in(emb)))
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(batch)), batch])
    return cfg.value_weight * value + cfg.profile_weight * profile, ce


@pytest.mark.slow  # compiles three gradients of the model (20-50 s on 2 cores)
def test_adversary_gradient_is_reversed_for_the_encoder_only():
    model = _model()
    ids, vals, counts, batch = _inputs()
    key = jax.random.key(4)
    w = model.config.batch_adversary_weight

    def loss(m):
        return m.loss(ids, vals, key=key, profile=counts, batch=batch)

    (total, parts), g = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
    recon, ce = nnx.jit(_parts_by_hand)(model, ids, vals, counts, batch, key)
    # The reported loss is the reconstruction alone; the cross-entropy is reported apart.
    np.testing.assert_allclose(float(total), float(recon), rtol=1e-5)
    np.testing.assert_allclose(float(parts["adversary"]), float(ce), rtol=1e-5)
    assert 0 < float(ce) < 5

    def by_hand_grads(m):
        def part(i):
            return nnx.grad(lambda mm: _parts_by_hand(mm, ids, vals, counts, batch, key)[i])(m)

        return part(0), part(1)

    g_recon, g_ce = nnx.jit(by_hand_grads)(model)
    # Classifier: descends w x cross-entropy (no reconstruction gradient reaches it).
    for name in ("adversary_in", "adversary_out"):
        np.testing.assert_allclose(
            np.asarray(g[name]["kernel"][...]),
            w * np.asarray(g_ce[name]["kernel"][...]),
            rtol=1e-4,
            atol=1e-6,
        )
    # Encoder: reconstruction gradient minus w x the cross-entropy gradient.
    enc = np.asarray(g["gene_embed"]["embedding"][...])
    ref = np.asarray(g_recon["gene_embed"]["embedding"][...]) - w * np.asarray(
        g_ce["gene_embed"]["embedding"][...]
    )
    assert np.abs(np.asarray(g_ce["gene_embed"]["embedding"][...])).max() > 1e-4
    np.testing.assert_allclose(enc, ref, rtol=1e-4, atol=1e-6)
    # The batch-conditioned decoders get no adversarial gradient.
    np.testing.assert_allclose(
        np.asarray(g["batch_embed"]["embedding"][...]),
        np.asarray(g_recon["batch_embed"]["embedding"][...]),
        rtol=1e-4,
        atol=1e-7,
    )


@pytest.mark.slow  # eager model losses (~10-20 s)
def test_padding_cells_do_not_enter_the_adversary():
    model = _model(seed=1)
    ids, vals, counts, batch = _inputs()
    key = jax.random.key(2)
    _, full = model.loss(ids, vals, key=key, profile=counts, batch=batch)
    wgt = jnp.array([1.0, 1.0, 0.0])
    _, part = model.loss(ids, vals, key=key, profile=counts, batch=batch, cell_weight=wgt)
    _, _, emb = _masked_call(model, ids, vals, key)
    # The classifier sees the embedding of the masked input: CE of cells 0 and 1 by hand.
    logits = model.adversary_out(jax.nn.gelu(model.adversary_in(emb)))
    ce = -jax.nn.log_softmax(logits)[jnp.arange(3), batch]
    np.testing.assert_allclose(float(part["adversary"]), float(ce[:2].mean()), rtol=1e-5)
    np.testing.assert_allclose(float(full["adversary"]), float(ce.mean()), rtol=1e-5)


@pytest.mark.slow  # builds, saves and reloads two models eagerly (~10 s)
def test_adversary_config_defaults_and_round_trip(tmp_path):
    # None (default) and no batches: no classifier is built.
    assert _model(batch_adversary_weight=None).adversary_in is None
    assert _model(n_batches=0).adversary_in is None
    assert MaskedExpressionConfig(vocab_size=VOCAB, n_batches=2).adversary_weight == 0.0
    assert (
        MaskedExpressionConfig(
            vocab_size=VOCAB, n_batches=2, batch_adversary_weight=0.5
        ).adversary_weight
        == 0.5
    )
    # A config saved before the field existed loads as None: the architecture it had.
    d = MaskedExpressionConfig(vocab_size=VOCAB, n_batches=2).to_dict()
    d.pop("batch_adversary_weight")
    assert MaskedExpressionConfig.from_dict(d).batch_adversary_weight is None
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="batch_adversary_weight"):
            MaskedExpressionConfig(vocab_size=VOCAB, batch_adversary_weight=bad)
    model = _model(seed=5)
    loaded = load(model.save(tmp_path / "m"))
    assert loaded.config == model.config
    ids, vals, _, _ = _inputs()
    np.testing.assert_array_equal(
        np.asarray(loaded.embed(ids, vals)), np.asarray(model.embed(ids, vals))
    )
    np.testing.assert_array_equal(
        np.asarray(loaded.adversary_out.kernel[...]), np.asarray(model.adversary_out.kernel[...])
    )


def test_pretrain_resolves_the_default_weight():
    from diffbio_sc.models._masked_config import DEFAULT_BATCH_ADVERSARY
    from diffbio_sc.tl._pretrain import _adversary_weight

    cfg = MaskedExpressionConfig()
    assert DEFAULT_BATCH_ADVERSARY == 0.1  # chosen in docs/notes/native_model.md
    assert _adversary_weight(cfg, ["a", "b"]) == 0.1  # batch_key with 2+ batches
    assert _adversary_weight(cfg, []) == 0.0  # no batch_key
    assert _adversary_weight(cfg, ["a"]) == 0.0  # one batch: nothing to remove
    explicit = MaskedExpressionConfig(batch_adversary_weight=0.3)
    assert _adversary_weight(explicit, ["a", "b"]) == 0.3
    assert _adversary_weight(MaskedExpressionConfig(batch_adversary_weight=0.0), ["a", "b"]) == 0


@pytest.mark.slow  # eager model calls (~8 s)
def test_variational_embedding_is_the_posterior_mean_and_kl_by_hand():
    from diffbio_sc.models._layers import masked_mean_pool

    model = _model(seed=2, variational=True, batch_adversary_weight=0.0, kl_weight=0.7)
    ids, vals, counts, batch = _inputs()
    hidden, emb = model(ids, vals)
    pooled = masked_mean_pool(hidden, jnp.asarray(ids) != 0)
    np.testing.assert_allclose(
        np.asarray(emb), np.asarray(model.z_mean(pooled)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(model.embed(ids, vals)), np.asarray(emb))
    key = jax.random.key(9)
    total, parts = model.loss(ids, vals, key=key, profile=counts, batch=batch)
    _, mu = _masked_call(model, ids, vals, key)[1:]
    lv = np.asarray(model.z_logvar(mu), np.float64)
    mu = np.asarray(mu, np.float64)
    kl = np.mean(0.5 * np.sum(mu**2 + np.exp(lv) - lv - 1.0, axis=1))
    np.testing.assert_allclose(float(parts["kl"]), kl, rtol=1e-5)
    cfg = model.config
    expected = (
        cfg.value_weight * float(parts["value"])
        + cfg.profile_weight * float(parts["profile"])
        + cfg.profile_weight * cfg.kl_weight * kl / cfg.n_profile_genes
    )
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    # The decoder reads a sample: another key, another profile loss; same embedding.
    _, other = model.loss(ids, vals, key=jax.random.key(10), profile=counts, batch=batch)
    assert float(other["profile"]) != float(parts["profile"])
    assert _model(variational=False).z_mean is None
    with pytest.raises(ValueError, match="kl_weight"):
        MaskedExpressionConfig(vocab_size=VOCAB, kl_weight=-1.0)
