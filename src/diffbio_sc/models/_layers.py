"""Transformer building blocks shared by every diffbio_sc model (Flax NNX).

The pieces a token encoder needs, written once:

:class:`TransformerBlock`
    Pre-LayerNorm encoder block: multi-head self-attention with an additive
    per-key bias (the maths of ``jax.nn.dot_product_attention``, written with
    heads-first products) and a GELU feed-forward,
    each residual branch followed by dropout. Dropout draws from a key passed
    per call (``key=None`` or eval mode: no dropout), so blocks hold no random
    state and the same key gives the same draw.
:func:`weights_to_bias`
    Turns per-token weights in ``[0, 1]`` into the attention key bias
    ``log(w)``: weight 1 leaves a key untouched, weight 0 removes it exactly
    (padding), and a weight in between down-weights it smoothly (the soft
    top-k path of the masked-expression model). A key-padding mask is the
    special case ``weights = valid.astype(float)``.
:func:`sinusoidal_encoding`
    The original transformer's sinusoidal position code, for integer *or*
    continuous positions (a soft rank between two integers interpolates).
:func:`masked_mean_pool`, :func:`cls_pool`
    Sequence -> vector pooling: a weighted mean over valid tokens, or the
    first (``<cls>``) token's state.
:func:`random_token_mask`
    Per-row random masking of a fixed fraction of the valid tokens (masked
    language / expression modelling).
:func:`gradient_reversal`
    Identity forward, gradient multiplied by ``-scale`` backward (domain-
    adversarial training: an encoder learns to defeat a classifier that
    learns to predict a nuisance label from its output).

Example, a minimal sequence encoder built from them::

    class Encoder(nnx.Module):
        def __init__(self, vocab, dim, n_layers, n_heads, *, rngs):
            self.embed = nnx.Embed(vocab, dim, rngs=rngs)
            self.blocks = nnx.List(
                [TransformerBlock(dim, n_heads, 2 * dim, 0.1, rngs=rngs) for _ in range(n_layers)]
            )
            self.norm = nnx.LayerNorm(dim, rngs=rngs)

        def __call__(self, ids, valid, key=None):
            x = self.embed(ids)
            x = x + sinusoidal_encoding(jnp.arange(ids.shape[1]), x.shape[-1])
            bias = weights_to_bias(valid.astype(jnp.float32))
            n = len(self.blocks)
            keys = [None] * n if key is None else list(jax.random.split(key, n))
            for block, k in zip(self.blocks, keys):
                x = block(x, bias, k)
            return masked_mean_pool(self.norm(x), valid)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "NEG_BIAS",
    "TransformerBlock",
    "cls_pool",
    "gradient_reversal",
    "masked_mean_pool",
    "random_token_mask",
    "sinusoidal_encoding",
    "weights_to_bias",
]

#: Bias given to attention keys with weight 0; ``exp(-1e9)`` underflows to exactly 0.
NEG_BIAS = -1e9


def sinusoidal_encoding(positions: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal code of (possibly continuous) positions: ``(...,)`` -> ``(..., dim)``.

    Column ``i < dim/2`` is ``sin(p * w_i)`` and column ``dim/2 + i`` is
    ``cos(p * w_i)`` with ``w_i = 10000 ** (-i / (dim/2))``: the original
    transformer's frequencies, sines first then cosines. Integer positions give
    exactly the positional encoding of those positions; a position between two
    integers gives a smooth interpolation. ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_encoding needs an even dim, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions)[..., None].astype(jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def weights_to_bias(weights: jax.Array) -> jax.Array:
    """Attention key bias ``(B, T)`` from token weights ``(B, T)`` in ``[0, 1]``.

    ``log(w)`` where ``w > 0`` and :data:`NEG_BIAS` where ``w == 0``, so a
    weight-0 key gets exactly zero attention (as if the token were absent).
    """
    weights = jnp.asarray(weights)
    safe = jnp.maximum(weights, 1e-30)
    return jnp.where(weights > 0, jnp.log(safe), NEG_BIAS)


def masked_mean_pool(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean over tokens: ``(B, T, H)``, ``(B, T)`` -> ``(B, H)``.

    ``weights`` may be a bool mask of valid tokens or soft weights; a row with
    no weight pools to the zero vector (no division by zero).
    """
    w = jnp.asarray(weights).astype(x.dtype)
    return jnp.einsum("bt,bth->bh", w, x) / jnp.maximum(w.sum(axis=1), 1e-6)[:, None]


def cls_pool(x: jax.Array) -> jax.Array:
    """Take the first token's state: ``(B, T, H)`` -> ``(B, H)`` (``<cls>`` pooling)."""
    return x[:, 0]


def random_token_mask(key: jax.Array, valid: jax.Array, ratio: float) -> jax.Array:
    """Per-row random mask over valid tokens: ``max(1, round(ratio * n_valid))`` each.

    Each row draws its own positions (uniformly among its valid tokens) from
    ``key``. Returns a bool array of the shape of ``valid``; padding is never
    masked, and a row with no valid token has no masked token.
    """
    u = jax.random.uniform(key, valid.shape)
    u = jnp.where(valid, u, 2.0)
    n_valid = valid.sum(axis=1)
    n_mask = jnp.clip(jnp.round(ratio * n_valid).astype(jnp.int32), 1, None)
    n_mask = jnp.minimum(n_mask, jnp.maximum(n_valid, 1))
    order = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    return (order < n_mask[:, None]) & valid


@jax.custom_vjp
def gradient_reversal(x: jax.Array, scale: float | jax.Array = 1.0) -> jax.Array:
    """Identity in the forward pass; the backward pass multiplies the gradient by ``-scale``.

    The gradient-reversal layer of domain-adversarial training (Ganin & Lempitsky,
    2015): a classifier fed ``gradient_reversal(z)`` learns to predict a label
    from ``z`` while whatever produced ``z`` receives the opposite gradient, so it
    learns to remove that label's information. ``scale`` gets no gradient.
    """
    return x


def _grl_fwd(x, scale=1.0):
    return x, scale


def _grl_bwd(scale, g):
    return (-scale * g, jnp.zeros_like(jnp.asarray(scale, dtype=g.dtype)))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def _attention(qkv: nnx.Linear, x: jax.Array, bias: jax.Array, n_heads: int) -> jax.Array:
    """Multi-head self-attention of ``(B, T, H)`` states: ``(B, T, n_heads, H / n_heads)``.

    The maths of ``jax.nn.dot_product_attention(q, k, v, bias=bias[:, None, None, :])``
    on the ``q | k | v`` columns of ``qkv(x)`` (logits ``q.k / sqrt(d)`` plus the
    key bias, softmax over keys, weighted sum of values), written so that XLA's
    CPU programs move less memory: the three projections are three products with
    slices of the one ``qkv`` kernel, each landing directly in the heads-first
    ``(B, heads, T, d)`` layout the attention products read, instead of one
    ``(B, T, 3H)`` product that is then split and transposed per head (and whose
    gradient has to be stacked and transposed back). Same parameters, same
    outputs up to float32 rounding; about 3% less CPU per training step of the
    native model (issue 26, ``docs/notes/native_model.md``).
    """
    h = x.shape[-1]
    d = h // n_heads
    kernel = qkv.kernel[...].reshape(h, 3, n_heads, d)
    qkv_bias = qkv.bias[...].reshape(3, n_heads, 1, d)
    q, k, v = (jnp.einsum("btc,cnd->bntd", x, kernel[:, i]) + qkv_bias[i] for i in range(3))
    logits = jnp.einsum("bntd,bnsd->bnts", q, k) * jnp.float32(1.0 / math.sqrt(d))
    probs = jax.nn.softmax(logits + bias[:, None, None, :], axis=-1)
    return jnp.einsum("bnts,bnsd->btnd", probs, v)


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm transformer encoder block.

    ``x + Dropout(Attention(LN(x)))``, then ``x + Dropout(FF(LN(x)))`` with
    ``FF = Linear(ff_dim) -> GELU -> Linear(hidden_dim)``.

    Parameters
    ----------
    hidden_dim
        Token width (a multiple of ``n_heads``).
    n_heads
        Attention heads.
    ff_dim
        Feed-forward width.
    dropout
        Dropout rate on the two residual branches (training mode with a key only).
    rngs
        ``nnx.Rngs`` for parameter initialisation.

    Notes
    -----
    Parameter names (``ln1``, ``qkv``, ``out``, ``ln2``, ``ff1``, ``ff2``) are
    part of the saved-model format: renaming them breaks loading saved models.
    """

    def __init__(
        self, hidden_dim: int, n_heads: int, ff_dim: int, dropout: float, *, rngs: nnx.Rngs
    ):
        if hidden_dim % n_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be a multiple of n_heads ({n_heads})."
            )
        h = hidden_dim
        self.n_heads = n_heads
        self.ln1 = nnx.LayerNorm(h, rngs=rngs)
        self.qkv = nnx.Linear(h, 3 * h, rngs=rngs)
        self.out = nnx.Linear(h, h, rngs=rngs)
        self.ln2 = nnx.LayerNorm(h, rngs=rngs)
        self.ff1 = nnx.Linear(h, ff_dim, rngs=rngs)
        self.ff2 = nnx.Linear(ff_dim, h, rngs=rngs)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, bias: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Apply the block.

        Parameters
        ----------
        x
            ``(B, T, H)`` token states.
        bias
            ``(B, T)`` additive key bias (:func:`weights_to_bias`), shared by all
            queries and heads.
        key
            PRNG key for the two dropout draws; ``None`` disables dropout.

        Returns
        -------
        ``(B, T, H)`` updated token states.
        """
        b, t, h = x.shape
        k1 = k2 = None
        if key is not None:
            k1, k2 = jax.random.split(key)
        att = _attention(self.qkv, self.ln1(x), bias, self.n_heads)
        x = x + self.drop(self.out(att.reshape(b, t, h)), rngs=k1)
        y = self.ff2(jax.nn.gelu(self.ff1(self.ln2(x))))
        return x + self.drop(y, rngs=k2)
