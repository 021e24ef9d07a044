"""Caduceus (bidirectional Mamba DNA model, Ph and PS) as a Flax NNX module.

The computation follows kuleshov-group/caduceus ``modeling_caduceus.py`` and
``modeling_rcps.py`` with mamba_ssm 1.2.2's ``Mamba`` (``use_fast_path=False``),
``selective_scan_ref`` and ``rms_norm_ref``, in float32:

* token embeddings; **PS** (``rcps: true``): the RCPS embedding, the forward
  embedding of each token next to the channel-flipped embedding of its
  complement (``2 * d_model`` channels);
* ``n_layer`` blocks, Mamba's add -> norm -> mixer order: ``residual = x +
  residual``; ``x = mixer(norm(residual))``; the last residual sum is normed by
  ``norm_f``. PS applies norm and mixer to the forward half and, reverse
  complemented (positions and channels flipped), to the second half
  (``RCPSAddNormWrapper`` / ``RCPSWrapper``);
* the mixer is BiMamba: a Mamba mixer on the sequence plus a second one on the
  reversed sequence (flipped back), added (``bidirectional_strategy='add'``) or
  multiplied; with ``bidirectional_weight_tie`` the reverse mixer shares
  ``in_proj`` and ``out_proj`` with the forward one;
* Mamba: ``in_proj`` -> (x, z); causal depthwise ``conv1d`` and SiLU on x;
  ``x_proj`` -> (dt, B, C); ``dt = softplus(dt_proj(dt))``; the selective scan
  ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t``; ``y *
  silu(z)``; ``out_proj``. The whole mixer runs block after block of
  :data:`SCAN_CHUNK` positions (``jax.lax.scan``), carrying the convolution's
  last inputs and the scan state ``h`` from block to block, so no
  ``(L, d_inner)`` or ``(L, d_inner, d_state)`` array is ever held and memory is
  bounded by the block, not by the sequence. Within a block the scan is a
  parallel ``jax.lax.associative_scan`` on accelerators and a sequential loop
  over positions on a CPU (:data:`SCAN_METHOD`; about 2x faster there, same
  result within float32 rounding).

**Padding.** Upstream flips the whole padded array for the reverse direction
(and for PS's reverse-complement half), so the padding of a batch enters the
real positions. Here every reversal is done per row within its real length
(tokens ``!= [PAD]``, right padding), so a sequence's result is the same alone
and in a padded batch; on unpadded input this equals upstream exactly.

**fused_add_norm.** The published checkpoints were trained with mamba_ssm's
fused Triton add+norm (``fused_add_norm: true``). For Ph the fused and unfused
paths compute the same thing. For PS, upstream's fused ``RCPSMambaBlock``
normalises the halves of the residual sum in swapped order (the forward norm
reads the second half); that is reproduced when the config says
``fused_add_norm: true``; the unfused path (what runs on a CPU without Triton)
otherwise. Both are reverse-complement equivariant.

**Pooling** (:meth:`Caduceus.pool`): the mean of the last hidden layer over the
sequence's tokens (``[SEP]`` included, ``[PAD]`` excluded), as upstream's
``CaduceusForSequenceClassification(pooling_strategy='mean')``; for PS the two
strand halves are combined as upstream does, ``(fwd + flip(rc)) / 2`` channel-wise,
which makes the pooled vector exactly invariant to reverse complementing the input.
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

from ..io._checkpoints import CheckpointError
from ._base import ModelConfig, SavedModel, register_model
from ._bert import HIGHEST, config_field, float_weight, from_torch_weights

__all__ = ["CaduceusConfig", "Caduceus", "caduceus_from_checkpoint", "SCAN_CHUNK", "SCAN_METHOD"]

#: Positions per block of a Mamba mixer: inputs are processed block after block
#: with the convolution and scan states carried over, so the working memory is
#: that of one block whatever the sequence length.
SCAN_CHUNK = 256

#: How a block is scanned: ``'parallel'`` (``jax.lax.associative_scan``),
#: ``'sequential'`` (``jax.lax.scan`` over positions) or ``'auto'`` (sequential
#: on a CPU, where it is about 2x faster, parallel on accelerators).
SCAN_METHOD = "auto"

#: config.json ``model_type`` of Caduceus checkpoints.
CADUCEUS_MODEL_TYPE = "caduceus"


@dataclass(frozen=True)
class CaduceusConfig(ModelConfig):
    """Caduceus architecture (fields of upstream's ``CaduceusConfig`` and Mamba's ``ssm_cfg``).

    Parameters
    ----------
    vocab_size
        Embedding rows (upstream pads it to a multiple of ``pad_vocab_size_multiple``).
    d_model
        Model width (PS's hidden states carry ``2 * d_model`` channels).
    n_layers
        Number of BiMamba blocks (upstream ``n_layer``).
    d_state, d_conv, expand, dt_rank
        Mamba's state size, convolution width, inner expansion and ``dt`` rank.
    conv_bias, bias
        Whether the convolution, and ``in_proj``/``out_proj``, carry biases.
    rms_norm
        RMSNorm (True) or LayerNorm.
    norm_epsilon
        Norm epsilon.
    fused_add_norm
        Upstream's fused add+norm path (matters for PS only, see the module doc).
    bidirectional, bidirectional_strategy, bidirectional_weight_tie
        BiMamba settings (``'add'`` or ``'ew_multiply'``).
    rcps
        Reverse-complement parameter sharing (Caduceus-PS).
    complement_map
        Token id -> id of its complement, one entry per embedding row.
    pad_token_id
        ``[PAD]`` id (right padding; masked out of pooling and of the reversals).
    max_tokens
        Longest input in tokens (the tokenizer's ``model_max_length``).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    conv_bias: bool = True
    bias: bool = False
    rms_norm: bool = True
    norm_epsilon: float = 1e-5
    fused_add_norm: bool = False
    bidirectional: bool = True
    bidirectional_strategy: str = "add"
    bidirectional_weight_tie: bool = True
    rcps: bool = False
    complement_map: tuple = ()
    pad_token_id: int = 4
    max_tokens: int = 131_072

    @property
    def d_inner(self) -> int:
        """Mamba's inner width ``expand * d_model``."""
        return self.expand * self.d_model

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive(
            "vocab_size",
            "d_model",
            "n_layers",
            "d_state",
            "d_conv",
            "expand",
            "dt_rank",
            "max_tokens",
        )
        if self.bidirectional_strategy not in ("add", "ew_multiply"):
            raise ValueError(
                "CaduceusConfig: bidirectional_strategy must be 'add' or 'ew_multiply', got "
                f"{self.bidirectional_strategy!r}."
            )
        if self.rcps:
            cmap = list(self.complement_map)
            if len(cmap) != self.vocab_size or sorted(cmap) != list(range(self.vocab_size)):
                raise ValueError(
                    "CaduceusConfig: complement_map must map every one of the "
                    f"{self.vocab_size} token ids to a token id (a permutation), got {cmap!r}."
                )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"CaduceusConfig: pad_token_id {self.pad_token_id} outside the vocabulary."
            )

    @classmethod
    def from_hf(
        cls,
        cfg: Mapping[str, Any],
        *,
        pad_token_id: int,
        max_tokens: int,
        source: str = "config.json",
    ) -> CaduceusConfig:
        """Build from upstream's ``config.json``; refuse what this module does not run."""

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if cfg.get("model_type") != CADUCEUS_MODEL_TYPE:
            raise bad(f"model_type {cfg.get('model_type')!r} is not 'caduceus'.")
        ssm = cfg.get("ssm_cfg") or {}
        if not isinstance(ssm, Mapping):
            raise bad(f"ssm_cfg {ssm!r} is not an object.")
        try:
            d_model = config_field(cfg, "d_model", "int", source=source)
            vocab = config_field(cfg, "vocab_size", "int", source=source)
            multiple = config_field(cfg, "pad_vocab_size_multiple", "int", 8, source=source)
            if multiple > 0 and vocab % multiple:  # as upstream's Caduceus.__init__
                vocab += multiple - vocab % multiple
            dt_rank = ssm.get("dt_rank", "auto")
            if dt_rank == "auto":
                dt_rank = math.ceil(d_model / 16)
            elif isinstance(dt_rank, bool) or not isinstance(dt_rank, int):
                raise bad(f"ssm_cfg.dt_rank {dt_rank!r} is neither 'auto' nor an integer.")
            rcps = config_field(cfg, "rcps", "bool", False, source=source)
            cmap_doc = cfg.get("complement_map")
            cmap: tuple = ()
            if rcps:
                if not isinstance(cmap_doc, Mapping):
                    raise bad("rcps is true but complement_map is missing (token id -> id).")
                table = {}
                for k, v in cmap_doc.items():
                    if not str(k).isdigit() or isinstance(v, bool) or not isinstance(v, int):
                        raise bad(f"complement_map entry {k!r}: {v!r} is not token id -> id.")
                    table[int(k)] = v
                cmap = tuple(table.get(i, i) for i in range(vocab))
            strategy = cfg.get("bidirectional_strategy") or "add"
            return cls(
                vocab_size=vocab,
                d_model=d_model,
                n_layers=config_field(cfg, "n_layer", "int", source=source),
                d_state=config_field(ssm, "d_state", "int", 16, source=source + " ssm_cfg"),
                d_conv=config_field(ssm, "d_conv", "int", 4, source=source + " ssm_cfg"),
                expand=config_field(ssm, "expand", "int", 2, source=source + " ssm_cfg"),
                dt_rank=int(dt_rank),
                conv_bias=config_field(ssm, "conv_bias", "bool", True, source=source + " ssm_cfg"),
                bias=config_field(ssm, "bias", "bool", False, source=source + " ssm_cfg"),
                rms_norm=config_field(cfg, "rms_norm", "bool", True, source=source),
                norm_epsilon=config_field(cfg, "norm_epsilon", "float", 1e-5, source=source),
                fused_add_norm=config_field(cfg, "fused_add_norm", "bool", True, source=source),
                bidirectional=config_field(cfg, "bidirectional", "bool", True, source=source),
                bidirectional_strategy=strategy,
                bidirectional_weight_tie=config_field(
                    cfg, "bidirectional_weight_tie", "bool", True, source=source
                ),
                rcps=rcps,
                complement_map=cmap,
                pad_token_id=int(pad_token_id),
                max_tokens=int(max_tokens),
            )
        except CheckpointError:
            raise
        except KeyError as err:
            raise bad(f"the field {err.args[0]!r} is missing.") from None
        except (TypeError, ValueError) as err:
            raise bad(str(err)) from None


# ------------------------------------------------------------------ kernels


def row_reverse_index(lengths, width: int):
    """``(B, width)`` gather index reversing each row within its first ``lengths[b]`` positions.

    Positions at or past a row's length map to themselves (padding stays put),
    so reversing twice is the identity.
    """
    t = jnp.arange(width)[None, :]
    n = jnp.asarray(lengths)[:, None]
    return jnp.where(t < n, n - 1 - t, t)


def _gather_rows(x, index):
    # one gather per row with a (L,) index: take_along_axis with a broadcast (B, L, C)
    # index would build index arrays several times the size of x
    return jax.vmap(lambda row, i: jnp.take(row, i, axis=0))(x, index)


def _scan_block(h, u, dt, a, b, c, parallel: bool):
    """Run the selective scan over one block of positions from the state ``h``.

    ``h``: ``(n, N, d)``; ``u, dt``: ``(n, T, d)``; ``a``: ``(d, N)``; ``b, c``:
    ``(n, T, N)``. Returns the last state and ``y = C h`` ``(n, T, d)`` (without
    the ``D u`` skip). ``parallel``: ``jax.lax.associative_scan`` over the block
    (``O(log T)`` depth, for accelerators); otherwise a sequential ``jax.lax.scan``
    over its positions (fewer memory passes: faster on a CPU). Both hold
    ``(n, T, N, d)`` at most.
    """
    da = jnp.exp(dt[:, :, None, :] * a.T)  # (n, T, N, d)
    dbu = b[..., None] * (dt * u)[:, :, None, :]
    if parallel:

        def combine(left, right):
            a1, b1 = left
            a2, b2 = right
            return a1 * a2, a2 * b1 + b2

        acum, bcum = jax.lax.associative_scan(combine, (da, dbu), axis=1)
        hs = acum * h[:, None] + bcum
        y = jnp.einsum("nlkd,nlk->nld", hs, c, precision=HIGHEST)
        return hs[:, -1], y

    def step(state, xs):
        da_t, dbu_t = xs
        state = da_t * state + dbu_t
        return state, state

    # the states of the block are kept (T, n, N, d) and read out by one product:
    # cheaper on a CPU than a reduction inside every step
    h, hs = jax.lax.scan(step, h, (da.swapaxes(0, 1), dbu.swapaxes(0, 1)))
    return h, jnp.einsum("lnkd,nlk->nld", hs, c, precision=HIGHEST)


def _parallel_scan(method: str) -> bool:
    if method == "auto":
        return jax.default_backend() != "cpu"
    if method not in ("parallel", "sequential"):
        raise ValueError(f"scan method must be 'auto', 'parallel' or 'sequential', got {method!r}.")
    return method == "parallel"


def _blocks(v, n_blocks: int, size: int):
    """``(n, L, c)`` -> ``(n_blocks, n, size, c)``, zero-padded at the end."""
    extra = n_blocks * size - v.shape[1]
    if extra:
        v = jnp.pad(v, ((0, 0), (0, extra), (0, 0)))
    return v.reshape(v.shape[0], n_blocks, size, v.shape[-1]).swapaxes(0, 1)


def _unblocks(v, length: int):
    """Inverse of :func:`_blocks`: ``(n_blocks, n, size, c)`` -> ``(n, length, c)``."""
    n_blocks, n, size, width = v.shape
    return v.swapaxes(0, 1).reshape(n, n_blocks * size, width)[:, :length]


def selective_scan(u, dt, a, b, c, d, *, chunk: int = SCAN_CHUNK, method: str = "auto"):
    """Mamba's selective scan ``y_t = C_t h_t + D u_t``, ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``.

    ``u, dt``: ``(n, L, d)`` (``dt`` after softplus); ``a``: ``(d, N)`` (negative);
    ``b, c``: ``(n, L, N)``; ``d``: ``(d,)``. Blocks of ``chunk`` positions, the
    state ``(n, N, d)`` carried from block to block by ``jax.lax.scan``, so at most
    ``(n, chunk, N, d)`` is held at once; ``method``: how a block is scanned
    (``'parallel'``, ``'sequential'``, ``'auto'``: sequential on a CPU, see
    :func:`_scan_block`). The padding positions of the last block come after the
    real ones and cannot reach them (the scan is causal).
    """
    n, length, width = u.shape
    size = min(chunk, length)
    n_blocks = -(-length // size)
    parallel = _parallel_scan(method)

    def step(h, xs):
        return _scan_block(h, *xs[:2], a, *xs[2:], parallel)

    h0 = jnp.zeros((n, a.shape[1], width), u.dtype)
    _, ys = jax.lax.scan(step, h0, tuple(_blocks(v, n_blocks, size) for v in (u, dt, b, c)))
    return _unblocks(ys, length) + u * d


def _dense(n_in: int, n_out: int, bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, precision=HIGHEST, rngs=rngs)


class _Norm(nnx.Module):
    def __init__(self, dim: int, eps: float, rms: bool):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = None if rms else nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.eps, self.rms = eps, rms

    def __call__(self, x):
        if self.rms:  # mamba_ssm rms_norm_ref
            return (
                x
                * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
                * (self.weight[...])
            )
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class _Mamba(nnx.Module):
    """mamba_ssm 1.2.2 ``Mamba`` (slow path); ``in_proj``/``out_proj`` optional (weight tying)."""

    def __init__(self, cfg: CaduceusConfig, *, own_projections: bool, rngs: nnx.Rngs):
        di, r, k = cfg.d_inner, cfg.dt_rank, cfg.d_conv
        self.d_state, self.dt_rank, self.d_conv = cfg.d_state, r, k
        if own_projections:
            self.in_proj = _dense(cfg.d_model, 2 * di, cfg.bias, rngs)
            self.out_proj = _dense(di, cfg.d_model, cfg.bias, rngs)
        else:
            self.in_proj = self.out_proj = None
        self.conv_weight = nnx.Param(jnp.zeros((k, di), jnp.float32))  # torch (di, 1, k)
        self.conv_bias = nnx.Param(jnp.zeros((di,), jnp.float32)) if cfg.conv_bias else None
        self.x_proj = _dense(di, r + 2 * cfg.d_state, False, rngs)
        self.dt_proj = _dense(r, di, True, rngs)
        self.A_log = nnx.Param(jnp.zeros((di, cfg.d_state), jnp.float32))
        self.D = nnx.Param(jnp.ones((di,), jnp.float32))

    def __call__(
        self, x, in_proj, out_proj, *, chunk: int | None = None, method: str | None = None
    ):
        """Apply the mixer to ``x`` ``(n, L, d_model)``, block after block of ``chunk`` positions.

        Every step is per position except the causal convolution and the scan, whose
        states (the last ``d_conv - 1`` convolution inputs and ``h``) are carried
        from block to block, so nothing of size ``(L, d_inner)`` is ever held: the
        working memory is that of one block. ``chunk`` and ``method`` default to
        :data:`SCAN_CHUNK` and :data:`SCAN_METHOD` (read at trace time).
        """
        n, length, _ = x.shape
        size = min(chunk or SCAN_CHUNK, length)
        n_blocks = -(-length // size)
        parallel = _parallel_scan(method or SCAN_METHOD)
        k = self.d_conv
        w = self.conv_weight[...]
        conv_bias = None if self.conv_bias is None else self.conv_bias[...]
        a = -jnp.exp(self.A_log[...])
        skip = self.D[...]

        def step(carry, xb):
            tail, h = carry  # (n, k - 1, d_inner) conv inputs before the block; (n, N, d_inner)
            xs, z = jnp.split(in_proj(xb), 2, axis=-1)
            padded = jnp.concatenate([tail, xs], axis=1)  # causal depthwise convolution
            conv = sum(padded[:, j : j + size] * w[j] for j in range(k))
            if conv_bias is not None:
                conv = conv + conv_bias
            u = jax.nn.silu(conv)
            dt, b, c = jnp.split(
                self.x_proj(u), [self.dt_rank, self.dt_rank + self.d_state], axis=-1
            )
            dt = jax.nn.softplus(self.dt_proj(dt))
            h, y = _scan_block(h, u, dt, a, b, c, parallel)
            y = (y + u * skip) * jax.nn.silu(z)
            return (padded[:, size:], h), out_proj(y)

        d_inner = w.shape[1]
        carry = (
            jnp.zeros((n, k - 1, d_inner), x.dtype),
            jnp.zeros((n, self.d_state, d_inner), x.dtype),
        )
        _, out = jax.lax.scan(step, carry, _blocks(x, n_blocks, size))
        return _unblocks(out, length)


class _BiMamba(nnx.Module):
    def __init__(self, cfg: CaduceusConfig, *, rngs: nnx.Rngs):
        self.mamba_fwd = _Mamba(cfg, own_projections=True, rngs=rngs)
        self.tied = cfg.bidirectional_weight_tie
        self.strategy = cfg.bidirectional_strategy
        self.mamba_rev = (
            _Mamba(cfg, own_projections=not self.tied, rngs=rngs) if cfg.bidirectional else None
        )

    def __call__(self, x, rev_index):
        f = self.mamba_fwd
        out = f(x, f.in_proj, f.out_proj)
        if self.mamba_rev is None:
            return out
        r = self.mamba_rev
        inp, outp = (f.in_proj, f.out_proj) if self.tied else (r.in_proj, r.out_proj)
        back = _gather_rows(r(_gather_rows(x, rev_index), inp, outp), rev_index)
        return out + back if self.strategy == "add" else out * back


class _Block(nnx.Module):
    def __init__(self, cfg: CaduceusConfig, *, rngs: nnx.Rngs):
        self.norm = _Norm(cfg.d_model, cfg.norm_epsilon, cfg.rms_norm)
        self.mixer = _BiMamba(cfg, rngs=rngs)


def _flip_channels(x):
    return x[..., ::-1]


@register_model("caduceus")
class Caduceus(SavedModel):
    """Caduceus backbone (Ph or PS) equal to upstream's ``Caduceus`` on unpadded input.

    Built from a :class:`CaduceusConfig` and ``nnx.Rngs`` (random initial values;
    :func:`caduceus_from_checkpoint` loads published weights). See the module doc
    for the computation, the padding rule and the pooling.
    """

    config_class = CaduceusConfig

    def __init__(self, config: CaduceusConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        width = config.d_model
        self.embed = nnx.Embed(config.vocab_size, width, rngs=rngs)
        self.layers = nnx.List([_Block(config, rngs=rngs) for _ in range(config.n_layers)])
        self.norm_f = _Norm(width, config.norm_epsilon, config.rms_norm)

    # -- pieces ----------------------------------------------------------
    def _embed(self, ids):
        x = self.embed(ids)
        if not self.config.rcps:
            return x
        complement = jnp.asarray(np.asarray(self.config.complement_map, np.int32))
        rc = _flip_channels(self.embed(complement[ids]))
        return jnp.concatenate([x, rc], axis=-1)

    def _norm(self, norm, z):
        if not self.config.rcps:
            return norm(z)
        d = self.config.d_model
        return jnp.concatenate(
            [norm(z[..., :d]), _flip_channels(norm(_flip_channels(z[..., d:])))], axis=-1
        )

    def _mix(self, mixer, x, rev_index):
        if not self.config.rcps:
            return mixer(x, rev_index)
        d, n = self.config.d_model, x.shape[0]
        # RCPSWrapper: the mixer on the forward half and on the reverse complement of the
        # second half (positions reversed within each row's length, channels flipped)
        rc = _flip_channels(_gather_rows(x[..., d:], rev_index))
        both = mixer(jnp.concatenate([x[..., :d], rc]), jnp.concatenate([rev_index, rev_index]))
        back = _flip_channels(_gather_rows(both[n:], rev_index))
        return jnp.concatenate([both[:n], back], axis=-1)

    def hidden_states(self, input_ids) -> list:
        """Return the embeddings, each block's mixer output and the final normed state.

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id``. Returns
        ``n_layers + 1`` arrays ``(B, L, C)`` (``C = d_model``, PS ``2 * d_model``):
        the first ``n_layers`` are upstream's ``output_hidden_states`` (the input
        of every block), the last its ``last_hidden_state`` (after ``norm_f``).
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        if ids.shape[1] > cfg.max_tokens:
            raise ValueError(
                f"inputs of {ids.shape[1]} tokens exceed the model's context of "
                f"{cfg.max_tokens} tokens."
            )
        lengths = jnp.sum(ids != cfg.pad_token_id, axis=1)
        rev_index = row_reverse_index(lengths, ids.shape[1])
        x = self._embed(ids)
        d = cfg.d_model
        # the blocks run as one jax.lax.scan over their stacked weights, so every block
        # reuses the same buffers (unrolled, XLA kept about two (L, C) arrays per block)
        graphdef, _ = nnx.split(self.layers[0])
        stacked = jax.tree.map(
            lambda *w: jnp.stack(w), *[nnx.split(layer)[1] for layer in self.layers]
        )

        def block(carry, weights):
            x, residual = carry
            layer = nnx.merge(graphdef, weights)
            residual = x + residual  # the first block's residual is x + 0 = x
            if cfg.rcps and cfg.fused_add_norm:  # upstream's fused RCPS block swaps halves
                residual = jnp.concatenate([residual[..., d:], residual[..., :d]], axis=-1)
            x = self._mix(layer.mixer, self._norm(layer.norm, residual), rev_index)
            return (x, residual), x

        (x, residual), outs = jax.lax.scan(block, (x, jnp.zeros_like(x)), stacked)
        states = [self._embed(ids)] + [outs[i] for i in range(cfg.n_layers - 1)]
        states.append(self._norm(self.norm_f, x + residual))
        return states

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def pool(self, input_ids, states):
        """Sequence embedding ``(B, d_model)``: mean of ``states`` over non-padding tokens.

        PS: ``(fwd + flip(rc)) / 2`` of the pooled halves (upstream's strand
        conjoining), exactly invariant to reverse complementing the sequence.
        """
        keep = (jnp.asarray(input_ids) != self.config.pad_token_id).astype(states.dtype)
        total = jnp.einsum("bl,blh->bh", keep, states, precision=HIGHEST)
        mean = total / jnp.maximum(keep.sum(axis=1), 1.0)[:, None]
        if not self.config.rcps:
            return mean
        d = self.config.d_model
        return 0.5 * (mean[:, :d] + _flip_channels(mean[:, d:]))


# ------------------------------------------------------------------ weights

_MAMBA_LEAVES = {
    "in_proj.weight": "in_proj.kernel",
    "in_proj.bias": "in_proj.bias",
    "out_proj.weight": "out_proj.kernel",
    "out_proj.bias": "out_proj.bias",
    "x_proj.weight": "x_proj.kernel",
    "dt_proj.weight": "dt_proj.kernel",
    "dt_proj.bias": "dt_proj.bias",
    "conv1d.weight": "conv_weight",
    "conv1d.bias": "conv_bias",
    "A_log": "A_log",
    "D": "D",
}
_TIED = ("in_proj.weight", "in_proj.bias", "out_proj.weight", "out_proj.bias")
#: Buffers and the (tied) LM head an embedding does not use.
_IGNORED_SUFFIXES = ("complement_map",)
_IGNORED_PREFIXES = ("lm_head.",)


def _strip(name: str) -> str:
    for prefix in ("caduceus.", "backbone."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _map_caduceus_weights(
    weights: Mapping[str, np.ndarray], cfg: CaduceusConfig, where: str = "checkpoint"
) -> dict:
    """Upstream state dict -> NNX paths of :class:`Caduceus`; unknown names kept as-is.

    Accepts ``Caduceus`` and ``CaduceusForMaskedLM`` names, PS's ``submodule.``
    wrappers (unfused) or plain norms (fused), and the reverse mixer's tied
    projections either present (equal to the forward ones) or absent.
    """
    out: dict[str, np.ndarray] = {}
    tied_copies: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if name.endswith(_IGNORED_SUFFIXES) or name.startswith(_IGNORED_PREFIXES):
            continue
        body = _strip(name).replace(".submodule.", ".")
        if body.startswith("norm_f.submodule."):
            body = "norm_f." + body[len("norm_f.submodule.") :]
        target = None
        if body in (
            "embeddings.word_embeddings.weight",
            "embeddings.word_embeddings.embedding.weight",
        ):
            target = "embed.embedding"
        elif body in ("norm_f.weight", "norm_f.bias"):
            target = body
        elif body.startswith("layers."):
            idx, _, rest = body[len("layers.") :].partition(".")
            if idx.isdigit() and rest in ("norm.weight", "norm.bias"):
                target = f"layers.{int(idx)}.{rest}"
            elif idx.isdigit() and rest.startswith(("mixer.mamba_fwd.", "mixer.mamba_rev.")):
                which, _, leaf = rest[len("mixer.") :].partition(".")
                if leaf in _MAMBA_LEAVES:
                    target = f"layers.{int(idx)}.mixer.{which}.{_MAMBA_LEAVES[leaf]}"
                    if which == "mamba_rev" and cfg.bidirectional_weight_tie and leaf in _TIED:
                        tied_copies[target.replace("mamba_rev", "mamba_fwd")] = w
                        continue
        if target is None:
            out[name] = w
            continue
        w = float_weight(name, w, where)
        if target.endswith(".kernel"):
            w = np.ascontiguousarray(w.T)
        elif target.endswith("conv_weight") and w.ndim == 3:  # (d_inner, 1, k) -> (k, d_inner)
            w = np.ascontiguousarray(w[:, 0, :].T)
        out[target] = w
    for target, w in tied_copies.items():
        mine = out.get(target)
        w = float_weight(target, w, where)
        w = np.ascontiguousarray(w.T) if target.endswith(".kernel") else w
        if mine is not None and (mine.shape != w.shape or not np.array_equal(mine, w)):
            raise CheckpointError(
                f"{where}: {target.replace('mamba_fwd', 'mamba_rev')} differs from the forward "
                "mixer's, but the config ties them (bidirectional_weight_tie: true)."
            )
    return out


def caduceus_from_checkpoint(ckpt, *, pad_token_id: int, max_tokens: int) -> Caduceus:
    """Build a :class:`Caduceus` from a :class:`diffbio_sc.io.Checkpoint` (upstream layout).

    Raises :class:`~diffbio_sc.io.CheckpointError` naming the file and field for an
    unsupported configuration, and one :class:`~diffbio_sc.models.ModelFormatError`
    naming every missing, unexpected and mis-shaped tensor.
    """
    cfg = CaduceusConfig.from_hf(
        ckpt.config,
        pad_token_id=pad_token_id,
        max_tokens=max_tokens,
        source=str(ckpt.config_file),
    )
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    arrays = _map_caduceus_weights(ckpt.weights, cfg, where)
    model = from_torch_weights(Caduceus, cfg, arrays, where=where)
    return model
