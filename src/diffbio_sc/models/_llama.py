"""A Flax NNX Llama decoder equal to Hugging Face ``LlamaForCausalLM`` (GENERator's model).

The computation follows ``transformers``' Llama in float32:

* token embeddings (no position table);
* ``num_hidden_layers`` pre-RMSNorm blocks: ``x + o(attn(RMSNorm(x)))`` with
  rotary positions (``rope_theta``, positions ``0..L-1``) on queries and keys,
  grouped-query attention (``num_key_value_heads``), scores scaled by
  ``1/sqrt(head_dim)``, a causal mask and padding keys masked (tiled over query
  blocks, :func:`causal_attention`); then
  ``x + down(silu(gate(y)) * up(y))`` with ``y = RMSNorm(x)``;
* a final RMSNorm on the last layer's output.

:meth:`LlamaDecoder.hidden_states` returns the list of Hugging Face's
``output_hidden_states``: the embeddings, each layer's output, the last one
after the final RMSNorm. Only the default rotary embedding is implemented; a
``rope_scaling`` of another type is refused naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..io._checkpoints import CheckpointError, aligned_copy
from ._base import ModelConfig, SavedModel, register_model
from ._bert import (
    HIGHEST,
    MASK_BIAS,
    _query_block,
    config_field,
    float_weight,
    from_torch_weights,
)

__all__ = ["LlamaConfig", "LlamaDecoder", "llama_from_checkpoint"]


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """Architecture of a Hugging Face Llama decoder (fields of its ``config.json``).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size
        Sizes, as in Hugging Face's ``LlamaConfig``.
    num_key_value_heads
        Key/value heads (grouped-query attention).
    head_dim
        Width of one head (default ``hidden_size // num_attention_heads``).
    max_position_embeddings
        The context the model was trained for (longest input, in tokens).
    rms_norm_eps
        RMSNorm epsilon.
    rope_theta
        Base of the rotary frequencies.
    attention_bias, mlp_bias
        Whether the projections carry biases.
    pad_token_id
        Padding token id (masked out of attention).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    mlp_bias: bool = False
    pad_token_id: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive(
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        )
        if not self.rms_norm_eps > 0:
            raise ValueError(f"LlamaConfig: rms_norm_eps must be > 0, got {self.rms_norm_eps!r}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"LlamaConfig: num_attention_heads {self.num_attention_heads} is not a multiple "
                f"of num_key_value_heads {self.num_key_value_heads}."
            )
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim {self.head_dim} must be even (rotary).")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"LlamaConfig: pad_token_id {self.pad_token_id} outside the vocabulary."
            )

    @classmethod
    def from_hf(
        cls, cfg: Mapping[str, Any], *, pad_token_id: int, source: str = "config.json"
    ) -> LlamaConfig:
        """Build from a Hugging Face ``config.json``; refuse what this decoder does not run.

        ``pad_token_id`` is the tokenizer's ``<pad>`` id (what inputs are padded with;
        the config's own field is often unset).
        Raises ``ValueError`` naming ``source`` and the field for another activation
        or a non-default rotary scaling.
        """

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if cfg.get("model_type") != "llama":
            raise bad(f"model_type {cfg.get('model_type')!r} is not 'llama'.")
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise bad(f"hidden_act {act!r} is not supported (Llama uses 'silu').")
        # transformers 5 writes rope_parameters; 4.x wrote rope_theta and rope_scaling
        theta = cfg.get("rope_theta", 10000.0)
        for field in ("rope_parameters", "rope_scaling"):
            rope = cfg.get(field) or {}
            if not isinstance(rope, Mapping):
                raise bad(f"{field} {rope!r} is not an object.")
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            if rope_type != "default":
                raise bad(
                    f"{field}: rotary scaling {rope_type!r} is not supported (only the default "
                    "rotary embedding is implemented)."
                )
            theta = rope.get("rope_theta", theta)
        if cfg.get("pretraining_tp", 1) not in (1, None):
            raise bad("pretraining_tp other than 1 is not supported.")
        try:
            heads = config_field(cfg, "num_attention_heads", "int", source=source)
            hidden = config_field(cfg, "hidden_size", "int", source=source)
            return cls(
                vocab_size=config_field(cfg, "vocab_size", "int", source=source),
                hidden_size=hidden,
                num_hidden_layers=config_field(cfg, "num_hidden_layers", "int", source=source),
                num_attention_heads=heads,
                intermediate_size=config_field(cfg, "intermediate_size", "int", source=source),
                num_key_value_heads=config_field(
                    cfg, "num_key_value_heads", "int", heads, source=source
                ),
                head_dim=config_field(cfg, "head_dim", "int", hidden // heads, source=source),
                max_position_embeddings=config_field(
                    cfg, "max_position_embeddings", "int", 2048, source=source
                ),
                rms_norm_eps=config_field(cfg, "rms_norm_eps", "float", 1e-6, source=source),
                rope_theta=config_field(
                    {"rope_theta": theta}, "rope_theta", "float", source=source
                ),
                attention_bias=config_field(cfg, "attention_bias", "bool", False, source=source),
                mlp_bias=config_field(cfg, "mlp_bias", "bool", False, source=source),
                pad_token_id=int(pad_token_id),
            )
        except CheckpointError:
            raise
        except KeyError as err:
            raise bad(f"the field {err.args[0]!r} is missing.") from None
        except (TypeError, ValueError) as err:
            raise bad(str(err)) from None


class _RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x):
        var = jnp.mean(x * x, axis=-1, keepdims=True)
        return self.weight[...] * (x * jax.lax.rsqrt(var + self.eps))


def _proj(n_in: int, n_out: int, bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, precision=HIGHEST, rngs=rngs)


def rotary_tables(length: int, head_dim: int, theta: float):
    """``cos, sin`` ``(length, head_dim)`` of the default rotary embedding (float32)."""
    exps = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = jnp.asarray(1.0 / (np.float32(theta) ** exps), jnp.float32)
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def causal_attention(q, k, v, key_mask):
    """Causal scaled dot-product attention with padding keys masked, tiled over queries.

    ``q, k, v``: ``(B, heads, L, d)``; ``key_mask``: ``(B, L)`` bool, True = attend.
    Scores are ``q.k / sqrt(d)`` plus the float32 minimum on keys after the query or
    masked (Hugging Face's rule). Queries run in blocks of at most 256 rows against
    all keys (``jax.lax.map``), so the ``(B, heads, L, L)`` scores of a long input
    are never held at once; each softmax row still sees every key.
    """
    b, h, t, d = q.shape
    blk = _query_block(t)
    nq = t // blk
    qs = (q * (1.0 / math.sqrt(d))).reshape(b, h, nq, blk, d).transpose(2, 0, 1, 3, 4)
    key_pos = jnp.arange(t)

    def block(args):
        qb, start = args
        s = jnp.einsum("bhqd,bhkd->bhqk", qb, k, precision=HIGHEST)
        allowed = (key_pos[None, :] <= (start + jnp.arange(blk))[:, None])[None, None]
        allowed = allowed & key_mask[:, None, None, :]
        p = jax.nn.softmax(jnp.where(allowed, s, s + MASK_BIAS), axis=-1)
        return jnp.einsum("bhqk,bhkd->bhqd", p, v, precision=HIGHEST)

    out = jax.lax.map(block, (qs, jnp.arange(nq) * blk))
    return out.transpose(1, 2, 0, 3, 4).reshape(b, h, t, d)


class _LlamaLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            d,
        )
        self.input_norm = _RMSNorm(h, cfg.rms_norm_eps)
        self.q = _proj(h, cfg.num_attention_heads * d, cfg.attention_bias, rngs)
        self.k = _proj(h, cfg.num_key_value_heads * d, cfg.attention_bias, rngs)
        self.v = _proj(h, cfg.num_key_value_heads * d, cfg.attention_bias, rngs)
        self.o = _proj(cfg.num_attention_heads * d, h, cfg.attention_bias, rngs)
        self.post_norm = _RMSNorm(h, cfg.rms_norm_eps)
        self.gate = _proj(h, cfg.intermediate_size, cfg.mlp_bias, rngs)
        self.up = _proj(h, cfg.intermediate_size, cfg.mlp_bias, rngs)
        self.down = _proj(cfg.intermediate_size, h, cfg.mlp_bias, rngs)

    def __call__(self, x, key_mask, cos, sin):
        b, t, _ = x.shape
        y = self.input_norm(x)
        q = self.q(y).reshape(b, t, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k(y).reshape(b, t, self.n_kv, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v(y).reshape(b, t, self.n_kv, self.head_dim).transpose(0, 2, 1, 3)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = jnp.repeat(k, rep, axis=1), jnp.repeat(v, rep, axis=1)
        ctx = causal_attention(q, k, v, key_mask)
        x = x + self.o(ctx.transpose(0, 2, 1, 3).reshape(b, t, -1))
        y = self.post_norm(x)
        return x + self.down(jax.nn.silu(self.gate(y)) * self.up(y))


@register_model("llama_decoder")
class LlamaDecoder(SavedModel):
    """Llama decoder equal to Hugging Face's ``LlamaModel`` (GENERator).

    Parameters
    ----------
    config
        A :class:`LlamaConfig`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`llama_from_checkpoint`).
    """

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
        self.layers = nnx.List([_LlamaLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.norm = _RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def hidden_states(self, input_ids) -> list:
        """Return the embeddings and every layer's output (Hugging Face's ``output_hidden_states``).

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id`` (the
        attention mask is ``input_ids != pad_token_id``; positions are ``0..L-1``,
        as Hugging Face numbers them without ``position_ids``). Returns
        ``num_hidden_layers + 1`` arrays ``(B, L, hidden_size)``; the last is after
        the final RMSNorm.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        t = ids.shape[1]
        if t > cfg.max_position_embeddings:
            raise ValueError(
                f"inputs of {t} tokens exceed the model's context of "
                f"{cfg.max_position_embeddings} tokens."
            )
        keys = ids != cfg.pad_token_id
        cos, sin = rotary_tables(t, cfg.head_dim, cfg.rope_theta)
        x = self.embed(ids)
        states = [x]
        for layer in self.layers:
            x = layer(x, keys, cos, sin)
            states.append(x)
        states[-1] = self.norm(x)
        return states

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def pool(self, input_ids, states, *, pooling: str = "last"):
        """Sequence embedding from ``states`` ``(B, L, H)``.

        ``'last'``: the state of the last non-padding token (``</s>``), the token
        GENERator's sequence-understanding code reads (in a causal model only it
        has seen the whole sequence). ``'mean'``: mean over non-padding tokens.
        """
        keep = jnp.asarray(input_ids) != self.config.pad_token_id
        if pooling == "last":
            last = jnp.maximum(keep.sum(axis=1) - 1, 0)
            return states[jnp.arange(states.shape[0]), last]
        if pooling != "mean":
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}.")
        w = keep.astype(states.dtype)
        total = jnp.einsum("bl,blh->bh", w, states, precision=HIGHEST)
        return total / jnp.maximum(w.sum(axis=1), 1.0)[:, None]


# ------------------------------------------------------------------ weights

_LAYER_MAP = {
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate",
    "mlp.up_proj": "up",
    "mlp.down_proj": "down",
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_norm",
}
_NORMS = {"input_norm", "post_norm"}
#: The LM head and buffers an embedding does not use.
_IGNORED = ("lm_head.weight",)
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _map_llama_weights(
    weights: Mapping[str, np.ndarray], where: str = "checkpoint", *, consume: bool = False
) -> dict:
    """PyTorch Llama state dict -> NNX paths of :class:`LlamaDecoder`; unknown names kept as-is."""
    prefix = "model." if any(k.startswith("model.") for k in weights) else ""
    out: dict[str, np.ndarray] = {}
    for name in list(weights):
        # consume: pop each tensor as it is mapped (a transposed kernel frees its original)
        w = weights.pop(name) if consume else weights[name]  # type: ignore[attr-defined]
        if name in _IGNORED or name.endswith(_IGNORED_SUFFIXES):
            continue
        w = float_weight(name, w, where)  # float16 / bfloat16 widen; integer refused
        body = name[len(prefix) :] if name.startswith(prefix) else None
        target = None
        if body == "embed_tokens.weight":
            target = "embed.embedding"
        elif body == "norm.weight":
            target = "norm.weight"
        elif body is not None and body.startswith("layers."):
            idx, _, rest = body[len("layers.") :].partition(".")
            sub, _, leaf = rest.rpartition(".")
            if idx.isdigit() and sub in _LAYER_MAP and leaf in ("weight", "bias"):
                mod = _LAYER_MAP[sub]
                if mod in _NORMS:
                    target = f"layers.{int(idx)}.{mod}.{leaf}"
                elif leaf == "bias":
                    target = f"layers.{int(idx)}.{mod}.bias"
                else:
                    target = f"layers.{int(idx)}.{mod}.kernel"
                    w = aligned_copy(w.T) if w.ndim == 2 else w
        out[target if target is not None else name] = w
    return out


def llama_from_checkpoint(ckpt, *, pad_token_id: int) -> LlamaDecoder:
    """Build a :class:`LlamaDecoder` from a :class:`diffbio_sc.io.Checkpoint` (Hugging Face layout).

    Raises ``ValueError`` naming the files for an unsupported configuration, and one
    :class:`~diffbio_sc.models.ModelFormatError` naming every missing, unexpected
    and mis-shaped tensor.
    """
    cfg = LlamaConfig.from_hf(ckpt.config, pad_token_id=pad_token_id, source=str(ckpt.config_file))
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    return from_torch_weights(
        LlamaDecoder,
        cfg,
        _map_llama_weights(ckpt.weights, where, consume=True),
        where=where,
        consume=True,
    )
