"""Latent cross-attention encoder: a few learned latents read every token (Flax NNX).

The quadratic cost of self-attention over a cell's genes limits a plain
transformer to a short context (64 genes in the first native model). Here a
small set of ``n_latents`` learned latent vectors (8-32) attends to all of a
cell's tokens (Perceiver-style), then the latents attend among themselves:

* :class:`CrossAttentionBlock`: ``latents + Attention(LN(latents), LN(tokens))``
  then ``+ FF(LN(latents))``; the tokens' key bias (:func:`weights_to_bias`)
  removes padding exactly and down-weights soft tokens smoothly, so the soft
  top-k path of the masked-expression model works unchanged.
* :class:`LatentEncoder`: one cross-attention block, then ``n_layers``
  :class:`~diffbio_sc.models._layers.TransformerBlock` over the latents, a final
  LayerNorm; the cell embedding is the mean of the latents.

Cost per cell is ``O(n_latents x n_tokens)`` for the cross-attention plus
``O(n_tokens)`` for the key/value projections, instead of ``O(n_tokens**2)``.
A padded key contributes ``exp(-1e9) = 0`` exactly to every softmax, so a
cell's embedding does not depend on how far it is padded (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ._layers import TransformerBlock

__all__ = ["CrossAttentionBlock", "LatentEncoder"]


class CrossAttentionBlock(nnx.Module):
    """Pre-LN cross-attention from queries ``(B, M, H)`` to tokens ``(B, T, H)``.

    Parameters
    ----------
    hidden_dim, n_heads, ff_dim, dropout
        As :class:`~diffbio_sc.models._layers.TransformerBlock`.
    rngs
        ``nnx.Rngs`` for parameter initialisation.
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
        self.ln_q = nnx.LayerNorm(h, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(h, rngs=rngs)
        self.q = nnx.Linear(h, h, rngs=rngs)
        self.kv = nnx.Linear(h, 2 * h, rngs=rngs)
        self.out = nnx.Linear(h, h, rngs=rngs)
        self.ln2 = nnx.LayerNorm(h, rngs=rngs)
        self.ff1 = nnx.Linear(h, ff_dim, rngs=rngs)
        self.ff2 = nnx.Linear(ff_dim, h, rngs=rngs)
        self.drop = nnx.Dropout(dropout)

    def __call__(
        self, queries: jax.Array, tokens: jax.Array, bias: jax.Array, key: jax.Array | None = None
    ) -> jax.Array:
        """Update ``queries`` ``(B, M, H)`` from ``tokens`` ``(B, T, H)`` with key bias ``(B, T)``."""
        b, m, h = queries.shape
        t = tokens.shape[1]
        d = h // self.n_heads
        k1 = k2 = None
        if key is not None:
            k1, k2 = jax.random.split(key)
        q = self.q(self.ln_q(queries)).reshape(b, m, self.n_heads, d)
        kv = self.kv(self.ln_kv(tokens)).reshape(b, t, 2, self.n_heads, d)
        att = jax.nn.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], bias=bias[:, None, None, :])
        x = queries + self.drop(self.out(att.reshape(b, m, h)), rngs=k1)
        y = self.ff2(jax.nn.gelu(self.ff1(self.ln2(x))))
        return x + self.drop(y, rngs=k2)


class LatentEncoder(nnx.Module):
    """``n_latents`` learned latents read the tokens, then self-attend.

    Parameters
    ----------
    hidden_dim, n_heads, ff_dim, dropout
        Widths and dropout of every block.
    n_latents
        Number of latent vectors.
    n_layers
        Self-attention blocks among the latents after the cross-attention.
    rngs
        ``nnx.Rngs`` for parameter initialisation.
    """

    def __init__(
        self,
        hidden_dim: int,
        n_heads: int,
        ff_dim: int,
        dropout: float,
        *,
        n_latents: int,
        n_layers: int,
        rngs: nnx.Rngs,
    ):
        self.latents = nnx.Param(
            nnx.initializers.normal(1.0)(rngs.params(), (n_latents, hidden_dim))
        )
        self.cross = CrossAttentionBlock(hidden_dim, n_heads, ff_dim, dropout, rngs=rngs)
        self.blocks = nnx.List(
            [
                TransformerBlock(hidden_dim, n_heads, ff_dim, dropout, rngs=rngs)
                for _ in range(n_layers)
            ]
        )
        self.norm = nnx.LayerNorm(hidden_dim, rngs=rngs)

    def __call__(
        self, tokens: jax.Array, bias: jax.Array, key: jax.Array | None = None
    ) -> jax.Array:
        """Latent states ``(B, M, H)`` from tokens ``(B, T, H)`` and key bias ``(B, T)``."""
        b = tokens.shape[0]
        lat = jnp.broadcast_to(self.latents[...], (b, *self.latents.shape))
        n = len(self.blocks) + 1
        keys = [None] * n if key is None else list(jax.random.split(key, n))
        lat = self.cross(lat, tokens, bias, keys[0])
        zero = jnp.zeros(lat.shape[:2], lat.dtype)
        for block, k in zip(self.blocks, keys[1:], strict=True):
            lat = block(lat, zero, k)
        return self.norm(lat)
