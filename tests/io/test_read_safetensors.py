"""io.read_safetensors: tensor-by-tensor reading, against the safetensors library."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from diffbio_sc.io._checkpoints import CheckpointError, read_safetensors

st = pytest.importorskip("safetensors.numpy")
FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"


def _write_raw(path, tensors, *, cut=0):
    """A safetensors file by hand: {name: (dtype name, shape, bytes)}; ``cut`` bytes dropped."""
    header, body = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(body), len(body) + len(raw)]}  # fmt: skip
        body += raw
    head = json.dumps(header).encode()
    data = struct.pack("<Q", len(head)) + head + body
    path.write_bytes(data[: len(data) - cut])
    return path


def test_same_arrays_as_the_library(tmp_path):
    rng = np.random.default_rng(0)
    want = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.integers(-9, 9, 7).astype(np.int64),
        "c": rng.standard_normal(4).astype(np.float16),
        "empty": np.zeros((0, 3), np.float32),
    }
    st.save_file(want, str(tmp_path / "w.safetensors"))
    got = read_safetensors(tmp_path / "w.safetensors")
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    ref = st.load_file(str(FIX / "dnabert2" / "model.safetensors"))
    got = read_safetensors(FIX / "dnabert2" / "model.safetensors")
    assert set(got) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v)


def test_bfloat16_widened_exactly(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exact in bfloat16
    bits = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    got = read_safetensors(_write_raw(tmp_path / "b.safetensors", {"x": ("BF16", (2, 2), bits)}))
    assert got["x"].dtype == np.float32
    np.testing.assert_array_equal(got["x"], x.reshape(2, 2))


@pytest.mark.parametrize(
    ("tensors", "cut", "match"),
    [
        ({"x": ("F32", (2,), b"\0" * 8)}, 4, "lies outside the file"),
        ({"x": ("F32", (3,), b"\0" * 8)}, 0, "wrong byte size"),
        ({"x": ("F8_E4M3", (2,), b"\0" * 2)}, 0, "unsupported or malformed"),
    ],
)
def test_bad_files_are_named(tmp_path, tensors, cut, match):
    p = _write_raw(tmp_path / "bad.safetensors", tensors, cut=cut)
    with pytest.raises(CheckpointError, match=match):
        read_safetensors(p)


def test_not_a_safetensors_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\xff" * 20)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(p)


def test_dnabert2_mapping_consumes_the_state_dict():
    from diffbio_sc.models._dnabert2 import _map_dnabert2_weights

    w = read_safetensors(FIX / "dnabert2" / "model.safetensors")
    keep = _map_dnabert2_weights(dict(w), "x")
    d = dict(w)
    out = _map_dnabert2_weights(d, "x", consume=True)
    assert not d and set(out) == set(keep)
    for k, v in keep.items():
        np.testing.assert_array_equal(out[k], v)


def _write_offsets(path, entries, body):
    """A safetensors file with explicit offsets: [(name, dtype, shape, (start, end))]."""
    header = {n: {"dtype": d, "shape": list(s), "data_offsets": list(o)} for n, d, s, o in entries}
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)
    return path


def test_overlapping_or_gapped_tensors_are_refused(tmp_path):
    body = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes
    # two tensors sharing the same bytes: the library refuses this layout, and so do we
    p = _write_offsets(tmp_path / "o.safetensors",
                       [("a", "F32", (2,), (0, 8)), ("b", "F32", (2,), (4, 12))], body)  # fmt: skip
    with pytest.raises(CheckpointError, match="'b' overlaps another tensor"):
        read_safetensors(p)
    p = _write_offsets(tmp_path / "g.safetensors",
                       [("a", "F32", (2,), (0, 8)), ("b", "F32", (1,), (12, 16))], body)  # fmt: skip
    with pytest.raises(CheckpointError, match="'b' leaves a gap before it"):
        read_safetensors(p)
    ok = _write_offsets(tmp_path / "k.safetensors",
                        [("b", "F32", (2,), (8, 16)), ("a", "F32", (2,), (0, 8))], body)  # fmt: skip
    got = read_safetensors(ok)
    np.testing.assert_array_equal(got["a"], [0, 1])
    np.testing.assert_array_equal(got["b"], [2, 3])
