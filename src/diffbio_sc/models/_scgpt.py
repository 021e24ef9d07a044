"""scGPT's encoder in Flax NNX, in the module structure of its published checkpoints.

scGPT (Cui et al. 2024, ``scgpt.model.TransformerModel``) embeds a cell as a
set of (gene, value) tokens, ``<cls>`` first:

* gene tokens: ``encoder.embedding`` then ``encoder.enc_norm`` (LayerNorm);
* values: ``value_encoder``, either *continuous* (``clamp(max=512) -> linear1
  -> ReLU -> linear2 -> LayerNorm``), *category* (an embedding of the integer
  bin, then LayerNorm) or *scaling* (the gene embedding multiplied by the value);
* the sum goes through ``nlayers`` transformer encoder layers (PyTorch's
  ``TransformerEncoderLayer``: multi-head self-attention with a fused
  in-projection, ReLU feed-forward, post-LayerNorm with eps 1e-5; or the
  pre-LayerNorm variant when ``pre_norm`` is set), padding keys masked;
* the cell embedding is the ``<cls>`` position of the last layer, L2-normalised
  (``scgpt.tasks.get_batch_cell_embeddings``).

Checkpoints trained with flash-attn name the fused projection ``self_attn.Wqkv``;
its rows are ordered q, k, v as PyTorch's ``in_proj_weight``, so both map to
the same parameter. Decoder heads (expression, MVC, classification,
adversarial) are not used for embeddings and are ignored; checkpoints with
batch-specific normalisation (``dsbn``/``bn``) are refused, since their
embeddings need batch labels this encoder does not take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..io._torch_pickle import CheckpointError
from ._base import ModelConfig, SavedModel, register_model, token_id_map
from ._bert import HIGHEST, config_field, float_weight, from_torch_weights, masked_attention

__all__ = [
    "ScGPTConfig",
    "ScGPTEncoder",
    "max_seq_len",
    "scgpt_from_checkpoint",
    "scgpt_vocab",
]

#: Special tokens scGPT appends to its vocabulary when absent (``embed_data``).
SCGPT_SPECIALS = ("<pad>", "<cls>", "<eoc>")
_STYLES = ("continuous", "category", "scaling")


@dataclass(frozen=True)
class ScGPTConfig(ModelConfig):
    """Architecture of an scGPT encoder (from its ``args.json`` and vocabulary).

    Parameters
    ----------
    vocab_size
        Gene tokens including the special tokens.
    d_model, n_heads, d_hid, n_layers
        ``embsize``, ``nheads``, ``d_hid``, ``nlayers`` of ``args.json``.
    pad_token_id, cls_token_id
        Token ids of ``<pad>`` and ``<cls>``.
    pad_value
        Value given to ``<cls>`` and padding (``args.json`` ``pad_value``).
    n_bins
        Number of expression bins (``n_bins``).
    input_emb_style
        ``'continuous'``, ``'category'`` or ``'scaling'``.
    n_input_bins
        Rows of the category value embedding (category style only).
    pre_norm
        Pre-LayerNorm layers instead of post-LayerNorm.
    max_value
        Clamp of continuous values (scGPT: 512).
    """

    vocab_size: int
    d_model: int
    n_heads: int
    d_hid: int
    n_layers: int
    pad_token_id: int
    cls_token_id: int
    pad_value: float = -2.0
    n_bins: int = 51
    input_emb_style: str = "continuous"
    n_input_bins: int = 0
    pre_norm: bool = False
    layer_norm_eps: float = 1e-5
    max_value: float = 512.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive("vocab_size", "d_model", "n_heads", "d_hid", "n_layers", "n_bins")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ScGPTConfig: embsize {self.d_model} is not a multiple of nheads {self.n_heads}."
            )
        if self.input_emb_style not in _STYLES:
            raise ValueError(
                f"ScGPTConfig: input_emb_style {self.input_emb_style!r} is not one of {_STYLES}."
            )
        if self.input_emb_style == "category" and self.n_input_bins < 1:
            raise ValueError("ScGPTConfig: category style needs n_input_bins >= 1.")
        for name in ("pad_token_id", "cls_token_id"):
            v = getattr(self, name)
            if not 0 <= v < self.vocab_size:
                raise ValueError(
                    f"ScGPTConfig: {name} {v} is outside the vocabulary of {self.vocab_size}."
                )
        if not self.layer_norm_eps > 0:
            raise ValueError(
                f"ScGPTConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}."
            )
        if not self.max_value > 0:
            raise ValueError(f"ScGPTConfig: max_value must be > 0, got {self.max_value!r}.")


def scgpt_vocab(vocab: Mapping[str, int], *, source: str = "vocab.json") -> dict[str, int]:
    """Return scGPT's vocabulary as ``embed_data`` builds it: special tokens appended when absent.

    Token ids must be unique non-negative integers (a string or fractional id is an error).
    """
    out = token_id_map(vocab, source)
    ids = np.fromiter(out.values(), dtype=np.int64, count=len(out))
    nxt = int(ids.max()) + 1 if ids.size else 0
    for tok in SCGPT_SPECIALS:
        if tok not in out:
            out[tok] = nxt
            nxt += 1
    return out


def _config_from_args(args: Mapping[str, Any], vocab: Mapping[str, int], weights, source: str):
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{source}: {msg}")

    def get(key: str, kind: str, default=None):
        return config_field(
            args, key, kind, *(() if default is None else (default,)), source=source
        )

    style = get("input_emb_style", "str", "continuous")
    if style not in _STYLES:
        raise bad(f"input_emb_style {style!r} is not supported; one of {_STYLES}.")
    if args.get("DSBN") or args.get("domain_spec_batchnorm"):
        raise bad(
            "this checkpoint uses batch-specific normalisation (DSBN), whose embeddings "
            "need batch labels; it is not supported."
        )
    if args.get("fast_transformer_backend", "flash") == "linear" and args.get("fast_transformer"):
        raise bad("the 'linear' fast-transformer backend is not supported (only standard/flash).")
    pad_token = get("pad_token", "str", "<pad>")
    if pad_token not in vocab:
        raise bad(f"pad_token {pad_token!r} is not in the vocabulary.")
    n_bins = get("n_bins", "int", 51)
    n_input_bins = 0
    if style == "category":
        w = weights.get("value_encoder.embedding.weight")
        n_input_bins = int(w.shape[0]) if w is not None else n_bins + 2
    try:
        return ScGPTConfig(
            vocab_size=len(vocab),
            d_model=get("embsize", "int"),
            n_heads=get("nheads", "int"),
            d_hid=get("d_hid", "int"),
            n_layers=get("nlayers", "int"),
            pad_token_id=int(vocab[pad_token]),
            cls_token_id=int(vocab["<cls>"]),
            pad_value=get("pad_value", "float", -2),
            n_bins=n_bins,
            input_emb_style=style,
            n_input_bins=n_input_bins,
            pre_norm=get("pre_norm", "bool", False),
        )
    except CheckpointError:
        raise
    except ValueError as err:
        raise bad(f"{err} Fix the field in the file.") from None


def max_seq_len(args: Mapping[str, Any], source: str, default: int = 1200) -> int:
    """Return ``max_seq_len`` of scGPT's ``args.json``: an integer >= 2 (``<cls>`` plus a gene)."""
    value = config_field(args, "max_seq_len", "int", default, source)
    if value < 2:
        raise CheckpointError(
            f"{source}: the field 'max_seq_len' must be at least 2 (<cls> plus one gene), got "
            f"{value!r}; fix the file or pass max_length= when embedding."
        )
    return int(value)


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, precision=HIGHEST, rngs=rngs)


class _EncoderLayer(nnx.Module):
    """PyTorch ``TransformerEncoderLayer`` (ReLU, batch first), post- or pre-LayerNorm."""

    def __init__(self, cfg: ScGPTConfig, *, rngs: nnx.Rngs):
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.pre_norm = cfg.pre_norm
        self.in_proj = _linear(d, 3 * d, rngs)
        self.out_proj = _linear(d, d, rngs)
        self.linear1 = _linear(d, cfg.d_hid, rngs)
        self.linear2 = _linear(cfg.d_hid, d, rngs)
        self.norm1 = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def _attend(self, x, key_mask):
        b, t, d = x.shape
        qkv = self.in_proj(x).reshape(b, t, 3, self.n_heads, d // self.n_heads)
        ctx = masked_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], key_mask)
        return self.out_proj(ctx.reshape(b, t, d))

    def _ff(self, x):
        return self.linear2(jax.nn.relu(self.linear1(x)))

    def __call__(self, x, key_mask):
        if self.pre_norm:  # scGPT's FlashTransformerEncoderLayer, norm_scheme='pre'
            x = self.norm1(x)
            x = x + self._attend(x, key_mask)
            x = self.norm2(x)
            return x + self._ff(x)
        x = self.norm1(x + self._attend(x, key_mask))
        return self.norm2(x + self._ff(x))


@register_model("scgpt_encoder")
class ScGPTEncoder(SavedModel):
    """scGPT's gene + value encoders and transformer (the path to its cell embedding).

    A :class:`~diffbio_sc.models.SavedModel` (``save``/:func:`diffbio_sc.models.load`).

    Parameters
    ----------
    config
        A :class:`ScGPTConfig`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`scgpt_from_checkpoint`).
    """

    config_class = ScGPTConfig
    _repr_fields = ("vocab_size", "d_model", "n_layers", "n_heads", "d_hid", "input_emb_style")
    _repr_family = "scGPT encoder"

    def __init__(self, config: ScGPTConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        d = cfg.d_model
        self.gene_embed = nnx.Embed(cfg.vocab_size, d, rngs=rngs)
        self.gene_norm = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps, rngs=rngs)
        style = cfg.input_emb_style
        cont, cat = style == "continuous", style == "category"
        self.value_in = nnx.data(_linear(1, d, rngs) if cont else None)
        self.value_hidden = nnx.data(_linear(d, d, rngs) if cont else None)
        self.value_embed = nnx.data(nnx.Embed(cfg.n_input_bins, d, rngs=rngs) if cat else None)
        norm = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps, rngs=rngs) if cont or cat else None
        self.value_norm = nnx.data(norm)
        self.layers = nnx.List([_EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.n_layers)])

    def embed_inputs(self, gene_ids, values):
        """Token embeddings before the transformer: gene encoder combined with value encoder."""
        cfg = self.config
        x = self.gene_norm(self.gene_embed(gene_ids))
        values = jnp.asarray(values, jnp.float32)
        if cfg.input_emb_style == "continuous":
            v = jnp.minimum(values, cfg.max_value)[..., None]
            v = self.value_norm(self.value_hidden(jax.nn.relu(self.value_in(v))))
            return x + v
        if cfg.input_emb_style == "category":
            v = self.value_norm(self.value_embed(jnp.trunc(values).astype(jnp.int32)))
            return x + v
        return x * values[..., None]

    def hidden_states(self, gene_ids, values) -> list:
        """Input embeddings and the output of every layer, each ``(B, L, d_model)``.

        ``gene_ids`` ``(B, L)`` right-padded with ``<pad>`` (masked out of attention);
        ``values`` ``(B, L)`` the matching values (bins), ``pad_value`` at ``<cls>``
        and padding.
        """
        ids = jnp.asarray(gene_ids)
        key_mask = ids != self.config.pad_token_id
        x = self.embed_inputs(ids, values)
        states = [x]
        for layer in self.layers:
            x = layer(x, key_mask)
            states.append(x)
        return states

    def __call__(self, gene_ids, values) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(gene_ids, values)

    def cell_embedding(self, gene_ids, values, *, normalize: bool = True):
        """Return the ``<cls>`` state of the last layer, L2-normalised (scGPT's cell embedding)."""
        x = self.hidden_states(gene_ids, values)[-1][:, 0]
        if not normalize:
            return x
        norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
        return x / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)


# ------------------------------------------------------------------ weights

_LAYER_MAP = {
    "self_attn.in_proj_weight": "in_proj.kernel",
    "self_attn.in_proj_bias": "in_proj.bias",
    "self_attn.Wqkv.weight": "in_proj.kernel",  # flash-attn's FlashMHA
    "self_attn.Wqkv.bias": "in_proj.bias",
    "self_attn.out_proj.weight": "out_proj.kernel",
    "self_attn.out_proj.bias": "out_proj.bias",
    "linear1.weight": "linear1.kernel",
    "linear1.bias": "linear1.bias",
    "linear2.weight": "linear2.kernel",
    "linear2.bias": "linear2.bias",
    "norm1.weight": "norm1.scale",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.scale",
    "norm2.bias": "norm2.bias",
}
_TOP_MAP = {
    "encoder.embedding.weight": "gene_embed.embedding",
    "encoder.enc_norm.weight": "gene_norm.scale",
    "encoder.enc_norm.bias": "gene_norm.bias",
    "value_encoder.linear1.weight": "value_in.kernel",
    "value_encoder.linear1.bias": "value_in.bias",
    "value_encoder.linear2.weight": "value_hidden.kernel",
    "value_encoder.linear2.bias": "value_hidden.bias",
    "value_encoder.norm.weight": "value_norm.scale",
    "value_encoder.norm.bias": "value_norm.bias",
    "value_encoder.embedding.weight": "value_embed.embedding",
    "value_encoder.enc_norm.weight": "value_norm.scale",
    "value_encoder.enc_norm.bias": "value_norm.bias",
}
#: Heads that scGPT's cell embedding does not use.
_IGNORED_PREFIXES = (
    "decoder.",
    "mvc_decoder.",
    "cls_decoder.",
    "grad_reverse_discriminator.",
    "adversarial_discriminator.",
    "batch_encoder.",
    "flag_encoder.",
    "pert_encoder.",
)
_REFUSED_PREFIXES = ("dsbn.", "bn.")


def _map_scgpt_weights(weights: Mapping[str, np.ndarray], where: str) -> dict:
    out: dict[str, np.ndarray] = {}
    unexpected = []
    for name, w in weights.items():
        if name.startswith(_IGNORED_PREFIXES):
            continue
        if name.startswith(_REFUSED_PREFIXES):
            raise CheckpointError(
                f"{where}: the checkpoint holds batch normalisation tensors ({name!r}) "
                "applied before the transformer; their embeddings need batch labels and "
                "are not supported."
            )
        w = float_weight(name, w, where)
        if name.startswith("transformer_encoder.layers."):
            idx, _, rest = name[len("transformer_encoder.layers.") :].partition(".")
            if not idx.isdigit() or rest not in _LAYER_MAP:
                unexpected.append(name)
                continue
            target = f"layers.{int(idx)}.{_LAYER_MAP[rest]}"
        elif name in _TOP_MAP:
            target = _TOP_MAP[name]
        else:
            unexpected.append(name)
            continue
        if target in out:
            raise CheckpointError(
                f"{where}: {name!r} duplicates another tensor (both in_proj and Wqkv keys?)."
            )
        out[target] = np.ascontiguousarray(w.T) if target.endswith(".kernel") else w
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected weight tensors for an scGPT model: {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''}."
        )
    return out


def scgpt_from_checkpoint(ckpt, vocab: Mapping[str, int]) -> ScGPTEncoder:
    """Build an :class:`ScGPTEncoder` from a :class:`diffbio_sc.io.Checkpoint` (scGPT layout).

    ``vocab`` is the checkpoint's vocabulary after :func:`scgpt_vocab`. Raises
    ``ValueError`` naming the files for unsupported settings, missing or
    unexpected tensors, shape mismatches and a vocabulary whose size differs
    from the gene embedding's.
    """
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    emb = ckpt.weights.get("encoder.embedding.weight")
    if emb is not None and emb.shape[0] != len(vocab):
        raise CheckpointError(
            f"{where}: the vocabulary has {len(vocab)} tokens (special tokens included) but the "
            f"gene embedding has {emb.shape[0]} rows; use the vocab.json that came with "
            "this checkpoint."
        )
    if emb is not None:
        beyond = sorted((i, t) for t, i in vocab.items() if i >= emb.shape[0])
        if beyond:
            shown = ", ".join(f"{t!r}: {i}" for i, t in beyond[:5])
            raise CheckpointError(
                f"{where}: {len(beyond)} vocabulary ids lie beyond the gene embedding's "
                f"{emb.shape[0]} rows ({shown}); ids must run from 0 to {emb.shape[0] - 1}. "
                "Use the vocab.json that came with this checkpoint."
            )
    cfg = _config_from_args(ckpt.config, vocab, ckpt.weights, str(ckpt.config_file))
    arrays = _map_scgpt_weights(ckpt.weights, where)
    return from_torch_weights(ScGPTEncoder, cfg, arrays, where=where)
