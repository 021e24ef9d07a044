"""Memory of loaded DNA checkpoints: one copy of the weights, never a copy per call.

The large-checkpoint numbers are in docs/benchmarks.md ("Checkpoint loading
memory", ``benchmarks/bench_checkpoint_load_rss.py``); these tests pin the
properties behind them on the tiny fixtures: the reader returns aligned arrays
that JAX adopts without a copy, a caller's own arrays are never shared with the
model, and a forward pass leaves the model's parameter buffers in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import diffbio_sc as dfm
from diffbio_sc.io._checkpoints import ALIGNMENT, aligned_copy, aligned_empty, read_safetensors
from diffbio_sc.models._esm import EsmConfig, EsmEncoder

FIX = Path(__file__).parent / "fixtures"


def _param_leaves(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file written by hand (name -> (dtype tag, raw array)), odd offsets on purpose."""
    header, blobs, pos = {}, [], 0
    for name, (tag, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {
            "dtype": tag,
            "shape": list(arr.shape),
            "data_offsets": [pos, pos + len(raw)],
        }
        blobs.append(raw)
        pos += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_aligned_helpers_align_and_copy():
    for shape, dtype in [((3, 5), np.float32), (7, np.uint16), ((2, 1), np.float64)]:
        a = aligned_empty(shape, dtype)
        assert a.ctypes.data % ALIGNMENT == 0 and a.flags.c_contiguous
        assert a.shape == ((shape,) if isinstance(shape, int) else shape) and a.dtype == dtype
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = aligned_copy(x.T)
    assert t.ctypes.data % ALIGNMENT == 0 and t.flags.c_contiguous
    np.testing.assert_array_equal(t, x.T)


def test_reader_returns_aligned_exact_arrays(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    odd = rng.standard_normal(3).astype(np.float16)  # 6 bytes: the next tensor starts unaligned
    bf16_bits = np.array([0x3F80, 0xC000, 0x0001], dtype=np.uint16)  # 1.0, -2.0, tiny
    _write_safetensors(
        tmp_path / "w.safetensors",
        {"a": ("F16", odd), "b": ("F32", f32), "c": ("BF16", bf16_bits)},
    )
    got = read_safetensors(tmp_path / "w.safetensors")
    for arr in got.values():
        assert arr.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(got["a"], odd)
    np.testing.assert_array_equal(got["b"], f32)
    assert got["c"].dtype == np.float32
    expected_c = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(got["c"], expected_c)
    assert got["c"][0] == 1.0 and got["c"][1] == -2.0


def _tiny_esm_weights():
    cfg = EsmConfig(
        vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=12,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    shapes = EsmEncoder.expected_weights(cfg)
    return cfg, {
        k: aligned_copy(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()
    }


def test_from_weights_never_shares_the_callers_arrays():
    cfg, weights = _tiny_esm_weights()
    kept = {k: v.copy() for k, v in weights.items()}
    model = EsmEncoder.from_weights(cfg, weights)  # consume=False: the caller keeps them
    for v in weights.values():
        v[...] = 123.0  # the caller may write to its own arrays afterwards
    flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
    for k, v in kept.items():
        np.testing.assert_array_equal(np.asarray(flat[k]), v)


def test_from_weights_adopts_given_up_aligned_arrays_without_a_copy():
    cfg, weights = _tiny_esm_weights()
    ptrs = {k: v.ctypes.data for k, v in weights.items()}
    arrays = dict(weights)
    model = EsmEncoder.from_weights(cfg, weights, consume=True)
    assert weights == {}
    flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
    if jax.default_backend() == "cpu":
        assert all(flat[k].unsafe_buffer_pointer() == ptrs[k] for k in ptrs)
    for k, v in arrays.items():
        assert not v.flags.writeable  # the model's memory can no longer be written through NumPy
        np.testing.assert_array_equal(np.asarray(flat[k]), v)


@pytest.mark.parametrize("name", ["nucleotide_transformer_v1", "generator"])
def test_forward_leaves_the_parameter_buffers_in_place(name):
    m = dfm.models.load_checkpoint(FIX / name)
    leaves = _param_leaves(m.module)
    ids, _ = m.tokenize(["ACGTACGTACGTAAACCCGGG", "ACGTAC"])
    first = np.asarray(m.hidden_states(ids)[-1])
    m.embed(["ACGTACGTACGTAAA"])
    after = _param_leaves(m.module)
    # the same arrays, not a fresh output copy of every weight per call
    assert all(a is b for a, b in zip(leaves, after, strict=True))
    np.testing.assert_array_equal(np.asarray(m.hidden_states(ids)[-1]), first)
