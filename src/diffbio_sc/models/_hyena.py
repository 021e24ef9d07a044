"""A Flax NNX HyenaDNA equal to the ``LongSafari/hyenadna-*-hf`` checkpoints' ``HyenaDNAModel``.

The computation follows the checkpoints' remote ``modeling_hyena.py`` in float32:

* token embeddings (the table padded to a multiple of ``pad_vocab_size_multiple``);
* ``n_layer`` blocks ``r = x + mixer(LN1(x))``, ``out = r + mlp(LN2(r))`` (the
  residual is taken before each LayerNorm, as upstream's ``HyenaBlock``); the MLP is
  ``fc2(gelu_tanh(fc1(.)))``;
* the Hyena operator (order 2): ``in_proj`` to ``3 d`` channels, a causal depthwise
  convolution of width 3 (upstream's ``Conv1d(padding=2)`` cut to the input
  length), split into ``x0, x1, v``; ``v = v * x1``; a causal long convolution of
  ``v`` with the implicit filter, computed with real FFTs of a length
  ``>= 2 L`` (cost ``O(L log L)``), plus ``v * bias``; ``y = v * x0``; ``out_proj``;
* the implicit filter: positional features ``z = [t, cos(-f w), sin(-f w)]`` of
  the positions ``0..L-1`` of a table of ``max_seq_len`` rows, an MLP
  (``Linear -> sin(freq .)``, ``num_inner_mlps`` more such pairs sharing one
  ``freq``, then ``Linear`` without bias to ``d_model``) and the exponential
  modulation ``h * (exp(-t |deltas|) + 0.05)``;
* a final LayerNorm (``layer_norm_epsilon``; the blocks' LayerNorms use 1e-5, as
  upstream's ``nn.LayerNorm`` defaults).

:meth:`HyenaDNA.hidden_states` returns upstream's ``output_hidden_states`` list:
the embeddings, each block's output, and the final LayerNorm's output
(``n_layer + 2`` arrays). The model is causal: a position only sees earlier ones,
so right padding never changes the real positions' states, and no attention
mask is needed. The positional tables (``z``, ``t``, ``deltas``), upstream's
buffers, are computed from the config (``torch.linspace``'s float32 rule, equal to
upstream's to float32 rounding); where a checkpoint carries them they are checked
against that computation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..io._checkpoints import CheckpointError
from ._base import ModelConfig, ModelFormatError, SavedModel, register_model
from ._bert import HIGHEST, config_field, float_weight, from_torch_weights

__all__ = ["HyenaConfig", "HyenaDNA", "hyena_from_checkpoint", "is_hyena_config"]

#: Upstream's ``HyenaExponentialModulation`` defaults.
_FAST_DECAY, _SLOW_DECAY, _TARGET, _SHIFT = 0.3, 1.5, 1e-2, 0.05
#: Width of the short causal convolution (upstream pads by 2, so only 3 is causal).
_SHORT = 3


def is_hyena_config(cfg: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` is a HyenaDNA one (``model_type`` ``'hyenadna'``)."""
    return cfg.get("model_type") == "hyenadna"


@dataclass(frozen=True)
class HyenaConfig(ModelConfig):
    """Architecture of a HyenaDNA checkpoint (fields of its ``config.json``).

    Parameters
    ----------
    vocab_size
        Rows of the embedding table (``config.json``'s ``vocab_size`` rounded up to a
        multiple of ``pad_vocab_size_multiple``, as upstream builds it).
    d_model, n_layer, d_inner
        Width, blocks and MLP width.
    max_seq_len
        Context in tokens (the positional table's rows; longer inputs are refused).
    emb_dim
        Positional features of the implicit filter (odd, >= 3).
    filter_order
        Width of the implicit filter's MLP.
    num_inner_mlps
        Hidden ``Linear -> sin`` pairs of the filter MLP after the first.
    activation_freq
        Initial / fixed frequency of the filter's ``sin``.
    train_freq
        Whether ``freq`` is a checkpoint tensor (else ``activation_freq`` is used).
    layer_norm_epsilon
        Epsilon of the final LayerNorm.
    pad_token_id
        ``[PAD]`` id (what inputs are right-padded with; excluded from pooling).
    """

    vocab_size: int
    d_model: int
    n_layer: int
    d_inner: int
    max_seq_len: int
    emb_dim: int = 3
    filter_order: int = 64
    num_inner_mlps: int = 2
    activation_freq: float = 1.0
    train_freq: bool = True
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int = 4

    @property
    def n_layers(self) -> int:
        """Number of Hyena blocks (``n_layer``)."""
        return self.n_layer

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid."""
        self._require_positive(
            "vocab_size", "d_model", "n_layer", "d_inner", "max_seq_len", "filter_order"
        )
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"HyenaConfig: emb_dim must be odd and >= 3, got {self.emb_dim}.")
        if self.num_inner_mlps < 0:
            raise ValueError(
                f"HyenaConfig: num_inner_mlps must be >= 0, got {self.num_inner_mlps}."
            )
        if self.max_seq_len < 2:
            raise ValueError(f"HyenaConfig: max_seq_len must be >= 2, got {self.max_seq_len}.")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(
                f"HyenaConfig: layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"HyenaConfig: pad_token_id {self.pad_token_id} outside the vocabulary."
            )

    @classmethod
    def from_hf(
        cls, cfg: Mapping[str, Any], *, pad_token_id: int = 4, source: str = "config.json"
    ) -> HyenaConfig:
        """Build from a HyenaDNA ``config.json``; refuse what upstream's code would not run.

        ``pad_token_id`` is the tokenizer's ``[PAD]`` id (4 in upstream's tokenizer).

        Raises :class:`~diffbio_sc.io.CheckpointError` naming ``source`` and the field
        (a Hyena order other than 2 or a short filter other than 3: upstream's
        ``modeling_hyena.py`` only runs those).
        """

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if not is_hyena_config(cfg):
            raise bad(f"model_type {cfg.get('model_type')!r} is not 'hyenadna'.")
        try:
            order = config_field(cfg, "hyena_order", "int", 2, source=source)
            if order != 2:
                raise bad(
                    f"hyena_order {order} is not supported: upstream's modelling code reshapes "
                    "the filter for order 2 only."
                )
            short = config_field(cfg, "short_filter_order", "int", _SHORT, source=source)
            if short != _SHORT:
                raise bad(
                    f"short_filter_order {short} is not supported: upstream pads its short "
                    "convolution by 2, which is causal for width 3 only."
                )
            size = config_field(cfg, "vocab_size", "int", 12, source=source)
            multiple = config_field(cfg, "pad_vocab_size_multiple", "int", 8, source=source)
            if multiple < 1:
                raise bad(f"pad_vocab_size_multiple must be >= 1, got {multiple}.")
            d_model = config_field(cfg, "d_model", "int", 256, source=source)
            # defaults: upstream's HyenaConfig.__init__
            return cls(
                vocab_size=-(-size // multiple) * multiple,
                d_model=d_model,
                n_layer=config_field(cfg, "n_layer", "int", 12, source=source),
                d_inner=config_field(cfg, "d_inner", "int", 4 * d_model, source=source),
                max_seq_len=config_field(cfg, "max_seq_len", "int", 1024, source=source),
                emb_dim=config_field(cfg, "emb_dim", "int", 3, source=source),
                filter_order=config_field(cfg, "filter_order", "int", 64, source=source),
                num_inner_mlps=config_field(cfg, "num_inner_mlps", "int", 2, source=source),
                activation_freq=float(
                    config_field(cfg, "activation_freq", "float", 1.0, source=source)
                ),
                train_freq=config_field(cfg, "train_freq", "bool", True, source=source),
                layer_norm_epsilon=float(
                    config_field(cfg, "layer_norm_epsilon", "float", 1e-5, source=source)
                ),
                pad_token_id=pad_token_id,
            )
        except CheckpointError:
            raise
        except (TypeError, ValueError) as err:
            raise bad(str(err)) from None


# ------------------------------------------------------------------ positional tables


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32, by torch's CPU rule.

    Torch fills the first half as ``start + i * step`` and the second as
    ``end - (steps - 1 - i) * step`` (float32 arithmetic); the table agrees with
    upstream's buffers to float32 rounding (a few values differ by one ulp, from
    torch's vectorised kernel).
    """
    if steps == 1:
        return np.asarray([start], np.float32)
    s, e = np.float32(start), np.float32(end)
    step = np.float32((e - s) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float32)
    half = steps // 2
    out = np.where(
        np.arange(steps) < half,
        s + i * step,
        e - np.float32(steps - 1 - np.arange(steps)).astype(np.float32) * step,
    )
    return out.astype(np.float32)


@functools.lru_cache(maxsize=8)
def positional_tables(config: HyenaConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z`` ``(max_seq_len, emb_dim)``, ``t`` ``(max_seq_len, 1)``, ``deltas`` ``(d_model,)``.

    Upstream's ``HyenaPositionalEmbedding`` and ``HyenaExponentialModulation`` buffers.
    """
    n = config.max_seq_len
    bands = (config.emb_dim - 1) // 2
    t = torch_linspace(0.0, 1.0, n)[:, None]
    t_rescaled = torch_linspace(0.0, n - 1, n)[:, None]
    w = (np.float32(2 * math.pi) * t_rescaled / np.float32(n)).astype(np.float32)
    f = torch_linspace(1e-4, bands - 1, bands)[None, :]
    fw = (-f * w).astype(np.float32)
    z = np.concatenate([t, np.cos(fw), np.sin(fw)], axis=-1).astype(np.float32)
    max_decay = math.log(_TARGET) / _FAST_DECAY
    min_decay = math.log(_TARGET) / _SLOW_DECAY
    deltas = torch_linspace(min_decay, max_decay, config.d_model)
    for table in (z, t, deltas):
        table.setflags(write=False)  # cached and shared
    return z, t, deltas


def fft_size(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (FFTs of such sizes are fast; ``>= 2L`` keeps them linear)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


#: Channels per FFT block and positions per MLP block: long inputs run in blocks
#: (``jax.lax.map``) so that the FFT and MLP temporaries of a 131k-token input stay a
#: fraction of the activations. Each channel / position is computed alone either way.
CHANNEL_BLOCK = 32
POSITION_BLOCK = 8192


def _fft_conv(u, k, bias):
    length = u.shape[-1]
    n = fft_size(2 * length)
    y = jnp.fft.irfft(jnp.fft.rfft(u, n=n) * jnp.fft.rfft(k, n=n)[None], n=n)[..., :length]
    return y + u * bias[None, :, None]


def long_conv(u, k, bias):
    """Causal convolution of ``u`` ``(B, C, L)`` with filters ``k`` ``(C, L)``, plus ``u * bias``.

    ``y[t] = sum_{s <= t} k[s] u[t - s] + bias u[t]`` per channel, via real FFTs of
    a fast length ``>= 2 L`` (upstream uses exactly ``2 L``; any length ``>= 2 L - 1``
    gives the same linear convolution), in blocks of :data:`CHANNEL_BLOCK` channels.
    """
    b, c, length = u.shape
    if c <= CHANNEL_BLOCK or c % CHANNEL_BLOCK:
        return _fft_conv(u, k, bias)
    nb = c // CHANNEL_BLOCK
    ub = u.reshape(b, nb, CHANNEL_BLOCK, length).swapaxes(0, 1)
    kb = k.reshape(nb, CHANNEL_BLOCK, length)
    bb = bias.reshape(nb, CHANNEL_BLOCK)
    y = jax.lax.map(lambda a: _fft_conv(*a), (ub, kb, bb))
    return y.swapaxes(0, 1).reshape(b, c, length)


def by_positions(fn, x):
    """``fn`` applied to ``x`` ``(B, L, d)`` in blocks of :data:`POSITION_BLOCK` positions.

    ``fn`` must treat positions independently (LayerNorm, MLP); short inputs run whole.
    """
    b, length, d = x.shape
    if length <= POSITION_BLOCK:
        return fn(x)
    nb = -(-length // POSITION_BLOCK)
    padded = jnp.pad(x, ((0, 0), (0, nb * POSITION_BLOCK - length), (0, 0)))
    blocks = padded.reshape(b, nb, POSITION_BLOCK, d).swapaxes(0, 1)
    y = jax.lax.map(fn, blocks)
    return y.swapaxes(0, 1).reshape(b, nb * POSITION_BLOCK, -1)[:, :length]


# ------------------------------------------------------------------ modules


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, precision=HIGHEST, rngs=rngs)


def _norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


class _HyenaOperator(nnx.Module):
    def __init__(self, cfg: HyenaConfig, *, rngs: nnx.Rngs):
        d = cfg.d_model
        self.d = d
        self.train_freq = cfg.train_freq
        self.activation_freq = cfg.activation_freq
        self.in_proj = _linear(d, 3 * d, rngs)
        self.out_proj = _linear(d, d, rngs)
        self.short_weight = nnx.Param(jnp.zeros((3 * d, _SHORT), jnp.float32))
        self.short_bias = nnx.Param(jnp.zeros((3 * d,), jnp.float32))
        self.filter_bias = nnx.Param(jnp.zeros((d,), jnp.float32))
        widths = [cfg.emb_dim] + [cfg.filter_order] * (cfg.num_inner_mlps + 1)
        self.filter_mlp = nnx.List(
            [_linear(a, b, rngs) for a, b in zip(widths, widths[1:], strict=False)]
        )
        self.filter_out = _linear(cfg.filter_order, d, rngs, bias=False)
        if cfg.train_freq:
            self.freq = nnx.Param(jnp.full((1, cfg.filter_order), cfg.activation_freq, jnp.float32))

    def implicit_filter(self, z, t, deltas):
        """Return the filters ``(d_model, L)`` of the positional features ``z`` ``(L, emb_dim)``."""
        freq = self.freq[...] if self.train_freq else self.activation_freq
        h = z
        for layer in self.filter_mlp:
            h = jnp.sin(freq * layer(h))
        h = self.filter_out(h)
        h = h * (jnp.exp(-t * jnp.abs(deltas)[None, :]) + _SHIFT)
        return h.T

    def __call__(self, u, z, t, deltas):
        b, length, _ = u.shape
        p = self.in_proj(u)  # (B, L, 3d)
        w = self.short_weight[...]
        padded = jnp.pad(p, ((0, 0), (_SHORT - 1, 0), (0, 0)))
        uc = self.short_bias[...] + sum(w[:, j] * padded[:, j : j + length] for j in range(_SHORT))
        x0, x1, v = uc[..., : self.d], uc[..., self.d : 2 * self.d], uc[..., 2 * self.d :]
        v = (v * x1).transpose(0, 2, 1)  # (B, d, L)
        k = self.implicit_filter(z, t, deltas)
        v = long_conv(v, k, self.filter_bias[...])
        y = v.transpose(0, 2, 1) * x0
        return self.out_proj(y)


class _HyenaBlock(nnx.Module):
    def __init__(self, cfg: HyenaConfig, *, rngs: nnx.Rngs):
        self.norm1 = _norm(cfg.d_model, 1e-5, rngs)
        self.mixer = _HyenaOperator(cfg, rngs=rngs)
        self.norm2 = _norm(cfg.d_model, 1e-5, rngs)
        self.fc1 = _linear(cfg.d_model, cfg.d_inner, rngs)
        self.fc2 = _linear(cfg.d_inner, cfg.d_model, rngs)

    def _mlp(self, r):
        return self.fc2(jax.nn.gelu(self.fc1(self.norm2(r)), approximate=True))

    def __call__(self, x, z, t, deltas):
        r = x + self.mixer(self.norm1(x), z, t, deltas)
        return r + by_positions(self._mlp, r)


@register_model("hyenadna")
class HyenaDNA(SavedModel):
    """HyenaDNA equal to the Hugging Face checkpoints' ``HyenaDNAModel`` (module docstring).

    Parameters
    ----------
    config
        A :class:`HyenaConfig`.
    rngs
        ``nnx.Rngs`` for initialisation (weights are normally loaded with
        :func:`hyena_from_checkpoint`).
    """

    config_class = HyenaConfig

    def __init__(self, config: HyenaConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        self.layers = nnx.List([_HyenaBlock(cfg, rngs=rngs) for _ in range(cfg.n_layer)])
        self.ln_f = _norm(cfg.d_model, cfg.layer_norm_epsilon, rngs)

    def hidden_states(self, input_ids) -> list:
        """Return the embeddings, every block's output and the final LayerNorm's output.

        ``input_ids``: ``(B, L)`` int, right-padded with ``pad_token_id``; ``L`` at
        most ``max_seq_len``. Returns ``n_layer + 2`` arrays ``(B, L, d_model)``, as
        upstream's ``output_hidden_states``.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        length = ids.shape[1]
        if length > cfg.max_seq_len:
            raise ValueError(
                f"inputs of {length} tokens exceed the model's context of {cfg.max_seq_len} tokens."
            )
        z, t, deltas = positional_tables(cfg)  # cached per config
        z, t, deltas = jnp.asarray(z[:length]), jnp.asarray(t[:length]), jnp.asarray(deltas)
        x = self.embed(ids)
        states = [x]
        for layer in self.layers:
            x = layer(x, z, t, deltas)
            states.append(x)
        states.append(self.ln_f(x))
        return states

    def __call__(self, input_ids) -> list:
        """All hidden states (see :meth:`hidden_states`)."""
        return self.hidden_states(input_ids)

    def pool(self, input_ids, states):
        """Mean of ``states`` ``(B, L, d)`` over each row's real tokens (``ids != [PAD]``).

        The real tokens are the sequence's characters and its ``[SEP]``; padding
        sits right of them and, the model being causal, does not change them.
        """
        keep = (jnp.asarray(input_ids) != self.config.pad_token_id).astype(states.dtype)
        total = jnp.einsum("bl,blh->bh", keep, states, precision=HIGHEST)
        return total / jnp.maximum(keep.sum(axis=1), 1.0)[:, None]


# ------------------------------------------------------------------ weights

#: Task heads an embedding does not use.
_IGNORED_PREFIXES = ("lm_head.", "score.", "head.")
_BLOCK_MAP = {
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "fc1",
    "mlp.fc2": "fc2",
    "mixer.in_proj": "mixer.in_proj",
    "mixer.out_proj": "mixer.out_proj",
}
_NORMS = ("norm1", "norm2")


def _map_hyena_weights(
    weights: Mapping[str, np.ndarray], cfg: HyenaConfig, where: str
) -> tuple[dict, list[str]]:
    """Upstream state dict -> NNX paths of :class:`HyenaDNA`, and the buffer problems.

    Unknown names are kept as they are (so they are reported as unexpected).
    The positional buffers, where present, are compared with
    :func:`positional_tables`; a difference is a problem naming the tensor.
    """
    prefix = "hyena." if any(k.startswith("hyena.") for k in weights) else ""
    z, t, deltas = positional_tables(cfg)
    buffers = {"pos_emb.z": z[None], "pos_emb.t": t[None], "modulation.deltas": deltas[None, None]}
    n_mlp = cfg.num_inner_mlps + 1
    out: dict[str, np.ndarray] = {}
    problems: list[str] = []
    freqs: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, w in weights.items():
        body = name[len(prefix) :] if name.startswith(prefix) else name
        if body.startswith(_IGNORED_PREFIXES) or name.startswith(_IGNORED_PREFIXES):
            continue
        w = float_weight(name, w, where)
        target = None
        if body == "backbone.embeddings.word_embeddings.weight":
            target = "embed.embedding"
        elif body in ("backbone.ln_f.weight", "backbone.ln_f.bias"):
            target = "ln_f." + ("scale" if body.endswith("weight") else "bias")
        elif body.startswith("backbone.layers."):
            idx, _, rest = body[len("backbone.layers.") :].partition(".")
            if not idx.isdigit():
                out[name] = w
                continue
            i = int(idx)
            sub, _, leaf = rest.rpartition(".")
            pre = f"layers.{i}."
            if sub in _BLOCK_MAP and leaf in ("weight", "bias"):
                mod = _BLOCK_MAP[sub]
                if leaf == "bias":
                    target = pre + mod + ".bias"
                elif mod in _NORMS:
                    target = pre + mod + ".scale"
                else:
                    target = pre + mod + ".kernel"
                    w = np.ascontiguousarray(w.T) if w.ndim == 2 else w
            elif rest == "mixer.short_filter.weight":
                target = pre + "mixer.short_weight"
                w = w[:, 0, :] if w.ndim == 3 and w.shape[1] == 1 else w
            elif rest == "mixer.short_filter.bias":
                target = pre + "mixer.short_bias"
            elif rest == "mixer.filter_fn.bias":
                target = pre + "mixer.filter_bias"
            elif rest.startswith("mixer.filter_fn.implicit_filter."):
                j, _, leaf = rest[len("mixer.filter_fn.implicit_filter.") :].partition(".")
                if j.isdigit() and int(j) % 2 == 1 and leaf == "freq":
                    freqs.setdefault(i, []).append((name, w))
                    continue
                if j.isdigit() and int(j) % 2 == 0 and leaf in ("weight", "bias"):
                    pos = int(j) // 2
                    mod = f"mixer.filter_mlp.{pos}" if pos < n_mlp else "mixer.filter_out"
                    if pos > n_mlp:
                        mod = f"mixer.implicit_filter.{j}"
                    target = pre + mod + (".bias" if leaf == "bias" else ".kernel")
                    if leaf == "weight" and w.ndim == 2:
                        w = np.ascontiguousarray(w.T)
            elif rest.startswith("mixer.filter_fn.") and rest.split(".", 2)[-1] in buffers:
                key = rest.split(".", 2)[-1]
                want = buffers[key]
                if w.shape != want.shape:
                    problems.append(f"buffer {name!r} has shape {w.shape}, expected {want.shape}")
                elif not np.allclose(w, want, rtol=1e-4, atol=1e-5):
                    err = float(np.max(np.abs(w - want)))
                    problems.append(
                        f"buffer {name!r} differs from the table computed from the config "
                        f"(largest difference {err:.3g})"
                    )
                continue
        out[target if target is not None else name] = w
    for i, items in sorted(freqs.items()):
        first_name, first = items[0]
        for other_name, other in items[1:]:
            if other.shape != first.shape or not np.array_equal(other, first):
                problems.append(
                    f"{other_name!r} differs from {first_name!r}; upstream shares one sin "
                    "frequency within a filter"
                )
        if cfg.train_freq:
            out[f"layers.{i}.mixer.freq"] = first
        else:
            out.setdefault(first_name, first)  # unexpected without train_freq
    return out, problems


def hyena_from_checkpoint(ckpt, *, pad_token_id: int = 4) -> HyenaDNA:
    """Build a :class:`HyenaDNA` from a :class:`diffbio_sc.io.Checkpoint` (Hugging Face layout).

    The ``hyena.`` prefix of ``HyenaDNAForCausalLM`` / ``...ForSequenceClassification``
    checkpoints is stripped and their heads ignored. Raises
    :class:`~diffbio_sc.io.CheckpointError` naming the file and field for an
    unsupported configuration, and one :class:`~diffbio_sc.models.ModelFormatError`
    naming every missing, unexpected and mis-shaped tensor (positional buffers that
    disagree with the config included).
    """
    cfg = HyenaConfig.from_hf(ckpt.config, pad_token_id=pad_token_id, source=str(ckpt.config_file))
    where = f"{ckpt.weights_files[0]} (with {ckpt.config_file.name})"
    arrays, problems = _map_hyena_weights(ckpt.weights, cfg, where)
    try:
        model = from_torch_weights(HyenaDNA, cfg, arrays, where=where)
    except ModelFormatError as err:
        if problems:
            raise ModelFormatError(f"{err} Also: {'; '.join(problems)}.") from None
        raise
    if problems:
        raise ModelFormatError(
            f"{where}: {'; '.join(problems)}. The config and the weights do not belong together."
        )
    return model
