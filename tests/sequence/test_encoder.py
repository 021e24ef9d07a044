"""SequenceEncoder: padding, reverse complement, gradients, dropout, save/load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffbio_sc as dfm
from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig
from diffbio_sc.ops._sequence import flip_valid, get_tokenizer, one_hot, reverse_complement

TINY = {
    "hidden_dim": 8,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 16,
    "max_length": 64,
    "dropout": 0.0,
}


def _model(**kw) -> SequenceEncoder:
    cfg = SequenceEncoderConfig(**{**TINY, **kw})
    return SequenceEncoder(cfg, rngs=nnx.Rngs(params=0))


def _jit_embed(m, mode=True):
    """One compiled embedding function per test (eager JAX compiles every op per shape)."""
    return jax.jit(lambda x, v: m.embed(x, v, reverse_complement=mode))


def _seqs(n=6, lo=5, hi=20, seed=0, letters="ACGT"):
    rng = np.random.default_rng(seed)
    arr = np.frombuffer(letters.encode(), np.uint8)
    return [
        arr[rng.integers(0, len(letters), rng.integers(lo, hi + 1))].tobytes().decode()
        for _ in range(n)
    ]


def test_factories_defaults():
    enc = dfm.models.create_dna_encoder.__kwdefaults__
    assert (enc["hidden_dim"], enc["num_layers"], enc["num_heads"]) == (256, 4, 4)
    assert (enc["intermediate_dim"], enc["max_length"], enc["dropout"]) == (1024, 512, 0.1)
    assert enc["pooling"] == "mean" and enc["reverse_complement"] is None
    rna = dfm.models.create_rna_encoder(**{k: v for k, v in TINY.items()})
    assert rna.config.alphabet == "rna" and rna.config.reverse_complement is None
    cls = dfm.models.create_dna_encoder(**TINY, pooling="cls")
    assert cls.config.use_cls


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"pooling": "cls"}, "needs use_cls=True"),
        ({"reverse_complement": "both"}, "reverse_complement must be"),
        ({"tokenizer": "nt6", "reverse_complement": "equivariant"}, "needs tokenizer='char'"),
        ({"hidden_dim": 9}, "multiple of num_heads"),
        ({"tokenizer": "bpe"}, "tokenizer must be one of"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        SequenceEncoderConfig(**{**TINY, **kw})


@pytest.mark.parametrize("kw", [{}, {"use_cls": True, "pooling": "cls"}, {"tokenizer": "nt6"}])
def test_padding_removed_exactly(kw):
    m = _model(**kw)
    emb = _jit_embed(m)
    tok = m.config.get_tokenizer()
    seqs = _seqs(4, 12, 30)
    ids, valid = tok.encode(seqs, max_length=32)
    wide, wvalid = tok.encode(seqs, max_length=48)
    base = np.asarray(emb(ids, valid))
    np.testing.assert_allclose(base, emb(wide, wvalid), atol=1e-6)
    # a row's embedding does not depend on the other rows of its batch
    other = _seqs(4, 12, 30, seed=9)
    mixed, mvalid = tok.encode([seqs[2], other[0], seqs[0], other[1]], max_length=32)
    np.testing.assert_allclose(np.asarray(emb(mixed, mvalid))[[2, 0]], base[[0, 2]], atol=1e-6)


def test_ids_and_one_hot_paths_agree():
    m = _model()
    seqs = _seqs(5, seed=1, letters="ACGTNRY")
    ids, valid = get_tokenizer("char").encode(seqs)
    x, mask = one_hot(seqs)
    np.testing.assert_allclose(_jit_embed(m)(ids, valid), _jit_embed(m)(x, mask), atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("mode", ["average", "equivariant"])
def test_reverse_complement_invariance(mode, pooling):
    m = _model(reverse_complement=mode, pooling=pooling, use_cls=pooling == "cls")
    tok = m.config.get_tokenizer()
    seqs = _seqs(8, 3, 25, seed=2, letters="ACGTACGTNRK")
    ids, valid = tok.encode(seqs, max_length=32)
    rc_ids, rc_valid = tok.encode(reverse_complement(seqs), max_length=32)
    emb = _jit_embed(m)
    a, b = np.asarray(emb(ids, valid)), np.asarray(emb(rc_ids, rc_valid))
    np.testing.assert_allclose(a, b, atol=1e-5)
    if mode == "average" and pooling == "mean":
        # strand-specific embedding is not invariant: the check above can fail
        fwd = _jit_embed(m, None)
        assert np.abs(np.asarray(fwd(ids, valid)) - np.asarray(fwd(rc_ids, rc_valid))).max() > 1e-3


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_equivariant_per_position_outputs():
    m = _model(reverse_complement="equivariant")
    tok = m.config.get_tokenizer()
    seqs = _seqs(5, 4, 20, seed=3)
    ids, valid = tok.encode(seqs)
    rc_ids, rc_valid = tok.encode(reverse_complement(seqs), max_length=ids.shape[1])
    lengths = valid.sum(1)
    f = jax.jit(lambda x, v: (m.mlm_logits(x, v), m(x, v)[0]))
    logits, states = f(ids, valid)
    rc_logits, rc_states = f(rc_ids, rc_valid)
    want = np.asarray(flip_valid(logits, lengths))[..., ::-1]  # flip positions, complement bases
    np.testing.assert_allclose(np.asarray(rc_logits)[valid], want[valid], atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(rc_states)[valid], np.asarray(flip_valid(states, lengths))[valid], atol=1e-5
    )


def test_kmer_average_needs_rc_tokens():
    m = _model(tokenizer="kmer", k=3, reverse_complement="average")
    tok = m.config.get_tokenizer()
    seqs = _seqs(3, 8, 15)
    ids, valid = tok.encode(seqs)
    with pytest.raises(ValueError, match="rc_inputs"):
        m.embed(ids, valid)
    rc, rcv = tok.encode(reverse_complement(seqs), max_length=ids.shape[1])
    f = jax.jit(lambda a, b, c, d: m.embed(a, b, rc_inputs=c, rc_valid=d))
    np.testing.assert_allclose(f(ids, valid, rc, rcv), f(rc, rcv, ids, valid), atol=1e-5)


def _directional_fd(f, x, d, eps):
    return (f(x + eps * d) - f(x - eps * d)) / (2 * eps)


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_gradients_match_finite_differences():
    m = _model()
    seqs = _seqs(3, 6, 10, seed=4)
    x, mask = one_hot(seqs)
    rng = np.random.default_rng(0)
    # soft one-hot input: a softmax of random logits (gradients reach the input)
    logits = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)

    @jax.jit
    def f_in(z):
        return jnp.sum(m.embed(jax.nn.softmax(z, -1), mask) * w)

    g = jax.jit(jax.grad(f_in))(logits)
    assert np.abs(np.asarray(g)[mask]).max() > 0
    assert np.abs(np.asarray(g)[~mask]).max() == 0  # padding does not influence the output
    for seed in range(3):
        d = jnp.asarray(np.random.default_rng(seed).normal(size=x.shape), jnp.float32)
        d = d * jnp.asarray(mask)[..., None]
        fd = float(_directional_fd(f_in, logits, d, 1e-2))
        np.testing.assert_allclose(float(jnp.sum(g * d)), fd, rtol=2e-2, atol=2e-3)


@pytest.mark.slow
def test_parameter_gradients_match_finite_differences():
    m = _model()
    x, mask = one_hot(_seqs(3, 6, 10, seed=4))
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)), jnp.float32)
    # the direction of one weight matrix
    graphdef, params = nnx.split(m, nnx.Param)

    @jax.jit
    def f_par(p):
        return jnp.sum(nnx.merge(graphdef, p).embed(jnp.asarray(x), mask) * w)

    gp = jax.jit(jax.grad(f_par))(params)
    leaf = ("blocks", 0, "ff1", "kernel")
    d = jax.tree.map(jnp.zeros_like, params)
    dk = jnp.asarray(
        np.random.default_rng(5).normal(size=params[leaf[0]][leaf[1]][leaf[2]][leaf[3]].shape),
        jnp.float32,
    )
    d[leaf[0]][leaf[1]][leaf[2]][leaf[3]] = nnx.Param(dk)
    analytic = float(jnp.sum(gp[leaf[0]][leaf[1]][leaf[2]][leaf[3]][...] * dk))

    def shift(t):
        return jax.tree.map(lambda a, b: a + t * b, params, d)

    fd = (float(f_par(shift(1e-2))) - float(f_par(shift(-1e-2)))) / 2e-2
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=2e-3)


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_dropout_only_in_training():
    m = _model(dropout=0.5)
    ids, valid = get_tokenizer("char").encode(_seqs(3))

    def runner():  # traced in the model's current mode
        return jax.jit(lambda key: m(ids, valid, key=key)[1])

    run = runner()
    key = jax.random.key(0)
    e1 = run(key)
    np.testing.assert_array_equal(e1, run(jax.random.key(5)))  # eval: the key is ignored
    m.train()
    run = runner()
    t1 = run(key)
    t2 = run(jax.random.key(1))
    assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-3
    np.testing.assert_array_equal(t1, run(key))  # same key, same draw
    m.eval()
    np.testing.assert_array_equal(e1, runner()(key))


def test_mlm_loss_ignores_ambiguous_positions():
    m = _model()
    ids, valid = get_tokenizer("char").encode(["NNNNA", "RYACG"])
    t = np.asarray(m.targets(ids, valid))
    np.testing.assert_array_equal(t, [[-1, -1, -1, -1, 0], [-1, -1, 0, 1, 2]])
    from diffbio_sc.models._layers import random_token_mask

    key = jax.random.key(3)

    @jax.jit
    def both(key):
        mkey, _ = jax.random.split(key)
        masked = random_token_mask(mkey, jnp.asarray(t >= 0), m.config.mask_ratio)
        logp = jax.nn.log_softmax(m.mlm_logits(ids, valid, masked=masked), -1)
        return m.loss(ids, valid, key=key), masked, logp

    (loss, aux), masked, logp = both(key)
    assert 0 <= float(aux["accuracy"]) <= 1
    # the loss is the mean cross-entropy over the masked positions only (one per row here)
    rows, cols = np.nonzero(np.asarray(masked))
    assert len(rows) == 2 and all(t[r, c] >= 0 for r, c in zip(rows, cols, strict=True))
    want = -np.mean([float(logp[r, c, t[r, c]]) for r, c in zip(rows, cols, strict=True)])
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    m = _model(reverse_complement="equivariant", use_cls=True, pooling="cls")
    m.metadata = {"note": "x"}
    m.save(tmp_path / "enc")
    back = dfm.models.load(tmp_path / "enc")
    assert isinstance(back, SequenceEncoder) and back.config == m.config
    ids, valid = get_tokenizer("char").encode(_seqs(3))
    np.testing.assert_array_equal(_jit_embed(m)(ids, valid), _jit_embed(back)(ids, valid))
    assert back.metadata["note"] == "x"


def test_bad_inputs():
    m = _model()
    with pytest.raises(ValueError, match=r"\(batch, length, 4\)"):
        m.embed(np.zeros((2, 5, 3), np.float32), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="valid has shape"):
        m.embed(np.zeros((2, 5), np.int32), np.ones((2, 6), bool))
    with pytest.raises(ValueError, match="needs an encoder built with it"):
        m.embed(np.zeros((2, 5), np.int32), np.ones((2, 5), bool), reverse_complement="equivariant")


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_kmer_classifier_strand_average_is_rc_invariant():
    from diffbio_sc.models._sequence import SequenceClassifier, SequenceClassifierConfig
    from diffbio_sc.tl._sequence._finetune import task_tokens

    cfg = SequenceClassifierConfig(
        **TINY, tokenizer="kmer", k=3, reverse_complement="average", n_classes=3
    )
    clf = SequenceClassifier(cfg, rngs=nnx.Rngs(params=0))
    rng = np.random.default_rng(5)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (9, 20, 31)]
    fwd = task_tokens(cfg, seqs, 32)
    rev = task_tokens(cfg, reverse_complement(seqs), 32)
    # the reverse complements' own rc tokens are the forward tokens
    np.testing.assert_array_equal(rev["rc_ids"], fwd["ids"])
    a = clf(fwd["ids"], fwd["valid"], rc_inputs=fwd["rc_ids"], rc_valid=fwd["rc_valid"])
    b = clf(rev["ids"], rev["valid"], rc_inputs=rev["rc_ids"], rc_valid=rev["rc_valid"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # forward only would differ: the strands are not the same input
    c = clf.head(clf.encoder.embed(fwd["ids"], fwd["valid"], reverse_complement=None))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
    with pytest.raises(ValueError, match="rc_inputs"):
        clf(fwd["ids"], fwd["valid"])
    # training mode with dropout keys runs and the loss is finite
    loss, _ = clf.loss(
        fwd["ids"],
        fwd["valid"],
        np.array([0, 1, 2]),
        key=jax.random.key(0),
        rc_inputs=fwd["rc_ids"],
        rc_valid=fwd["rc_valid"],
    )
    assert np.isfinite(float(loss))
