"""MaskedExpressionModel: encoder properties, masking, dropout, soft path, save/load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nnx = pytest.importorskip("flax.nnx")

from diffbio_sc.models import MaskedExpressionConfig, MaskedExpressionModel, load  # noqa: E402
from diffbio_sc.models._masked import (  # noqa: E402
    create_model,
    random_token_mask,
    rank_encoding,
)

VOCAB = 40


def _model(seed=0, **kw):
    # The public constructor (eager): its primitives compile once for all the
    # configs here, where create_model compiles per config; both give the same
    # parameters (test_public_constructor_matches_fast_builder).
    # The self-attention encoder and MSE bottleneck (config version 1's
    # architecture, still supported); the latent/NB model is tested in
    # test_masked_latent.py.
    base = dict(
        vocab_size=VOCAB,
        hidden_dim=16,
        n_layers=2,
        n_heads=2,
        max_tokens=8,
        n_latents=0,
        profile_likelihood="mse",
    )
    base.update(kw)
    cfg = MaskedExpressionConfig(**base)
    return MaskedExpressionModel(cfg, rngs=nnx.Rngs(params=jax.random.key(seed)))


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_public_constructor_matches_fast_builder():
    cfg = MaskedExpressionConfig(vocab_size=VOCAB, hidden_dim=16, n_layers=1, n_heads=2)
    assert cfg.profile_likelihood == "nb"  # the default count decoder is built too
    eager = MaskedExpressionModel(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))
    fast = create_model(cfg, jax.random.key(0))
    a = jax.tree.leaves(nnx.state(eager, nnx.Param))
    b = jax.tree.leaves(nnx.state(fast, nnx.Param))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
    assert eager.embed_drop.deterministic  # built in eval mode


def _tokens():
    ids = np.array([[5, 9, 7, 12, 0, 0, 0, 0], [20, 6, 0, 0, 0, 0, 0, 0]], np.int32)
    vals = np.array([[9.0, 4.0, 2.0, 1.0, 0, 0, 0, 0], [3.0, 0.5, 0, 0, 0, 0, 0, 0]], np.float32)
    return ids, vals


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(vocab_size=3), "vocab_size"),
        (dict(vocab_size=VOCAB, hidden_dim=10, n_heads=4), "multiple of n_heads"),
        (dict(vocab_size=VOCAB, pooling="cls"), "use_cls"),
        (dict(vocab_size=VOCAB, mask_ratio=0.0), "mask_ratio"),
        (dict(vocab_size=VOCAB, dropout=1.0), "dropout"),
        (dict(vocab_size=VOCAB, value_weight=0.0, profile_weight=0.0), "at least one loss"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        MaskedExpressionConfig(**kw)


def test_config_defaults_and_dict_round_trip():
    cfg = MaskedExpressionConfig(vocab_size=VOCAB)
    assert (cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.dropout) == (128, 2, 4, 0.1)
    assert MaskedExpressionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown"):
        MaskedExpressionConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(TypeError):
        MaskedExpressionModel({"vocab_size": VOCAB}, rngs=nnx.Rngs(0))
    # vocab_size 0 = "set by dfm.tl.pretrain": a valid config, but no model yet.
    unset = MaskedExpressionConfig(hidden_dim=32)
    assert unset.vocab_size == 0 and unset.max_tokens == 64 and unset.mask_ratio == 0.3
    with pytest.raises(ValueError, match="vocab_size is not set"):
        MaskedExpressionModel(unset, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- encodings
def test_rank_encoding_is_the_sinusoidal_positional_encoding():
    dim = 6
    ranks = [0.0, 1.0, 2.0, 3.0, 1.5]  # soft ranks use the same formula
    enc = np.asarray(rank_encoding(jnp.asarray(ranks), dim))
    ref = np.zeros((len(ranks), dim))
    for row, p in enumerate(ranks):
        for i in range(dim // 2):
            w = 10_000.0 ** (-i / (dim // 2))
            ref[row, i] = math.sin(p * w)
            ref[row, dim // 2 + i] = math.cos(p * w)
    np.testing.assert_allclose(enc, ref, atol=1e-6)


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_padding_does_not_affect_other_tokens():
    model = _model()
    ids, vals = _tokens()
    h, emb = model(ids, vals)
    # Arbitrary garbage at padding positions (values; gene ids stay <pad>).
    vals2 = vals.copy()
    vals2[vals2 == 0] = 1e3
    h2, emb2 = model(ids, vals2)
    valid = ids != 0
    np.testing.assert_allclose(np.asarray(h)[valid], np.asarray(h2)[valid], atol=1e-5)
    np.testing.assert_allclose(emb, emb2, atol=1e-5)
    # Weight-0 tokens with real gene ids and values are removed exactly: same
    # as running the shorter sequence alone.
    ranks = np.broadcast_to(np.arange(8, dtype=np.float32), (2, 8))
    w = valid.astype(np.float32)
    ids3 = np.where(valid, ids, 11)
    vals3 = np.where(valid, vals, 5.0).astype(np.float32)
    h3, emb3 = model.encode(ids3, vals3, ranks, w)
    h_short, emb_short = model(ids[:1, :4], vals[:1, :4])
    np.testing.assert_allclose(np.asarray(h3)[0, :4], np.asarray(h_short)[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(emb3)[0], np.asarray(emb_short)[0], atol=1e-5)


@pytest.mark.slow  # 4-13 s: runs in CI's slow step (fast suite budget)
def test_mean_pooling_is_the_mean_of_valid_token_states():
    model = _model()
    ids, vals = _tokens()
    h, emb = model(ids, vals)
    h = np.asarray(h)
    np.testing.assert_allclose(emb[0], h[0, :4].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(emb[1], h[1, :2].mean(axis=0), atol=1e-5)


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_cls_token_and_pooling():
    ids, vals = _tokens()
    cls_model = _model(use_cls=True, pooling="cls")
    h, emb = cls_model(ids, vals)
    assert h.shape == (2, 9, 16)
    np.testing.assert_allclose(emb, np.asarray(h)[:, 0], atol=1e-6)
    # Same parameters, mean pooling: the mean over the valid gene tokens, <cls> excluded.
    mean_model = _model(use_cls=True, pooling="mean")
    h2, emb2 = mean_model(ids, vals)
    np.testing.assert_allclose(h2, h, atol=1e-6)
    h2 = np.asarray(h2)
    np.testing.assert_allclose(emb2[0], h2[0, 1:5].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(emb2[1], h2[1, 1:3].mean(axis=0), atol=1e-5)
    # The <cls> token is really there: it changes the gene tokens' states.
    h_plain, _ = _model()(ids, vals)
    assert not np.allclose(np.asarray(h_plain)[0, :4], h2[0, 1:5], atol=1e-3)


def test_cells_are_embedded_independently():
    model = _model()
    ids, vals = _tokens()
    both = np.asarray(model.embed(ids, vals))
    one = np.asarray(model.embed(ids[1:], vals[1:]))
    np.testing.assert_allclose(both[1], one[0], atol=1e-5)


# ---------------------------------------------------------------- dropout and masking
def test_dropout_on_in_train_off_in_eval():
    model = _model(dropout=0.5)
    ids, vals = _tokens()
    model.eval()
    e1 = np.asarray(model(ids, vals, dropout_key=jax.random.key(1))[1])
    e2 = np.asarray(model(ids, vals, dropout_key=jax.random.key(2))[1])
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(e1, np.asarray(model.embed(ids, vals)))
    model.train()
    t1 = np.asarray(model(ids, vals, dropout_key=jax.random.key(1))[1])
    t2 = np.asarray(model(ids, vals, dropout_key=jax.random.key(2))[1])
    assert not np.allclose(t1, t2)
    assert not np.allclose(t1, e1)
    # Same key, same draw (dropout is seeded, not stateful).
    np.testing.assert_array_equal(
        t1, np.asarray(model(ids, vals, dropout_key=jax.random.key(1))[1])
    )
    # With rate 0, train mode equals eval mode.
    m0 = _model(dropout=0.0)
    ref = np.asarray(m0.embed(ids, vals))
    m0.train()
    np.testing.assert_allclose(ref, np.asarray(m0(ids, vals, dropout_key=jax.random.key(3))[1]))


def test_random_token_mask_is_per_cell_and_sized():
    valid = np.zeros((64, 20), bool)
    n_valid = np.arange(64) % 20 + 1
    for i, k in enumerate(n_valid):
        valid[i, :k] = True
    m = np.asarray(random_token_mask(jax.random.key(0), jnp.asarray(valid), 0.3))
    assert not (m & ~valid).any()  # padding never masked
    np.testing.assert_array_equal(m.sum(axis=1), np.maximum(1, np.round(0.3 * n_valid)))
    full = m[n_valid == 20]
    assert len({row.tobytes() for row in full}) == len(full)  # each cell its own mask
    m2 = np.asarray(random_token_mask(jax.random.key(1), jnp.asarray(valid), 0.3))
    assert not np.array_equal(m, m2)


def test_loss_is_computed_on_masked_positions_only():
    model = _model(n_profile_genes=3, n_batches=2)
    ids, vals = _tokens()
    key = jax.random.key(7)
    prof = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    batch = np.array([0, 1])
    loss, parts = model.loss(ids, vals, key=key, profile=prof, batch=batch)
    # Independent recomputation from the pieces.
    mask_key, _ = jax.random.split(key)
    masked = np.asarray(random_token_mask(mask_key, jnp.asarray(ids != 0), model.config.mask_ratio))
    h, emb = model(ids, vals, masked=jnp.asarray(masked))
    bemb = np.asarray(model.batch_embed(jnp.asarray(batch)))
    pred = np.asarray(model.value_head(h + bemb[:, None, :]))[..., 0]
    target = np.log1p(vals)
    ref_value = ((pred - target) ** 2)[masked].mean()
    ref_prof = ((np.asarray(model.profile_head(emb + bemb)) - prof) ** 2).mean()
    np.testing.assert_allclose(float(parts["value"]), ref_value, rtol=1e-5)
    np.testing.assert_allclose(float(parts["profile"]), ref_prof, rtol=1e-5)
    cfg = model.config
    np.testing.assert_allclose(
        float(loss), cfg.value_weight * ref_value + cfg.profile_weight * ref_prof, rtol=1e-5
    )
    # Changing an unmasked, non-context value changes nothing only if it were
    # padding: check that masked inputs are really hidden from the encoder.
    vals_changed = vals.copy()
    vals_changed[masked] *= 7.0
    h2, _ = model(ids, vals_changed, masked=jnp.asarray(masked))
    np.testing.assert_allclose(np.asarray(h), np.asarray(h2), atol=1e-5)


# ---------------------------------------------------------------- soft path
@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_soft_path_gradients_and_hard_limit():
    model = _model(max_tokens=3)
    ids = np.array([5, 9, 7, 12, 20], np.int32)
    expr = np.array([[9.0, 0.0, 2.0, 4.0, 1.0], [0.5, 3.0, 0.0, 0.0, 6.0]], np.float32)

    def f(m, x):
        return jnp.sum(m.embed_soft(ids, x, temperature=1e-2) ** 2)

    # Compiled once (op-by-op eager gradients of the soft ranks are slow).
    g_model, g_x = nnx.jit(nnx.grad(f, argnums=(0, 1)))(model, jnp.asarray(expr))
    g_x = np.asarray(g_x)
    leaves = [np.asarray(v) for v in jax.tree.leaves(g_model)]
    assert np.isfinite(g_x).all() and np.abs(g_x).sum() > 0
    assert all(np.isfinite(v).all() for v in leaves)
    assert sum(float(np.abs(v).sum()) for v in leaves) > 0

    # Near-hard soft tokens give the hard path's embedding of the same cells.
    soft = np.asarray(model.embed_soft(ids, expr, temperature=1e-4, keep_temperature=1e-3))
    # Hard tokens by hand: top-3 by value, descending, padded.
    hard_ids = np.array([[5, 12, 7], [20, 9, 5]], np.int32)
    hard_vals = np.array([[9.0, 4.0, 2.0], [6.0, 3.0, 0.5]], np.float32)
    hard = np.asarray(model.embed(hard_ids, hard_vals))
    np.testing.assert_allclose(soft, hard, atol=1e-4)


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_save_load_round_trip(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    model = _model(seed=3, n_profile_genes=4, n_batches=2)
    model.metadata = {"genes": ["a", "b"], "medians": [1.0, 2.0], "tokenizer": {"max_tokens": 8}}
    model.history = {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}
    out = model.save(tmp_path / "m", weights_format=fmt)
    doc = json.loads((out / "config.json").read_text())
    assert doc["format_version"] == 2 and doc["weights_format"] == fmt
    assert doc["metadata"]["genes"] == ["a", "b"]
    assert (out / doc["weights_file"]).is_file()
    loaded = load(out)
    assert loaded.config == model.config
    assert loaded.metadata == model.metadata and loaded.history == model.history
    ids, vals = _tokens()
    np.testing.assert_array_equal(
        np.asarray(loaded.embed(ids, vals)), np.asarray(model.embed(ids, vals))
    )
    if fmt == "npz":  # plain arrays, readable without pickle
        with np.load(out / "weights.npz", allow_pickle=False) as z:
            assert "gene_embed.embedding" in z.files


def test_load_rejects_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path / "nothing")
    model = _model()
    out = model.save(tmp_path / "m", weights_format="npz")
    doc = json.loads((out / "config.json").read_text())
    doc["format_version"] = 99
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 99"):
        load(out)
    doc["format_version"] = 2
    doc["config"]["hidden_dim"] = 32  # weights no longer match
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="shape"):
        load(out)


def test_save_falls_back_to_npz_without_safetensors(tmp_path, monkeypatch):
    import diffbio_sc.models._io as mio

    monkeypatch.setattr(mio, "_have_safetensors", lambda: False)
    model = _model()
    out = model.save(tmp_path / "m")
    assert (out / "weights.npz").is_file() and not (out / "weights.safetensors").exists()
    with pytest.raises(ImportError, match="safetensors"):
        model.save(tmp_path / "m2", weights_format="safetensors")
    ids, vals = _tokens()
    np.testing.assert_array_equal(
        np.asarray(load(out).embed(ids, vals)), np.asarray(model.embed(ids, vals))
    )


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_embed_soft_mask_removes_candidates_exactly():
    """A candidate masked out has no effect: same as leaving it out of the candidate set."""
    model = _model(max_tokens=3)
    ids = np.array([5, 9, 7, 12, 20], np.int32)
    expr = np.array([[9.0, 0.5, 2.0, 4.0, 1.0], [0.5, 3.0, 0.2, 0.1, 6.0]], np.float32)
    mask = np.ones_like(expr, dtype=bool)
    mask[0, 0] = False  # cell 0: the top gene is not a candidate
    mask[1, 4] = False  # cell 1: neither is its top gene
    kw = dict(temperature=1e-3, keep_temperature=1e-2)
    masked = np.asarray(model.embed_soft(ids, expr, mask, **kw))
    for row, drop in ((0, 0), (1, 4)):
        keep = np.delete(np.arange(5), drop)
        ref = np.asarray(model.embed_soft(ids[keep], expr[row : row + 1, keep], **kw))
        np.testing.assert_allclose(masked[row], ref[0], atol=1e-4)
    full = np.asarray(model.embed_soft(ids, expr, **kw))
    assert np.abs(full - masked).max() > 1e-2  # the mask changed something
