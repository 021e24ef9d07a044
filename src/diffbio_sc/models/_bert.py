"""A Flax NNX BERT encoder equal to Hugging Face ``BertForMaskedLM`` (Geneformer's model).

The computation follows ``transformers``' BERT exactly, in float32:

* embeddings: ``LayerNorm(word[ids] + token_type[0] + position[0..L-1])``
  (absolute positions, one token type);
* ``num_hidden_layers`` post-LayerNorm blocks: self-attention with separate
  query/key/value projections, scores ``q.k / sqrt(d)`` plus a mask bias of
  the float32 minimum on padding keys, softmax, output projection, residual,
  LayerNorm; then ``dense -> hidden_act -> dense``, residual, LayerNorm
  (``layer_norm_eps`` from the config);
* the optional masked-LM head (``transform -> act -> LayerNorm -> decoder``),
  the decoder tied to the word embeddings as Hugging Face ties them.

Matrix products run at ``Precision.HIGHEST`` (true float32 also on GPUs,
where JAX's default would use TF32), as PyTorch does by default. An opt-in
``dtype='bfloat16'`` (``hidden_states(..., dtype=...)``) feeds every matrix
product of the layers (projections, feed-forward, both attention products)
bfloat16 inputs with float32 accumulation and output; embeddings, softmax,
LayerNorm, activations, residuals and pooling stay float32 (see
:func:`compute_dtype`).

Weights come from :func:`diffbio_sc.io.read_checkpoint`: PyTorch names are
mapped to this module's and ``Linear`` weights, stored ``(out, in)`` by
PyTorch, are transposed to ``(in, out)``.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..io._torch_pickle import CheckpointError
from ._base import ModelConfig, ModelFormatError, SavedModel, register_model

__all__ = [
    "BertConfig",
    "BertEncoder",
    "bert_from_checkpoint",
    "masked_attention",
    "compute_dtype",
    "COMPUTE_DTYPES",
    "from_torch_weights",
    "config_field",
    "float_weight",
    "ACTIVATIONS",
    "StackedLayers",
    "stack_layers",
    "inference_split",
    "stacked_states",
    "pool_tokens",
    "pool_segments",
]

HIGHEST = jax.lax.Precision.HIGHEST
#: Additive bias on masked attention keys, as Hugging Face builds it (float32 minimum).
MASK_BIAS = float(np.finfo(np.float32).min)


#: Names accepted for the matrix-product input dtype (``None`` = ``'float32'``).
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str | None):
    """JAX dtype of the matrix-product inputs for ``name``; ``None`` for float32 (the default).

    ``'bfloat16'``: inputs rounded to bfloat16 (8 bits of mantissa), products
    accumulated and returned in float32 (``preferred_element_type``). On a CPU
    with AVX512-BF16, XLA ran a (4,096 x 768) @ (768 x 3,072) product 1.7x
    faster than in float32 and the tiled attention 1.3x faster
    (``docs/benchmarks.md``, "Where the time goes").
    """
    if name is None or name == "float32":
        return None
    if name == "bfloat16":
        return jnp.bfloat16
    raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {name!r}.")


def _dense(lin: nnx.Linear, x, dtype):
    """``lin(x)``; with a compute ``dtype``, inputs in that dtype and a float32 result."""
    if dtype is None:
        return lin(x)
    y = jnp.dot(x.astype(dtype), lin.kernel[...].astype(dtype), preferred_element_type=jnp.float32)
    return y + lin.bias[...]


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


#: Hugging Face ``hidden_act`` names -> functions.
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_python": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

#: Architectures whose BERT encoder we run (their task heads besides the MLM head are ignored).
SUPPORTED_ARCHITECTURES = (
    "BertForMaskedLM",
    "BertModel",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
)


_REQUIRED = object()
_KINDS = {
    "int": ((int, np.integer), "an integer"),
    "float": ((int, float, np.integer, np.floating), "a number"),
    "bool": ((bool, np.bool_), "true or false"),
    "str": ((str,), "a string"),
}


def config_field(doc: Mapping[str, Any], key: str, kind: str, default=_REQUIRED, source="config"):
    """Return the field ``key`` of a checkpoint's JSON config, of JSON type ``kind``, uncoerced.

    ``kind`` is ``'int'``, ``'float'``, ``'bool'`` or ``'str'``. A missing field (or
    ``null``) takes ``default``; a value of another type (``"16"`` for an integer,
    ``1`` for a boolean, ``16.0`` for an integer) is refused, not converted, with a
    :class:`~diffbio_sc.io.CheckpointError` naming ``source`` and the field.
    """
    value = doc.get(key)
    if value is None:
        if default is _REQUIRED:
            raise CheckpointError(f"{source}: the field {key!r} is missing.")
        return default
    types, what = _KINDS[kind]
    is_bool = isinstance(value, (bool, np.bool_))
    if not isinstance(value, types) or (is_bool and kind != "bool"):
        raise CheckpointError(
            f"{source}: the field {key!r} must be {what}, got {value!r} "
            f"({type(value).__name__}); fix the file (values are not converted)."
        )
    if kind == "float" and not math.isfinite(float(value)):
        raise CheckpointError(f"{source}: the field {key!r} must be finite, got {value!r}.")
    return value


def float_weight(name: str, w, where: str) -> np.ndarray:
    """Return checkpoint tensor ``name`` as float32; integer and boolean tensors are refused.

    Half and bfloat16 tensors are widened exactly. An integer tensor (a quantized
    checkpoint, or a buffer that is no weight) read as raw values would give wrong
    embeddings without any error, so it is a :class:`~diffbio_sc.io.CheckpointError`.
    """
    w = np.asarray(w)
    if w.dtype.kind != "f" and w.dtype.name != "bfloat16":
        raise CheckpointError(
            f"{where}: the weight tensor {name!r} has dtype {w.dtype}, not floating point. "
            "Integer or boolean tensors are quantized weights (or not weights at all); read as "
            "raw values they would give wrong embeddings. Export the checkpoint with float "
            "weights (e.g. model.float() before saving, or a non-quantized release)."
        )
    return w if w.dtype == np.float32 else w.astype(np.float32)


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    """Architecture of a Hugging Face BERT encoder (the fields of its ``config.json``).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size
        Sizes, as in Hugging Face's ``BertConfig``.
    hidden_act
        Feed-forward activation (a key of :data:`ACTIVATIONS`).
    max_position_embeddings
        Number of absolute positions (the longest input).
    type_vocab_size
        Number of token types (all inputs use type 0).
    layer_norm_eps
        LayerNorm epsilon.
    pad_token_id
        Token id of padding (masked out of attention).
    tie_word_embeddings
        Whether the masked-LM decoder shares the word embeddings.
    mlm_head
        Whether the model carries the masked-LM head.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    tie_word_embeddings: bool = True
    mlm_head: bool = False

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
                f"BertConfig: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig: hidden_act {self.hidden_act!r} is not supported; one of "
                f"{sorted(ACTIVATIONS)}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BertConfig: pad_token_id {self.pad_token_id} outside the vocabulary."
            )
        if not self.layer_norm_eps > 0:  # finite: checked with the field types
            raise ValueError(
                f"BertConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r} (a "
                "LayerNorm with a non-positive epsilon divides by zero or takes the root of a "
                "negative number)."
            )

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], *, source: str = "config.json") -> BertConfig:
        """Build from a Hugging Face ``config.json``, refusing what this encoder does not run.

        Raises ``ValueError`` naming ``source`` and the offending field for another
        ``model_type`` or architecture, relative positions, decoders or cross-attention.
        """

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        model_type = cfg.get("model_type")
        if model_type != "bert":
            raise bad(
                f"model_type {model_type!r} is not supported; diffbio_sc runs BERT "
                "checkpoints (Geneformer) and scGPT checkpoints (args.json layout)."
            )
        archs = cfg.get("architectures") or ["BertModel"]
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise bad(f"the field 'architectures' must be a list of names, got {archs!r}.")
        unknown = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
        if unknown:
            raise bad(
                f"architecture {unknown[0]!r} is not supported; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}."
            )
        pos = cfg.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise bad(f"position_embedding_type {pos!r} is not supported (only 'absolute').")
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise bad("decoder / cross-attention BERT models are not supported.")
        act = cfg.get("hidden_act", "gelu")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise bad(f"hidden_act {act!r} is not supported; one of {sorted(ACTIVATIONS)}.")

        def get(key: str, kind: str, default=_REQUIRED):
            return config_field(cfg, key, kind, default, source)

        try:
            return cls(
                vocab_size=get("vocab_size", "int"),
                hidden_size=get("hidden_size", "int"),
                num_hidden_layers=get("num_hidden_layers", "int"),
                num_attention_heads=get("num_attention_heads", "int"),
                intermediate_size=get("intermediate_size", "int"),
                hidden_act=act,
                max_position_embeddings=get("max_position_embeddings", "int", 512),
                type_vocab_size=get("type_vocab_size", "int", 2),
                layer_norm_eps=get("layer_norm_eps", "float", 1e-12),
                pad_token_id=get("pad_token_id", "int", 0),
                tie_word_embeddings=get("tie_word_embeddings", "bool", True),
                mlm_head="BertForMaskedLM" in archs or "BertForPreTraining" in archs,
            )
        except CheckpointError:
            raise
        except ValueError as err:
            raise bad(f"{err} Fix the field in the file.") from None


#: Scores elements (query rows x keys) computed per step of the tiled attention:
#: 2**19 float32 = 2 MiB, about one core's L2 cache on current x86 servers.
TILE_ELEMENTS = 1 << 19


def _query_block(length: int) -> int:
    """Rows of one query tile of the attention.

    ``length`` up to 256, else the largest multiple of 8 in [64, 256] dividing
    it (``length`` itself when none does).
    """
    if length <= 256:
        return length
    for blk in range(256, 63, -8):
        if length % blk == 0:
            return blk
    return length


def _attention_tile(q, kt, vt, bias, dtype=None):
    """One query tile against all keys of its (item, head).

    ``q`` ``(rows, d)`` already scaled, ``kt, vt`` ``(d, L)`` (keys and values
    transposed), ``bias`` ``(L,)`` (0 or the mask bias). Returns
    ``softmax(q.k + bias) @ v``, with the normalisation applied to the ``(rows, d)``
    output instead of the ``(rows, L)`` weights (the same value up to float rounding).
    Keys and values are laid out ``(d, L)`` because XLA's CPU matrix products
    of both shapes here, ``(rows, d) @ (d, L)`` and ``(rows, L) @ (d, L).T``,
    ran 10-25% faster in that layout than with ``(L, d)`` (shared 2-core CPU).
    With a compute ``dtype`` (``q, kt, vt`` already in it) both products take
    inputs in that dtype and accumulate in float32; the softmax stays float32
    and only its weights are rounded for the second product.
    """
    if dtype is None:
        s = jnp.dot(q, kt, precision=HIGHEST) + bias
        p = jnp.exp(s - s.max(axis=-1, keepdims=True))
        out = jax.lax.dot_general(p, vt, (((1,), (1,)), ((), ())), precision=HIGHEST)
        return out / p.sum(axis=-1, keepdims=True)
    s = jnp.dot(q, kt, preferred_element_type=jnp.float32) + bias
    p = jnp.exp(s - s.max(axis=-1, keepdims=True))
    out = jax.lax.dot_general(
        p.astype(dtype), vt, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    return out / p.sum(axis=-1, keepdims=True)


def masked_attention(q, k, v, key_mask, *, segment_ids=None, dtype=None):
    """Scaled dot-product attention with a key mask, in float32 at highest precision.

    ``q, k, v``: ``(B, L, heads, d)``; ``key_mask``: ``(B, L)`` bool, True = attend.
    Masked keys get the float32 minimum added to their score (Hugging Face's
    rule), so their weight is exactly 0 whenever a query has one valid key.
    With ``segment_ids`` ``(B, L)`` int (packed rows, see
    :mod:`diffbio_sc.models._packing`), the mask is block-diagonal instead: a
    query attends to the keys of its own segment only (``key_mask`` is ignored).

    The ``(B, heads, L, L)`` scores are never materialised: the work is cut into
    tiles of one (item, head) and a block of at most 256 queries against all
    the item's keys (each softmax row still sees every key, so the result is
    exact up to float rounding), run by ``jax.lax.map`` a few tiles per step so
    that a step's scores (:data:`TILE_ELEMENTS`) stay in cache. On CPU at
    2,048 tokens this is about 2x less CPU time than the plain ``einsum ->
    softmax -> einsum`` (whose 512 MiB of scores for 8 cells x 4 heads make it
    memory-bound); see ``docs/notes/checkpoints.md``.

    ``dtype`` (from :func:`compute_dtype`; ``None`` = float32 throughout): the
    two products take ``q, k, v`` and the softmax weights in that dtype and
    accumulate in float32; the scores, softmax and output stay float32.
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    b, t, h, d = q.shape
    blk = _query_block(t)
    nq = t // blk
    qs = (q * (1.0 / math.sqrt(d))).transpose(0, 2, 1, 3).reshape(b * h * nq, blk, d)
    ks = k.transpose(0, 2, 3, 1).reshape(b * h, d, t)
    vs = v.transpose(0, 2, 3, 1).reshape(b * h, d, t)
    out_dtype = q.dtype
    if dtype is not None:
        qs, ks, vs = qs.astype(dtype), ks.astype(dtype), vs.astype(dtype)
    if segment_ids is None:
        bias = jnp.where(jnp.asarray(key_mask), 0.0, MASK_BIAS).astype(out_dtype)

        def tile(args):
            qt, i = args
            bh = i // nq
            return _attention_tile(qt, ks[bh], vs[bh], bias[bh // h], dtype)

    else:
        seg = jnp.asarray(segment_ids)

        def tile(args):
            qt, i = args
            bh = i // nq
            row = seg[bh // h]
            q_seg = jax.lax.dynamic_slice_in_dim(row, (i % nq) * blk, blk)
            bias = jnp.where(q_seg[:, None] == row[None, :], 0.0, MASK_BIAS).astype(out_dtype)
            return _attention_tile(qt, ks[bh], vs[bh], bias, dtype)

    n = b * h * nq
    group = max(1, min(n, TILE_ELEMENTS // (blk * t)))
    out = jax.lax.map(tile, (qs, jnp.arange(n)), batch_size=group)
    return out.reshape(b, h, t, d).transpose(0, 2, 1, 3)


def _slot_attention(q, k, v, slots, n_heads: int, dtype):
    """Attention of packed tokens computed on a per-cell view (``packed_states(slots=...)``).

    ``q, k, v``: ``(R, W, hidden)``; ``slots = (index, back)``: ``index``
    ``(n, S)`` flat token of each cell's position (``R * W`` = none), ``back``
    ``(R, W)`` each token's place ``cell * S + position`` in the view. The view
    is gathered once per layer, run through :func:`masked_attention` (keys
    outside the cell masked) and gathered back; returns ``(R, W, hidden)``.
    """
    index, back = slots
    r, w, hid = q.shape
    n, width = index.shape

    def view(y):
        flat = jnp.concatenate([y.reshape(r * w, hid), jnp.zeros((1, hid), y.dtype)])
        return flat[index].reshape(n, width, n_heads, hid // n_heads)

    ctx = masked_attention(view(q), view(k), view(v), index < r * w, dtype=dtype)
    return ctx.reshape(n * width, hid)[back]


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, precision=HIGHEST, rngs=rngs)


class _BertLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.act = cfg.hidden_act
        self.query = _linear(h, h, rngs)
        self.key = _linear(h, h, rngs)
        self.value = _linear(h, h, rngs)
        self.attn_out = _linear(h, h, rngs)
        self.attn_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.inter = _linear(h, i, rngs)
        self.out = _linear(i, h, rngs)
        self.out_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def __call__(self, x, key_mask, segment_ids=None, dtype=None, slots=None):
        b, t, h = x.shape
        split = (b, t, self.n_heads, h // self.n_heads)
        q, k, v = (_dense(lin, x, dtype) for lin in (self.query, self.key, self.value))
        if slots is None:
            ctx = masked_attention(
                q.reshape(split),
                k.reshape(split),
                v.reshape(split),
                key_mask,
                segment_ids=segment_ids,
                dtype=dtype,
            ).reshape(b, t, h)
        else:
            ctx = _slot_attention(q, k, v, slots, self.n_heads, dtype)
        x = self.attn_norm(_dense(self.attn_out, ctx, dtype) + x)
        y = _dense(self.out, ACTIVATIONS[self.act](_dense(self.inter, x, dtype)), dtype)
        return self.out_norm(y + x)


def pool_tokens(input_ids, states, *, pad_id: int, pooling: str = "mean", exclude_ids=()):
    """Geneformer's cell embedding ``(B, H)`` from right-padded ``states`` ``(B, L, H)``.

    ``'mean'``: over the tokens that are not ``pad_id`` and not in ``exclude_ids``
    (0 for a cell without such tokens); ``'cls'``: the first token's state.
    """
    ids = jnp.asarray(input_ids)
    if pooling == "cls":
        return states[:, 0]
    keep = ids != pad_id
    for t in exclude_ids:
        keep = keep & (ids != t)
    w = keep.astype(states.dtype)
    total = jnp.einsum("bl,blh->bh", w, states, precision=HIGHEST)
    return total / jnp.maximum(w.sum(axis=1), 1.0)[:, None]


def pool_segments(
    input_ids, segment_ids, states, *, n_cells: int, pooling: str = "mean", exclude_ids=()
):
    """Per-cell embeddings ``(n_cells, H)`` from packed ``states`` ``(R, W, H)``.

    The pooling of :func:`pool_tokens`, cell ``i`` being segment ``i + 1``
    (segment 0 = padding).
    """
    ids = jnp.asarray(input_ids).reshape(-1)
    seg = jnp.asarray(segment_ids).reshape(-1)
    flat = jnp.asarray(states).reshape(ids.shape[0], -1)
    if pooling == "cls":
        first = jnp.concatenate([jnp.ones(1, bool), seg[1:] != seg[:-1]]) & (seg > 0)
        idx = jnp.where(first, seg - 1, n_cells)  # one first token per segment
        return jax.ops.segment_sum(flat, idx, num_segments=n_cells + 1)[:n_cells]
    keep = seg > 0
    for t in exclude_ids:
        keep = keep & (ids != t)
    idx = jnp.where(keep, seg - 1, n_cells)
    w = keep.astype(flat.dtype)
    total = jax.ops.segment_sum(flat * w[:, None], idx, num_segments=n_cells + 1)[:n_cells]
    count = jax.ops.segment_sum(w, idx, num_segments=n_cells + 1)[:n_cells]
    return total / jnp.maximum(count, 1.0)[:, None]


def _slot_views(slots, segment_ids, positions):
    """``(index, back)`` of the slot layout for :func:`_slot_attention` (``None`` without slots)."""
    if slots is None:
        return None
    slots = jnp.asarray(slots)
    seg, pos = jnp.asarray(segment_ids), jnp.asarray(positions)
    back = jnp.where(seg > 0, (seg - 1) * slots.shape[1] + pos, 0)
    return slots, back


class _BertEmbeddings(nnx.Module):
    """The encoder's embedding modules (the same objects, not copies) as one module."""

    def __init__(self, encoder: BertEncoder):
        self.word = encoder.word
        self.position = encoder.position
        self.token_type = encoder.token_type
        self.norm = encoder.embed_norm

    def __call__(self, ids, positions):
        x = self.word(ids) + self.token_type(jnp.zeros_like(ids)) + self.position(positions)
        return self.norm(x)


@dataclass(frozen=True)
class StackedLayers:
    """Static half of :func:`stack_layers`: graph definitions of the embeddings and of one layer.

    Hashable (a ``jax.jit`` static argument). ``n_layers`` layers are run with
    one ``jax.lax.scan`` over their stacked weights, so a compiled program holds
    the layer once, not ``n_layers`` times.
    """

    embed: Any
    layer: Any
    n_layers: int
    pad_id: int


#: Largest stacked copy of the layer weights :func:`stack_layers` is used for (64 MiB of
#: float32): the stack is a second copy of those weights while a job runs, 12 MiB at
#: Geneformer V1 size (5 of 6 layers), 340 MiB at V2-104M, where the unrolled layers
#: are kept instead (peak memory at torch's).
SCAN_MAX_BYTES = 64 << 20


def stacked_bytes(model: BertEncoder, n_layers: int) -> int:
    """Bytes of the stacked weights of ``model``'s first ``n_layers`` layers."""
    if n_layers < 1:
        return 0
    leaves = jax.tree_util.tree_leaves(nnx.state(model.layers[0], nnx.Param))
    return int(n_layers * sum(x.size * x.dtype.itemsize for x in leaves))


def _stack_leaves(*xs):
    """``jnp.stack(xs)``; in NumPy when every leaf is on a CPU device, then put on that device.

    ``jnp.stack`` runs as one small XLA program per distinct set of leaf shapes (5 at
    the Geneformer V1 size), compiled in every process: each compiles faster than the
    persistent cache's threshold, so a warm process paid 0.1-0.15 CPU-s for them.
    The NumPy stack gives the same values bit for bit.
    """
    if all(isinstance(x, jax.Array) for x in xs):
        devices = {d for x in xs for d in x.devices()}
        if len(devices) == 1 and next(iter(devices)).platform == "cpu":
            return jax.device_put(np.stack([np.asarray(x) for x in xs]), devices.pop())
    return jnp.stack(xs)


def stack_layers(model: BertEncoder, n_layers: int) -> tuple[StackedLayers, dict]:
    """Split ``model`` to run its first ``n_layers`` layers as one scanned layer.

    Returns ``(static, params)``.

    ``params``: ``{"embed": ..., "layers": ...}``, the embeddings' state and the
    layers' states stacked on a new first axis (a copy of those weights, made
    once per job; ``None`` for 0 layers). Run with :func:`stacked_states`.
    """
    n = int(n_layers)
    if not 0 <= n <= len(model.layers):
        raise ValueError(f"n_layers must lie in [0, {len(model.layers)}], got {n_layers}.")
    embed_def, embed_state = nnx.split(_BertEmbeddings(model))
    layer_def, _ = nnx.split(model.layers[0])
    layers = None
    if n:
        states = [nnx.state(model.layers[i]) for i in range(n)]
        layers = jax.tree_util.tree_map(_stack_leaves, *states)
    static = StackedLayers(embed_def, layer_def, n, int(model.config.pad_token_id))
    return static, {"embed": embed_state, "layers": layers}


_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_split(model: BertEncoder, n_layers: int) -> tuple[Any, Any]:
    """Return ``(static, params)`` that run ``model``'s first ``n_layers`` layers for inference.

    The scan-or-unroll decision of the model layer: a
    :class:`StackedLayers` and the stacked weights (:func:`stack_layers`, run
    with :func:`stacked_states`) when that stack takes at most
    :data:`SCAN_MAX_BYTES`, else the model's eval-mode graph definition and
    state (:func:`~diffbio_sc.models._runner.eval_split`; layers unrolled, no
    copy of the weights).

    The stacked copy is made once per model object and ``n_layers`` and kept on
    the model (weakly: it goes with the model), so repeated calls with the same
    model (e.g. ``tl.embed_checkpoint`` over several AnnData objects) reuse it;
    it is made again when a parameter array of the model was replaced since
    (training, loading weights), which is told by the identity of the
    parameter leaves, held weakly. One stack per model is kept (the last
    ``n_layers`` asked), so the memory held is at most :data:`SCAN_MAX_BYTES`
    per live model.
    """
    from ._runner import eval_split

    n = int(n_layers)
    if stacked_bytes(model, n) > SCAN_MAX_BYTES:
        return eval_split(model)
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    try:
        refs = tuple(weakref.ref(x) for x in leaves)
    except TypeError:  # a leaf that cannot be referenced weakly: no caching
        return stack_layers(model, n)
    hit = _STACKS.get(model)
    if (
        hit is not None
        and hit[0] == n
        and len(hit[1]) == len(refs)
        and all(r() is x for r, x in zip(hit[1], leaves, strict=True))
    ):
        return hit[2]
    split = stack_layers(model, n)
    _STACKS[model] = (n, refs, split)
    return split


def stacked_states(
    static: StackedLayers,
    params,
    input_ids,
    *,
    segment_ids=None,
    positions=None,
    slots=None,
    dtype=None,
):
    """State after the last stacked layer (:func:`stack_layers`), ``(R, W, hidden)``.

    Right-padded ``input_ids`` (``segment_ids`` ``None``: the key mask is
    ``input_ids != pad_id``, as :meth:`BertEncoder.hidden_states`), or packed
    rows / the slot layout (``segment_ids``, ``positions``, ``slots`` as
    :meth:`BertEncoder.packed_states`). Equal to those methods' state of layer
    ``n_layers`` up to float rounding.
    """
    ids = jnp.asarray(input_ids)
    dt = compute_dtype(dtype)
    if segment_ids is None:
        key_mask, seg, views = ids != static.pad_id, None, None
        pos = jnp.arange(ids.shape[1])[None]
    else:
        key_mask, seg, pos = None, jnp.asarray(segment_ids), jnp.asarray(positions)
        views = _slot_views(slots, seg, pos)
    x = nnx.merge(static.embed, params["embed"])(ids, pos)
    if not static.n_layers:
        return x

    def body(x, layer_params):
        layer = nnx.merge(static.layer, layer_params)
        return layer(x, key_mask, seg, dtype=dt, slots=views), None

    return jax.lax.scan(body, x, params["layers"])[0]


@register_model("bert_encoder")
class BertEncoder(SavedModel):
    """BERT encoder (+ optional masked-LM head) equal to Hugging Face's.

    A :class:`~diffbio_sc.models.SavedModel`: ``model.save(path)`` writes it in
    diffbio_sc's format (with its ``metadata``, e.g. the tokenizer dictionaries
    set by :func:`~diffbio_sc.models.load_checkpoint`) and
    :func:`diffbio_sc.models.load` reads it back.

    Parameters
    ----------
    config
        A :class:`BertConfig`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`bert_from_checkpoint`).
    """

    config_class = BertConfig
    _repr_fields = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
    _repr_family = "BERT encoder"

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        h = cfg.hidden_size
        self.word = nnx.Embed(cfg.vocab_size, h, rngs=rngs)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, rngs=rngs)
        self.token_type = nnx.Embed(cfg.type_vocab_size, h, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.layers = nnx.List([_BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        if cfg.mlm_head:
            self.head_transform = _linear(h, h, rngs)
            self.head_norm = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, rngs=rngs)
            self.head_bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32))
            self.head_decoder = (
                None if cfg.tie_word_embeddings else _linear(h, cfg.vocab_size, rngs)
            )
        else:
            self.head_transform = self.head_norm = self.head_bias = self.head_decoder = None

    def hidden_states(self, input_ids, *, n_layers: int | None = None, dtype=None) -> list:
        """Hidden states after the embeddings and after each of the first ``n_layers`` layers.

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id`` (the
        attention mask is ``input_ids != pad_token_id``, as Geneformer builds it).
        Returns a list of ``n_layers + 1`` arrays ``(B, L, hidden_size)``; the
        same list as Hugging Face's ``output_hidden_states``. ``dtype``:
        ``'bfloat16'`` runs the layers' matrix products with bfloat16 inputs
        and float32 accumulation (:func:`compute_dtype`); states stay float32.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        if ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"inputs of length {ids.shape[1]} exceed max_position_embeddings "
                f"{cfg.max_position_embeddings}."
            )
        n = cfg.num_hidden_layers if n_layers is None else int(n_layers)
        dt = compute_dtype(dtype)
        key_mask = ids != cfg.pad_token_id
        pos = jnp.arange(ids.shape[1])
        x = self.word(ids) + self.token_type(jnp.zeros_like(ids)) + self.position(pos)[None]
        x = self.embed_norm(x)
        states = [x]
        for layer in list(self.layers)[:n]:
            x = layer(x, key_mask, dtype=dt)
            states.append(x)
        return states

    def packed_states(
        self,
        input_ids,
        segment_ids,
        positions,
        *,
        n_layers: int | None = None,
        dtype=None,
        slots=None,
    ):
        """:meth:`hidden_states` of packed rows (several cells per row, no padding between).

        ``input_ids, segment_ids, positions``: ``(R, W)`` int from
        :func:`~diffbio_sc.models._packing.pack_tokens`: a token attends only to
        the tokens of its own segment (``segment_ids``; 0 = padding) and takes
        the position embedding of ``positions`` (restarting at 0 per cell), so
        each cell's states equal its unpacked states up to float rounding.
        ``dtype`` as in :meth:`hidden_states`.

        ``slots`` (the slot layout, :func:`~diffbio_sc.models._packing.slot_inputs`):
        an ``(n_slots, width)`` int array, the flat index (into the row-major
        tokens) of cell ``j``'s token ``p`` at ``[j, p]`` and the token count
        elsewhere; cell ``j`` is segment ``j + 1``. Attention then runs on that
        view, each cell over its own keys only (not the whole row): the same
        states, less work when the call's cells have similar lengths.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        seg = jnp.asarray(segment_ids)
        pos = jnp.asarray(positions)
        if ids.shape != seg.shape or ids.shape != pos.shape:
            raise ValueError("input_ids, segment_ids and positions must have one shape.")
        n = cfg.num_hidden_layers if n_layers is None else int(n_layers)
        dt = compute_dtype(dtype)
        x = self.word(ids) + self.token_type(jnp.zeros_like(ids)) + self.position(pos)
        x = self.embed_norm(x)
        states = [x]
        views = _slot_views(slots, seg, pos)
        for layer in list(self.layers)[:n]:
            x = layer(x, None, seg, dtype=dt, slots=views)
            states.append(x)
        return states

    def pool_packed(
        self, input_ids, segment_ids, states, *, n_cells: int, pooling="mean", exclude_ids=()
    ):
        """Per-cell embeddings ``(n_cells, H)`` from packed ``states`` ``(R, W, H)``.

        The same pooling as :meth:`pool` (mean over a cell's tokens that are not
        in ``exclude_ids``, 0 for a cell without such tokens; or its first
        token for ``'cls'``), cell ``i`` being segment ``i + 1``.
        """
        return pool_segments(
            input_ids,
            segment_ids,
            states,
            n_cells=n_cells,
            pooling=pooling,
            exclude_ids=exclude_ids,
        )

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def mlm_logits(self, hidden):
        """Masked-LM logits ``(B, L, vocab_size)`` from the last hidden state."""
        if self.head_transform is None:
            raise ValueError("This BERT checkpoint has no masked-LM head.")
        y = self.head_norm(ACTIVATIONS[self.config.hidden_act](self.head_transform(hidden)))
        if self.head_decoder is None:
            w = self.word.embedding[...]
            return jnp.einsum("blh,vh->blv", y, w, precision=HIGHEST) + self.head_bias[...]
        return self.head_decoder(y) + self.head_bias[...]

    def layer_states(self, input_ids, layer: int, *, dtype=None):
        """Hidden state ``(B, L, H)`` of one layer (0 = embeddings); later layers are not run.

        ``dtype`` as in :meth:`hidden_states`.
        """
        return self.hidden_states(input_ids, n_layers=layer, dtype=dtype)[layer]

    def pool(self, input_ids, states, *, pooling: str = "mean", exclude_ids: tuple[int, ...] = ()):
        """Geneformer's cell embedding from one layer's ``states`` ``(B, L, H)``.

        ``pooling='mean'``: mean over the tokens that are not padding and not in
        ``exclude_ids`` (``<cls>``/``<eos>``); a cell without such tokens gets 0.
        ``pooling='cls'``: the first token's state.
        """
        return pool_tokens(
            input_ids,
            states,
            pad_id=self.config.pad_token_id,
            pooling=pooling,
            exclude_ids=exclude_ids,
        )

    def pooled(self, input_ids, *, layer: int, pooling: str = "mean", exclude_ids=(), dtype=None):
        """Cell embedding from layer ``layer`` (see :meth:`pool`); later layers are not run."""
        return self.pool(
            input_ids,
            self.layer_states(input_ids, layer, dtype=dtype),
            pooling=pooling,
            exclude_ids=exclude_ids,
        )


# ------------------------------------------------------------------ weights


def from_torch_weights(
    cls, config, arrays: Mapping[str, np.ndarray], *, where: str, consume: bool = False
):
    """Build ``cls`` (a :class:`~diffbio_sc.models.SavedModel`) from mapped checkpoint arrays.

    The names, shapes and values are checked by ``cls.from_weights``; an error
    names ``where`` (the checkpoint files) and the mismatch. ``consume=True``:
    ``arrays`` (a dict nobody else uses) is emptied as the model fills.
    """
    try:
        return cls.from_weights(config, arrays, consume=consume)
    except ModelFormatError as err:
        raise ModelFormatError(
            f"{where}: {err} The config and the weights do not belong together."
        ) from None


_LAYER_MAP = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "inter",
    "output.dense": "out",
    "output.LayerNorm": "out_norm",
}
_NORMS = {"attn_norm", "out_norm", "embed_norm", "head_norm"}
#: Tensors of task heads and buffers that an embedding does not use.
_IGNORED_PREFIXES = ("bert.pooler.", "pooler.", "classifier.", "cls.seq_relationship.")
_IGNORED_NAMES = {"bert.embeddings.position_ids", "embeddings.position_ids"}


def _leaf(name: str, module: str, leaf: str, w: np.ndarray, out: dict, where: str) -> None:
    """Store one torch tensor under its NNX path (Linear weights transposed)."""
    if leaf in ("weight", "gamma"):
        if module.rsplit(".", 1)[-1] in _NORMS:
            out[f"{module}.scale"] = w
        else:
            out[f"{module}.kernel"] = np.ascontiguousarray(w.T)
    elif leaf in ("bias", "beta"):
        out[f"{module}.bias"] = w
    else:
        raise CheckpointError(f"{where}: unexpected tensor {name!r}.")


def _map_bert_weights(weights: Mapping[str, np.ndarray], cfg: BertConfig, where: str) -> dict:
    """PyTorch BERT state dict -> NNX paths of :class:`BertEncoder`."""
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
    out: dict[str, np.ndarray] = {}
    unexpected = []
    for name, w in weights.items():
        if name in _IGNORED_NAMES or name.startswith(_IGNORED_PREFIXES):
            continue
        w = float_weight(name, w, where)
        if name.startswith("cls.predictions."):
            rest = name[len("cls.predictions.") :]
            if not cfg.mlm_head:
                unexpected.append(name)
            elif rest in ("bias", "decoder.bias"):
                out["head_bias"] = w  # decoder.bias is the same tensor, tied to it
            elif rest == "decoder.weight":
                if not cfg.tie_word_embeddings:
                    out["head_decoder.kernel"] = np.ascontiguousarray(w.T)
                # tied: Hugging Face replaces it by the word embeddings; so do we
            elif rest.startswith("transform.dense."):
                _leaf(name, "head_transform", rest.rsplit(".", 1)[1], w, out, where)
            elif rest.startswith("transform.LayerNorm."):
                _leaf(name, "head_norm", rest.rsplit(".", 1)[1], w, out, where)
            else:
                unexpected.append(name)
            continue
        if not name.startswith(prefix):
            unexpected.append(name)
            continue
        body = name[len(prefix) :]
        if body.startswith("embeddings."):
            part = body[len("embeddings.") :]
            table = {
                "word_embeddings.weight": "word.embedding",
                "position_embeddings.weight": "position.embedding",
                "token_type_embeddings.weight": "token_type.embedding",
            }
            if part in table:
                out[table[part]] = w
            elif part.startswith("LayerNorm."):
                _leaf(name, "embed_norm", part.split(".", 1)[1], w, out, where)
            else:
                unexpected.append(name)
        elif body.startswith("encoder.layer."):
            idx, _, rest = body[len("encoder.layer.") :].partition(".")
            module, _, leaf = rest.rpartition(".")
            if not idx.isdigit() or module not in _LAYER_MAP:
                unexpected.append(name)
                continue
            _leaf(name, f"layers.{int(idx)}.{_LAYER_MAP[module]}", leaf, w, out, where)
        else:
            unexpected.append(name)
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected weight tensors for a BERT model: {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''}. Is this a BERT (Geneformer) checkpoint?"
        )
    return out


def bert_from_checkpoint(ckpt) -> BertEncoder:
    """Build a :class:`BertEncoder` from a :class:`diffbio_sc.io.Checkpoint` (Hugging Face layout).

    Raises ``ValueError`` naming the files for an unsupported configuration, missing
    or unexpected tensors and shape mismatches.
    """
    cfg = BertConfig.from_hf(ckpt.config, source=str(ckpt.config_file))
    has_head = any(k.startswith("cls.predictions.") for k in ckpt.weights)
    if cfg.mlm_head and not has_head:
        cfg = dataclasses.replace(cfg, mlm_head=False)
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    arrays = _map_bert_weights(ckpt.weights, cfg, where)
    return from_torch_weights(BertEncoder, cfg, arrays, where=where)
