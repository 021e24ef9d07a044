"""A Flax NNX ESM encoder equal to Hugging Face ``EsmForMaskedLM`` (Nucleotide Transformer v1).

The computation follows ``transformers``' ESM in float32:

* embeddings: ``word[ids]`` (with ESM's token-dropout rescaling when the config
  sets ``token_dropout``), plus learned absolute positions numbered from
  ``pad_token_id + 1`` over the non-padding tokens (padding keeps position
  ``pad_token_id``), an optional LayerNorm (``emb_layer_norm_before``), then
  padding positions set to zero;
* ``num_hidden_layers`` pre-LayerNorm blocks: ``x + out(attn(LN(x)))`` with the
  query scaled by ``1/sqrt(d)`` and padding keys masked, then
  ``x + out(gelu(inter(LN(x))))`` (exact erf GELU);
* a final LayerNorm (``emb_layer_norm_after``) on the last layer's output.

:meth:`EsmEncoder.hidden_states` returns the same list as Hugging Face's
``output_hidden_states``: the embeddings, each layer's output, the last one
after the final LayerNorm.

Nucleotide Transformer v2 (the checkpoints' own ``modeling_esm.py``, recognised by
``add_bias_fnn`` in a rotary config) differs in two places, both supported:
rotary positions (``0..L-1``, base 10,000, applied to the scaled queries and
the keys; no position table) and a gated feed-forward
``out(silu(a) * b)`` with ``[a, b] = inter(LN(x))`` split in halves, without
biases unless ``add_bias_fnn``. A rotary config without ``add_bias_fnn``
(Hugging Face's own ESM-2 layout) is refused.
"""

from __future__ import annotations

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
    _linear,
    config_field,
    float_weight,
    from_torch_weights,
    masked_attention,
)
from ._llama import _rotate, rotary_tables

__all__ = ["EsmConfig", "EsmEncoder", "esm_from_checkpoint", "model_type_of"]


def model_type_of(cfg: Mapping[str, Any]):
    """``config.json``'s ``model_type``, or ``'esm'`` for NT v2's remote-code config.

    The Nucleotide Transformer v2 checkpoints carry no ``model_type``, only an
    ``auto_map`` naming their ``esm_config.EsmConfig`` / ``modeling_esm`` classes.
    """
    model_type = cfg.get("model_type")
    if model_type is None:
        auto = cfg.get("auto_map")
        names = [str(v) for v in auto.values()] if isinstance(auto, Mapping) else []
        if any(n.startswith(("esm_config.", "modeling_esm.")) for n in names):
            return "esm"
    return model_type


#: Masked-token fraction of ESM training, used by the token-dropout rescaling.
_MASK_RATIO_TRAIN = 0.15 * 0.8


@dataclass(frozen=True)
class EsmConfig(ModelConfig):
    """Architecture of a Hugging Face ESM encoder (fields of its ``config.json``).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size
        Sizes, as in Hugging Face's ``EsmConfig``.
    max_position_embeddings
        Rows of the position table; the longest input is
        ``max_position_embeddings - pad_token_id - 1`` tokens.
    layer_norm_eps
        LayerNorm epsilon.
    pad_token_id, mask_token_id
        Padding and mask token ids.
    emb_layer_norm_before
        LayerNorm on the embeddings.
    token_dropout
        ESM's rescaling of the embeddings by the fraction of ``<mask>`` tokens.
    rotary
        Rotary positions instead of the learned table.
    rope_theta
        Base of the rotary frequencies.
    glu_ffn
        Gated (SiLU) feed-forward of NT v2, ``inter`` of width ``2 * intermediate_size``.
    ffn_bias
        Whether the feed-forward projections carry biases.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1026
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    mask_token_id: int = 2
    emb_layer_norm_before: bool = False
    token_dropout: bool = False
    rotary: bool = False
    rope_theta: float = 10000.0
    glu_ffn: bool = False
    ffn_bias: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive(
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"EsmConfig: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"EsmConfig: pad_token_id {self.pad_token_id} outside the vocabulary.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"EsmConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}.")
        if self.max_tokens < 1:
            raise ValueError(
                f"EsmConfig: max_position_embeddings {self.max_position_embeddings} leaves no "
                f"position after pad_token_id {self.pad_token_id}."
            )

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens (positions run from ``pad_token_id + 1``)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], *, source: str = "config.json") -> EsmConfig:
        """Build from a Hugging Face ``config.json``; refuse what this encoder does not run.

        Raises ``ValueError`` naming ``source`` and the field for relative positions,
        ESMFold, decoders or a non-GELU activation.
        """

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if model_type_of(cfg) != "esm":
            raise bad(f"model_type {cfg.get('model_type')!r} is not 'esm'.")
        pos = cfg.get("position_embedding_type", "absolute")
        if pos not in ("absolute", "rotary"):
            raise bad(
                f"position_embedding_type {pos!r} is not supported: diffbio_sc runs ESM "
                "encoders with learned absolute positions (Nucleotide Transformer v1) or rotary "
                "positions (NT v2)."
            )
        rotary = pos == "rotary"
        nt_v2 = rotary and "add_bias_fnn" in cfg
        if rotary and not nt_v2:
            raise bad(
                "a rotary ESM without add_bias_fnn (ESM-2 style, GELU feed-forward) is not "
                "supported; rotary checkpoints run here are Nucleotide Transformer v2 ones."
            )
        rope = cfg.get("rope_parameters") or {}
        theta = (
            rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
            if isinstance(rope, Mapping)
            else 10000.0
        )
        if cfg.get("is_folding_model") or cfg.get("esmfold_config"):
            raise bad("ESMFold checkpoints are not supported.")
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise bad("decoder / cross-attention ESM models are not supported.")
        act = cfg.get("hidden_act", "gelu")
        if act != "gelu":
            raise bad(f"hidden_act {act!r} is not supported (ESM uses 'gelu').")
        try:
            return cls(
                vocab_size=config_field(cfg, "vocab_size", "int", source=source),
                hidden_size=config_field(cfg, "hidden_size", "int", source=source),
                num_hidden_layers=config_field(cfg, "num_hidden_layers", "int", source=source),
                num_attention_heads=config_field(cfg, "num_attention_heads", "int", source=source),
                intermediate_size=config_field(cfg, "intermediate_size", "int", source=source),
                max_position_embeddings=config_field(
                    cfg, "max_position_embeddings", "int", 1026, source=source
                ),
                layer_norm_eps=config_field(cfg, "layer_norm_eps", "float", 1e-12, source=source),
                pad_token_id=config_field(cfg, "pad_token_id", "int", 1, source=source),
                mask_token_id=config_field(cfg, "mask_token_id", "int", 2, source=source),
                emb_layer_norm_before=config_field(
                    cfg, "emb_layer_norm_before", "bool", False, source=source
                ),
                token_dropout=config_field(cfg, "token_dropout", "bool", False, source=source),
                rotary=rotary,
                rope_theta=config_field(
                    {"rope_theta": theta}, "rope_theta", "float", source=source
                ),
                glu_ffn=nt_v2,
                ffn_bias=config_field(cfg, "add_bias_fnn", "bool", True, source=source)
                if nt_v2
                else True,
            )
        except CheckpointError:
            raise
        except KeyError as err:
            raise bad(f"the field {err.args[0]!r} is missing.") from None
        except (TypeError, ValueError) as err:
            raise bad(str(err)) from None


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


class _EsmLayer(nnx.Module):
    def __init__(self, cfg: EsmConfig, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.attn_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.query = _linear(h, h, rngs)
        self.key = _linear(h, h, rngs)
        self.value = _linear(h, h, rngs)
        self.attn_out = _linear(h, h, rngs)
        self.ffn_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.glu = cfg.glu_ffn
        wide = 2 * i if cfg.glu_ffn else i
        self.inter = nnx.Linear(h, wide, use_bias=cfg.ffn_bias, precision=HIGHEST, rngs=rngs)
        self.out = nnx.Linear(i, h, use_bias=cfg.ffn_bias, precision=HIGHEST, rngs=rngs)

    def __call__(self, x, key_mask, rope=None):
        b, t, h = x.shape
        split = (b, t, self.n_heads, h // self.n_heads)
        y = self.attn_norm(x)
        q, k = self.query(y).reshape(split), self.key(y).reshape(split)
        if rope is not None:  # rotation is linear: rotating q or ESM's scaled q is the same
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        ctx = masked_attention(q, k, self.value(y).reshape(split), key_mask).reshape(b, t, h)
        x = x + self.attn_out(ctx)
        z = self.inter(self.ffn_norm(x))
        if self.glu:
            a, g = jnp.split(z, 2, axis=-1)
            z = jax.nn.silu(a) * g
        else:
            z = _gelu(z)
        return x + self.out(z)


@register_model("esm_encoder")
class EsmEncoder(SavedModel):
    """ESM encoder equal to Hugging Face's ``EsmModel`` (NT v1) and to NT v2's variant.

    Parameters
    ----------
    config
        An :class:`EsmConfig`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`esm_from_checkpoint`).
    """

    config_class = EsmConfig

    def __init__(self, config: EsmConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        h = cfg.hidden_size
        self.word = nnx.Embed(cfg.vocab_size, h, rngs=rngs)
        self.position = None if cfg.rotary else nnx.Embed(cfg.max_position_embeddings, h, rngs=rngs)
        self.embed_norm = (
            nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
            if cfg.emb_layer_norm_before
            else None
        )
        self.layers = nnx.List([_EsmLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.final_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def hidden_states(self, input_ids) -> list:
        """Return the embeddings and every layer's output (Hugging Face's ``output_hidden_states``).

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id`` (the
        attention mask is ``input_ids != pad_token_id``, as NT builds it). Returns
        ``num_hidden_layers + 1`` arrays ``(B, L, hidden_size)``; the last is after
        the final LayerNorm.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        if ids.shape[1] > cfg.max_tokens:
            raise ValueError(
                f"inputs of {ids.shape[1]} tokens exceed the model's {cfg.max_tokens} positions."
            )
        key_mask = ids != cfg.pad_token_id
        maskf = key_mask.astype(jnp.float32)
        x = self.word(ids)
        if cfg.token_dropout:
            is_mask = ids == cfg.mask_token_id
            x = jnp.where(is_mask[..., None], 0.0, x)
            observed = is_mask.sum(-1).astype(jnp.float32) / maskf.sum(-1)
            x = x * ((1.0 - _MASK_RATIO_TRAIN) / (1.0 - observed))[:, None, None]
        rope = None
        if cfg.rotary:
            cos, sin = rotary_tables(
                ids.shape[1], cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta
            )
            rope = (cos[None, :, None, :], sin[None, :, None, :])
        else:
            pos = (jnp.cumsum(key_mask, axis=1) * key_mask + cfg.pad_token_id).astype(jnp.int32)
            x = x + self.position(pos)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = x * maskf[..., None]
        states = [x]
        for layer in self.layers:
            x = layer(x, key_mask, rope)
            states.append(x)
        states[-1] = self.final_norm(x)
        return states

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def pool(self, input_ids, states):
        """Mean of ``states`` ``(B, L, H)`` over the non-padding tokens (``<cls>`` included).

        The Nucleotide Transformer model cards' embedding: the attention mask
        ``ids != pad`` weights the last hidden layer.
        """
        w = (jnp.asarray(input_ids) != self.config.pad_token_id).astype(states.dtype)
        total = jnp.einsum("bl,blh->bh", w, states, precision=HIGHEST)
        return total / jnp.maximum(w.sum(axis=1), 1.0)[:, None]


# ------------------------------------------------------------------ weights

_LAYER_MAP = {
    "attention.LayerNorm": "attn_norm",
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "LayerNorm": "ffn_norm",
    "intermediate.dense": "inter",
    "output.dense": "out",
}
_NORMS = {"attn_norm", "ffn_norm", "embed_norm", "final_norm"}
#: Parameter leaf -> role; transformers 5 saves LayerNorm parameters as gamma/beta.
_LEAVES = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}
#: Heads and buffers an embedding does not use (the MLM head, contact head, pooler).
_IGNORED_PREFIXES = ("lm_head.", "esm.contact_head.", "contact_head.", "esm.pooler.", "pooler.")
_IGNORED_SUFFIXES = ("position_ids", "rotary_embeddings.inv_freq")


def _map_esm_weights(
    weights: Mapping[str, np.ndarray],
    cfg: EsmConfig,
    where: str = "checkpoint",
    *,
    consume: bool = False,
) -> dict:
    """PyTorch ESM state dict -> NNX paths of :class:`EsmEncoder`; unknown names kept as-is.

    Names that map nowhere are passed through unchanged so that the one shape
    check of :meth:`~diffbio_sc.models.SavedModel.from_weights` lists them as
    unexpected beside any missing or mis-shaped tensor.
    """
    prefix = "esm." if any(k.startswith("esm.") for k in weights) else ""
    out: dict[str, np.ndarray] = {}
    for name in list(weights):
        # consume: pop each tensor as it is mapped (a transposed kernel frees its original)
        w = weights.pop(name) if consume else weights[name]  # type: ignore[attr-defined]
        if name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES):
            continue
        w = float_weight(name, w, where)  # float16 / bfloat16 widen; integer refused
        body = name[len(prefix) :] if name.startswith(prefix) else None
        target = None
        if body is not None:
            module, _, leaf = body.rpartition(".")
            if body == "embeddings.word_embeddings.weight":
                target = "word.embedding"
            elif body == "embeddings.position_embeddings.weight":
                if cfg.rotary:  # NT v2's modelling file keeps an unused table
                    continue
                target = "position.embedding"
            elif module in ("embeddings.layer_norm", "encoder.emb_layer_norm_after"):
                mod = "embed_norm" if module.startswith("embeddings") else "final_norm"
                if leaf in _LEAVES:
                    target = f"{mod}.{_LEAVES[leaf]}"
            elif body.startswith("encoder.layer."):
                idx, _, rest = body[len("encoder.layer.") :].partition(".")
                sub, _, leaf = rest.rpartition(".")
                if idx.isdigit() and sub in _LAYER_MAP and leaf in _LEAVES:
                    mod = _LAYER_MAP[sub]
                    if _LEAVES[leaf] == "bias":
                        target = f"layers.{int(idx)}.{mod}.bias"
                    elif mod in _NORMS:
                        target = f"layers.{int(idx)}.{mod}.scale"
                    else:
                        target = f"layers.{int(idx)}.{mod}.kernel"
                        w = aligned_copy(w.T) if w.ndim == 2 else w
        out[target if target is not None else name] = w
    return out


def esm_from_checkpoint(ckpt) -> EsmEncoder:
    """Build an :class:`EsmEncoder` from a :class:`diffbio_sc.io.Checkpoint` (Hugging Face layout).

    Raises ``ValueError`` naming the files for an unsupported configuration, and one
    :class:`~diffbio_sc.models.ModelFormatError` naming every missing, unexpected
    and mis-shaped tensor.
    """
    cfg = EsmConfig.from_hf(ckpt.config, source=str(ckpt.config_file))
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    return from_torch_weights(
        EsmEncoder,
        cfg,
        _map_esm_weights(ckpt.weights, cfg, where, consume=True),
        where=where,
        consume=True,
    )
