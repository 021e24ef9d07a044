"""A Flax NNX DNABERT-2 encoder equal to its published remote code (``bert_layers.BertModel``).

DNABERT-2 (``zhihan1996/DNABERT-2-117M``) is a MosaicBERT: the checkpoint's
``config.json`` has ``model_type`` ``'bert'`` but an ``auto_map`` naming its own
``bert_layers`` classes (and an ``alibi_starting_size``), which is how
:func:`is_dnabert2_config` tells it from a Hugging Face BERT (Geneformer).
The computation follows that code in float32 (its pure-PyTorch attention path;
the Triton flash-attention kernel computes the same in float16/bfloat16):

* embeddings: ``LayerNorm(word[ids] + token_type[0])``: no position table;
* ``num_hidden_layers`` post-LayerNorm blocks:
  ``x = LN(x + out(attn(Wqkv(x))))`` with scores ``q.k / sqrt(d)`` plus the
  ALiBi bias ``-slope_h * |i - j|`` and ``-10000`` on padding keys, then the
  gated feed-forward ``x = LN(x + wo(gelu(a) * g))`` with ``[a, g] =
  gated_layers(x)`` split in halves (exact erf GELU, no bias on ``gated_layers``);
* the ALiBi slopes as upstream computes them: for ``n`` heads a power of two,
  ``s_k = (2 ** (-8 / n)) ** (k + 1)``; otherwise those of the nearest lower
  power of two followed by every other slope of twice that number.

Upstream removes padding tokens before the layers ("unpadding") and puts zero
rows back at the end; here every position is computed with a key mask, which
gives the same values on real tokens, and padded rows of every hidden state are
set to zero as upstream's re-padding does.

DNABERT-2 has no position table, so the context is a choice: ``max_tokens`` is
the config's ``max_position_embeddings`` (512 for the published model, the
length it was built for); longer inputs are refused.
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
from ._bert import HIGHEST, _linear, config_field, float_weight, from_torch_weights

__all__ = ["Dnabert2Config", "Dnabert2Encoder", "alibi_slopes", "is_dnabert2_config"]

#: Bias upstream adds to the scores of padding keys.
_PAD_BIAS = -10000.0


def is_dnabert2_config(cfg: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` is DNABERT-2's (MosaicBERT remote code), not a Hugging Face BERT.

    True when ``auto_map`` names ``bert_layers.*`` classes (the published
    checkpoint's) or the config carries ``alibi_starting_size``.
    """
    auto = cfg.get("auto_map")
    names = [str(v) for v in auto.values()] if isinstance(auto, Mapping) else []
    return any(n.startswith("bert_layers.") for n in names) or "alibi_starting_size" in cfg


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes exactly as DNABERT-2's ``BertEncoder.rebuild_alibi_tensor``."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


@dataclass(frozen=True)
class Dnabert2Config(ModelConfig):
    """Architecture of a DNABERT-2 encoder (fields of its ``config.json``).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size
        Sizes (the gated feed-forward's first projection is ``2 * intermediate_size`` wide).
    max_position_embeddings
        Longest input in tokens that diffbio_sc runs (ALiBi has no position table).
    type_vocab_size
        Rows of the token-type table (row 0 is used).
    layer_norm_eps
        LayerNorm epsilon.
    pad_token_id
        The tokenizer's ``[PAD]`` id (the attention mask is ``ids != pad_token_id``).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 3

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive(
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"Dnabert2Config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"Dnabert2Config: pad_token_id {self.pad_token_id} outside the vocabulary."
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(
                f"Dnabert2Config: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}."
            )

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens (``max_position_embeddings``)."""
        return self.max_position_embeddings

    @classmethod
    def from_hf(
        cls, cfg: Mapping[str, Any], *, pad_token_id: int = 3, source: str = "config.json"
    ) -> Dnabert2Config:
        """Build from DNABERT-2's ``config.json``; ``pad_token_id`` is the tokenizer's ``[PAD]``."""

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if cfg.get("model_type", "bert") != "bert" or not is_dnabert2_config(cfg):
            raise bad("is not a DNABERT-2 (MosaicBERT bert_layers) configuration.")
        act = cfg.get("hidden_act", "gelu")
        if act != "gelu":  # upstream's gated MLP hard-codes exact GELU; refuse a contradiction
            raise bad(f"hidden_act {act!r} is not supported (DNABERT-2 uses 'gelu').")
        try:
            return cls(
                vocab_size=config_field(cfg, "vocab_size", "int", source=source),
                hidden_size=config_field(cfg, "hidden_size", "int", source=source),
                num_hidden_layers=config_field(cfg, "num_hidden_layers", "int", source=source),
                num_attention_heads=config_field(cfg, "num_attention_heads", "int", source=source),
                intermediate_size=config_field(cfg, "intermediate_size", "int", source=source),
                max_position_embeddings=config_field(
                    cfg, "max_position_embeddings", "int", 512, source=source
                ),
                type_vocab_size=config_field(cfg, "type_vocab_size", "int", 2, source=source),
                layer_norm_eps=config_field(cfg, "layer_norm_eps", "float", 1e-12, source=source),
                pad_token_id=pad_token_id,
            )
        except CheckpointError:
            raise
        except KeyError as err:
            raise bad(f"the field {err.args[0]!r} is missing.") from None
        except (TypeError, ValueError) as err:
            raise bad(str(err)) from None


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


class _Dnabert2Layer(nnx.Module):
    def __init__(self, cfg: Dnabert2Config, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.inter = i
        self.wqkv = _linear(h, 3 * h, rngs)
        self.attn_out = _linear(h, h, rngs)
        self.attn_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.gated = nnx.Linear(h, 2 * i, use_bias=False, precision=HIGHEST, rngs=rngs)
        self.wo = _linear(i, h, rngs)
        self.mlp_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def __call__(self, x, bias):
        b, t, h = x.shape
        d = h // self.n_heads
        qkv = self.wqkv(x).reshape(b, t, 3, self.n_heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=HIGHEST) / math.sqrt(d)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=HIGHEST).reshape(b, t, h)
        x = self.attn_norm(self.attn_out(ctx) + x)
        z = self.gated(x)
        z = _gelu(z[..., : self.inter]) * z[..., self.inter :]
        return self.mlp_norm(self.wo(z) + x)


@register_model("dnabert2_encoder")
class Dnabert2Encoder(SavedModel):
    """DNABERT-2 encoder equal to its published ``bert_layers.BertModel`` (see the module doc).

    Parameters
    ----------
    config
        A :class:`Dnabert2Config`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`dnabert2_from_checkpoint`).
    """

    config_class = Dnabert2Config

    def __init__(self, config: Dnabert2Config, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        h = cfg.hidden_size
        self.word = nnx.Embed(cfg.vocab_size, h, rngs=rngs)
        self.token_type = nnx.Embed(cfg.type_vocab_size, h, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.layers = nnx.List(
            [_Dnabert2Layer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
        )

    def hidden_states(self, input_ids) -> list:
        """Return the embeddings and every layer's output, padded rows zero.

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id`` (the
        attention mask is ``input_ids != pad_token_id``). Returns
        ``num_hidden_layers + 1`` arrays ``(B, L, hidden_size)``; the last is
        upstream's ``BertModel`` output.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        t = ids.shape[1]
        if t > cfg.max_tokens:
            raise ValueError(
                f"inputs of {t} tokens exceed the model's context of {cfg.max_tokens} tokens."
            )
        key_mask = ids != cfg.pad_token_id
        maskf = key_mask.astype(jnp.float32)
        slopes = jnp.asarray(alibi_slopes(cfg.num_attention_heads), dtype=jnp.float32)
        pos = jnp.arange(t)
        dist = jnp.abs(pos[None, :] - pos[:, None]).astype(jnp.float32)
        alibi = slopes[:, None, None] * -dist  # (heads, L, L)
        pad_bias = (1.0 - maskf) * _PAD_BIAS  # (B, L) over keys
        bias = pad_bias[:, None, None, :] + alibi[None]
        x = self.embed_norm(self.word(ids) + self.token_type.embedding[0])
        states = [x * maskf[..., None]]
        for layer in self.layers:
            x = layer(x, bias) * maskf[..., None]
            states.append(x)
        return states

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def pool(self, input_ids, states):
        """Mean of ``states`` ``(B, L, H)`` over the non-padding tokens (``[CLS]``/``[SEP]`` included).

        DNABERT-2's README embedding: ``torch.mean(hidden_states[0], dim=0)`` of
        one unpadded sequence.
        """
        w = (jnp.asarray(input_ids) != self.config.pad_token_id).astype(states.dtype)
        total = jnp.einsum("bl,blh->bh", w, states, precision=HIGHEST)
        return total / jnp.maximum(w.sum(axis=1), 1.0)[:, None]


# ------------------------------------------------------------------ weights

_LAYER_MAP = {
    "attention.self.Wqkv": "wqkv",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "mlp.gated_layers": "gated",
    "mlp.wo": "wo",
    "mlp.layernorm": "mlp_norm",
}
_NORMS = {"attn_norm", "mlp_norm"}
#: Heads and buffers an embedding does not use (the MLM / classification heads, the pooler).
_IGNORED_PREFIXES = ("cls.", "classifier.", "bert.pooler.", "pooler.")
_IGNORED_NAMES = {"embeddings.token_type_ids", "embeddings.position_ids"}


def _map_dnabert2_weights(
    weights: Mapping[str, np.ndarray], where: str, *, consume: bool = False
) -> dict:
    """DNABERT-2 state dict -> NNX paths of :class:`Dnabert2Encoder`; unknown names kept as-is.

    Names that map nowhere pass through unchanged, so that the one shape check of
    :meth:`~diffbio_sc.models.SavedModel.from_weights` lists them as unexpected
    beside any missing or mis-shaped tensor.
    """
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
    out: dict[str, np.ndarray] = {}
    for name in list(weights):
        # consume: pop each tensor as it is mapped (a transposed kernel frees its original)
        w = weights.pop(name) if consume else weights[name]  # type: ignore[attr-defined]
        body = name[len(prefix) :] if name.startswith(prefix) else None
        if name.startswith(_IGNORED_PREFIXES) or body in _IGNORED_NAMES:
            continue
        w = float_weight(name, w, where)
        target = None
        if body == "embeddings.word_embeddings.weight":
            target = "word.embedding"
        elif body == "embeddings.token_type_embeddings.weight":
            target = "token_type.embedding"
        elif body in ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.gamma"):
            target = "embed_norm.scale"
        elif body in ("embeddings.LayerNorm.bias", "embeddings.LayerNorm.beta"):
            target = "embed_norm.bias"
        elif body is not None and body.startswith("encoder.layer."):
            idx, _, rest = body[len("encoder.layer.") :].partition(".")
            sub, _, leaf = rest.rpartition(".")
            if idx.isdigit() and sub in _LAYER_MAP:
                mod = f"layers.{int(idx)}.{_LAYER_MAP[sub]}"
                if leaf in ("bias", "beta"):
                    target = f"{mod}.bias"
                elif leaf in ("weight", "gamma"):
                    if _LAYER_MAP[sub] in _NORMS:
                        target = f"{mod}.scale"
                    else:
                        target = f"{mod}.kernel"
                        w = aligned_copy(w.T) if w.ndim == 2 else w
        out[target if target is not None else name] = w
    return out


def dnabert2_from_checkpoint(ckpt, *, pad_token_id: int) -> Dnabert2Encoder:
    """Build a :class:`Dnabert2Encoder` from a :class:`diffbio_sc.io.Checkpoint` (DNABERT-2 layout).

    Raises ``CheckpointError`` naming the file for an unsupported configuration,
    and one :class:`~diffbio_sc.models.ModelFormatError` naming every missing,
    unexpected and mis-shaped tensor.
    """
    cfg = Dnabert2Config.from_hf(
        ckpt.config, pad_token_id=pad_token_id, source=str(ckpt.config_file)
    )
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    return from_torch_weights(
        Dnabert2Encoder,
        cfg,
        _map_dnabert2_weights(ckpt.weights, where, consume=True),
        where=where,
        consume=True,
    )
