"""Packed rows in ``tl.embed_checkpoint`` (Geneformer): equal to the unpacked path and to the
reference extractor, independent of row-mates, recorded in the provenance; the runner's
packing mode (auto rule, calls divided evenly, cells without tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.models._runner import BucketedRunner

FIX = Path(__file__).parent / "fixtures"
TOL = 1e-5


@pytest.fixture(scope="module")
def models():
    return {n: dfm.models.load_checkpoint(FIX / n) for n in ("geneformer_v1", "geneformer_v2")}


def _embed(adata, model, **kw):
    dfm.tl.embed_checkpoint(adata, model, key_added="e", **kw)
    return adata.obsm["e"].copy(), adata.uns["dfm"]["embeddings"]["e"]


@pytest.mark.parametrize("name", ["geneformer_v1", "geneformer_v2"])
def test_packed_equals_unpacked_and_the_extractor(cells, models, name):
    ref = np.load(FIX / f"expected_{name}.npz")["mean_embedding"]
    packed, e1 = _embed(cells, models[name], packing=True)
    plain, e0 = _embed(cells, models[name], packing=False)
    np.testing.assert_allclose(packed, ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(packed, plain, atol=TOL, rtol=0)
    assert e1["packed"] and e1["n_cells_packed"] == cells.n_obs and e1["packing"] is True
    assert not e0["packed"] and e0["n_cells_packed"] == 0 and e0["packing"] is False
    # default (auto): the fixture's median length is below half of its 64-token rows
    auto, e = _embed(cells, models[name])
    assert e["packed"] and e["packing"] is None
    np.testing.assert_allclose(auto, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_odd_lengths_layers_and_pooling(cells, models, pooling):
    m = models["geneformer_v2"]
    kw = dict(max_length=13, emb_layer=0, pooling=pooling)  # odd cap: lengths 5, 9, 13
    packed, e = _embed(cells, m, packing=True, **kw)
    plain, _ = _embed(cells, m, packing=False, **kw)
    assert e["packed"]
    np.testing.assert_allclose(packed, plain, atol=TOL, rtol=0)
    assert np.abs(packed).max() > 0.1  # not all zeros


@pytest.mark.parametrize("layout", ["rows", "slots", "fine"])
def test_a_cell_does_not_depend_on_its_row_mates(cells, models, layout, monkeypatch):
    from diffbio_sc.models import _runner as runner_module

    monkeypatch.setattr(runner_module, "SLOT_WORK_RATIO", 0.0 if layout == "rows" else 100.0)
    monkeypatch.setattr(runner_module, "SLOT_MIN_ITEMS", 0)  # this small job may use slots
    # the fine slot layout of large jobs (widths in 32s, a slot count per call) or not
    monkeypatch.setattr(runner_module, "SLOT_FINE_ITEMS", 0 if layout == "fine" else 10**9)
    m = models["geneformer_v1"]
    ref = np.load(FIX / "expected_geneformer_v1.npz")["mean_embedding"]
    perm = np.random.default_rng(1).permutation(cells.n_obs)
    for order in (perm, perm[::-1], np.array([4, 0, 6]), np.array([2]), np.array([6, 5, 1, 3])):
        sub = cells[order].copy()
        # 64-token rows: one row per call vs. all rows in one call
        for budget in (64, 32_768):
            got, e = _embed(sub, m, packing=True, max_batch_tokens=budget)
            assert e["packed"]
            np.testing.assert_allclose(got, ref[order], atol=TOL, rtol=0)


def test_packing_refused_where_it_cannot_apply(cells, models):
    snap = json.dumps(cells.uns.get("dfm", {}), default=str)
    with pytest.raises(dfm._validate.DfmInputError, match="token states"):
        dfm.tl.embed_checkpoint(
            cells, models["geneformer_v1"], packing=True, gene_embeddings_key="g"
        )
    with pytest.raises(dfm._validate.DfmInputError, match="scGPT"):
        dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", packing=True)
    with pytest.raises(TypeError, match="packing"):
        dfm.tl.embed_checkpoint(cells, models["geneformer_v1"], packing="yes")
    assert json.dumps(cells.uns.get("dfm", {}), default=str) == snap
    assert not cells.obsm and not cells.varm
    # auto with per-gene states (or without buckets) runs unpacked
    _, e = _embed(cells, models["geneformer_v1"], gene_embeddings_key="g")
    assert e["packing"] is None and not e["packed"]
    _, e = _embed(cells, models["geneformer_v1"], bucketing=False)
    assert not e["packed"]


def _segment_sums(static, params, ids, seg, pos, slots):
    """Per-segment sums of token ids and of positions (a packed forward with no model)."""
    import jax
    import jax.numpy as jnp

    n = ids.shape[0] * static if slots is None else slots.shape[0]
    idx = jnp.where(seg > 0, seg - 1, n).reshape(-1)
    both = jnp.stack([ids.reshape(-1), pos.reshape(-1)], axis=1).astype(jnp.float32)
    return jax.ops.segment_sum(both, idx, num_segments=n + 1)[:n] + params["b"]


def _token_sums(static, params, ids):
    """The same sums over right-padded rows (token 0 = padding)."""
    import jax.numpy as jnp

    pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape) * (ids > 0)
    return jnp.stack([ids.sum(1), pos.sum(1)], axis=1).astype(jnp.float32) + params["b"]


def _runner(packing, max_batch_tokens=64 * 8):
    return BucketedRunner(
        _token_sums,
        {"b": np.float32(0.0)},
        static=None,
        max_length=100,
        max_batch_tokens=max_batch_tokens,
        packed_fn=_segment_sums,
        packed_static=4,
        packing=packing,
        max_segments=4,
    )


@pytest.mark.parametrize("layout", ["rows", "slots"])
def test_runner_packing_mode_rule_and_even_calls(layout, monkeypatch):
    from diffbio_sc.models import _runner as runner_module

    # force one layout: the slot layout's score elements are compared with this x the rows'
    monkeypatch.setattr(runner_module, "SLOT_WORK_RATIO", 100.0 if layout == "slots" else 0.0)
    monkeypatch.setattr(runner_module, "SLOT_GRID", 32)  # two slot widths for these cells
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, 150)
    lengths[:3] = [0, 1, 37]
    tokens = np.zeros((150, 100), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 50, n)
    expect = np.stack([tokens.sum(1), [n * (n - 1) // 2 for n in lengths]], axis=1).astype(
        np.float32
    )
    r = _runner(None)
    assert r.will_pack(lengths)  # median ~20 < 64 / 2
    np.testing.assert_array_equal(r(lengths, tokens), expect)
    assert r.n_packed == 150
    if layout == "rows":  # rows divided evenly: same rows per call, a multiple of 8, <= 8
        assert {s[1] for s in r.shapes} == {64} and all(s[0] % 8 == 0 for s in r.shapes)
        assert len(r.shapes) == 1
    else:
        # every call has the same (rows, 64) token arrays (rows a multiple of 8) and a slot
        # view as wide as its longest cell rounded up to 32: cells sorted by length, the
        # 37-token cell in a 64-wide view, the shortest calls in 32-wide ones; one slot
        # count per width (one compiled shape per width)
        assert len({s[:2] for s in r.shapes}) == 1 and all(s[0] % 8 == 0 for s in r.shapes)
        assert {s[1] for s in r.shapes} == {64} and all(s[2] % 8 == 0 for s in r.shapes)
        assert {s[3] for s in r.shapes} == {32, 64} and len(r.shapes) == 2
    # slot_layout=False (what embed_checkpoint passes for a job under SLOT_MIN_ITEMS cells):
    # rows whatever the work ratio, the same results
    rows_only = BucketedRunner(
        _token_sums, {"b": np.float32(0.0)}, max_length=100, max_batch_tokens=64 * 8,
        packed_fn=_segment_sums, packed_static=4, max_segments=4, slot_layout=False,
    )  # fmt: skip
    np.testing.assert_array_equal(rows_only(lengths, tokens), expect)
    assert len(rows_only.shapes) == 1 and all(len(s) == 2 for s in rows_only.shapes)
    with pytest.raises(ValueError, match="slot_layout"):
        BucketedRunner(_token_sums, {}, max_length=100, slot_layout=True)
    if layout == "slots":
        # the fine layout (large jobs): widths in 32s, a slot count per call, the same results
        fine = BucketedRunner(
            _token_sums, {"b": np.float32(0.0)}, max_length=100, max_batch_tokens=64 * 8,
            packed_fn=_segment_sums, packed_static=4, max_segments=4, slot_layout="fine",
        )  # fmt: skip
        monkeypatch.setattr(runner_module, "SLOT_GRID", 64)  # the coarse grid does not apply
        np.testing.assert_array_equal(fine(lengths, tokens), expect)
        assert {s[3] for s in fine.shapes} == {32, 64}
        # the rule by job size: rows below SLOT_MIN_ITEMS, fine from SLOT_FINE_ITEMS
        monkeypatch.setattr(runner_module, "SLOT_MIN_ITEMS", 512)
        monkeypatch.setattr(runner_module, "SLOT_FINE_ITEMS", 4096)
        rule = runner_module.slot_layout_for
        assert [rule(n) for n in (0, 511, 512, 4095, 4096, 10**6)] == [
            False, False, None, None, "fine", "fine"
        ]  # fmt: skip
    # long cells: no packing under auto; packing=False never; the results are the same
    long = np.full(10, 90)
    assert not r.will_pack(long) and r.will_pack(lengths)
    off = _runner(False)
    assert not off.will_pack(lengths)
    np.testing.assert_array_equal(off(lengths, tokens), expect)
    assert off.n_packed == 0
    with pytest.raises(ValueError, match="packed_fn"):
        BucketedRunner(_token_sums, {}, max_length=8, packing=True)
