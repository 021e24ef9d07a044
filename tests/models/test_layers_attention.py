"""TransformerBlock's attention against an independent reference (issue 26 rewrite)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffbio_sc.models._layers import TransformerBlock, weights_to_bias


def _reference(block, x, bias, key):
    """The block as written before the rewrite: one qkv product, ``jax.nn.dot_product_attention``."""
    b, t, h = x.shape
    k1 = k2 = None
    if key is not None:
        k1, k2 = jax.random.split(key)
    qkv = block.qkv(block.ln1(x)).reshape(b, t, 3, block.n_heads, h // block.n_heads)
    att = jax.nn.dot_product_attention(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias[:, None, None, :]
    )
    x = x + block.drop(block.out(att.reshape(b, t, h)), rngs=k1)
    return x + block.drop(block.ff2(jax.nn.gelu(block.ff1(block.ln2(x)))), rngs=k2)


def _setup(seed=0):
    block = TransformerBlock(16, 4, 32, 0.2, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(3, 7, 16)), jnp.float32)
    valid = np.ones((3, 7), bool)
    valid[1, 4:] = False  # padded keys
    valid[2, 1:] = False  # a single valid key
    block.eval()
    return block, x, weights_to_bias(jnp.asarray(valid, jnp.float32))


def test_block_matches_dot_product_attention_forward():
    block, x, bias = _setup()
    new = nnx.jit(lambda m, x, b: m(x, b))(block, x, bias)  # one program each: fast
    ref = nnx.jit(lambda m, x, b: _reference(m, x, b, None))(block, x, bias)
    np.testing.assert_allclose(new, ref, atol=1e-5)


def test_block_matches_reference_with_dropout_and_gradients():
    block, x, bias = _setup(1)
    block.train()
    key = jax.random.key(3)
    graphdef, params, rest = nnx.split(block, nnx.Param, ...)

    def loss(p, f):
        m = nnx.merge(graphdef, p, rest)
        return jnp.sum(jnp.sin(f(m, x, bias, key)))

    new_l, new_g = jax.jit(jax.value_and_grad(lambda p: loss(p, lambda m, *a: m(*a))))(params)
    ref_l, ref_g = jax.jit(jax.value_and_grad(lambda p: loss(p, _reference)))(params)
    np.testing.assert_allclose(new_l, ref_l, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new_g), jax.tree.leaves(ref_g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_padded_key_gets_no_attention():
    """A weight-0 key changes nothing: appending a padded token leaves the others' outputs."""
    block, x, _ = _setup(2)
    full = jnp.concatenate([x, 100.0 * jnp.ones((3, 1, 16))], axis=1)
    bias = weights_to_bias(jnp.concatenate([jnp.ones((3, 7)), jnp.zeros((3, 1))], axis=1))
    run = nnx.jit(lambda m, x, b: m(x, b))
    np.testing.assert_allclose(
        run(block, full, bias)[:, :7], run(block, x, weights_to_bias(jnp.ones((3, 7)))), atol=1e-5
    )
