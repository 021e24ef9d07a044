"""The opt-in bfloat16 path of Geneformer checkpoints (``embed_checkpoint(dtype='bfloat16')``):
bfloat16 matrix-product inputs with float32 accumulation, against NumPy with the same inputs
rounded to bfloat16 and against the float32 reference; the default stays float32."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.models._bert import MASK_BIAS, compute_dtype, masked_attention

FIX = Path(__file__).parent / "fixtures"


def _bf16(x):
    """``x`` rounded to bfloat16 (round to nearest even), back in float64."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _attention_ref(q, k, v, mask, *, rounded):
    """NumPy attention in float64; ``rounded``: q, k, v and the weights rounded to bfloat16."""
    d = q.shape[-1]
    r = _bf16 if rounded else (lambda x: np.asarray(x, np.float64))
    qs = r(np.asarray(q, np.float32) * np.float32(1.0 / np.sqrt(d)))
    s = np.einsum("bqhd,bkhd->bhqk", qs, r(k)) + np.where(mask, 0.0, MASK_BIAS)[:, None, None]
    p = np.exp(s - s.max(-1, keepdims=True))
    out = np.einsum("bhqk,bkhd->bqhd", r(p), r(v))
    return out / p.sum(-1)[..., None].transpose(0, 2, 1, 3)


@pytest.mark.parametrize("length", [40, 320])  # one query tile; 320 = 5 tiles of 64
def test_bf16_attention_equals_numpy_with_rounded_inputs(length):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, length, 2, 16)).astype(np.float32) for _ in range(3))
    mask = np.ones((2, length), bool)
    mask[1, length // 2 :] = False
    got = np.asarray(masked_attention(q, k, v, mask, dtype=compute_dtype("bfloat16")))
    exact = np.asarray(masked_attention(q, k, v, mask))
    ref_rounded = _attention_ref(q, k, v, mask, rounded=True)
    ref_exact = _attention_ref(q, k, v, mask, rounded=False)
    err = np.abs(got - ref_rounded).max()
    assert err < 2e-3  # float32 accumulation of the same rounded inputs
    np.testing.assert_allclose(exact, ref_exact, atol=2e-5, rtol=0)
    # the rounding is really applied (bfloat16 keeps 8 bits: ~4e-3 relative)
    assert np.abs(got - ref_exact).max() > 5 * err
    assert got.dtype == np.float32


def test_compute_dtype_names():
    import jax.numpy as jnp

    assert compute_dtype(None) is None and compute_dtype("float32") is None
    assert compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ValueError, match="float16"):
        compute_dtype("float16")


def _embed(adata, model, **kw):
    dfm.tl.embed_checkpoint(adata, model, key_added="e", **kw)
    return adata.obsm["e"].copy(), adata.uns["dfm"]["embeddings"]["e"]


@pytest.mark.slow  # 4-13 s: runs in CI's slow step (fast suite budget)
@pytest.mark.parametrize("name", ["geneformer_v1", "geneformer_v2"])
def test_bf16_embeddings_close_to_float32_default_unchanged(cells, name):
    model = dfm.models.load_checkpoint(FIX / name)
    ref = np.load(FIX / f"expected_{name}.npz")["mean_embedding"]
    default, e0 = _embed(cells, model)
    f32, _ = _embed(cells, model, dtype="float32")
    assert e0["dtype"] == "float32"
    assert e0["max_batch_tokens"] == 32_768  # the default for a narrow model, recorded
    assert default.tobytes() == f32.tobytes()  # the default is the float32 path, bit for bit
    np.testing.assert_allclose(default, ref, atol=1e-5, rtol=0)
    for packing in (True, False):
        bf, e = _embed(cells, model, dtype="bfloat16", packing=packing)
        assert e["dtype"] == "bfloat16" and bf.dtype == np.float32
        assert not np.array_equal(bf, default)  # the products really ran in bfloat16
        # stated tolerance (docs/benchmarks.md): 1e-3 absolute on these unit-scale embeddings
        np.testing.assert_allclose(bf, ref, atol=1e-3, rtol=0)
        cos = (bf * ref).sum(1) / np.linalg.norm(bf, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.9999


def test_bf16_refused_where_it_cannot_apply(cells):
    snap = json.dumps(cells.uns.get("dfm", {}), default=str)
    with pytest.raises(dfm._validate.DfmInputError, match="dtype must be one of"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", dtype="float16")
    with pytest.raises(dfm._validate.DfmInputError, match="scGPT runs in float32"):
        dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", dtype="bfloat16")
    assert json.dumps(cells.uns.get("dfm", {}), default=str) == snap
    assert not cells.obsm
