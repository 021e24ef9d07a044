"""Packing cells into rows: the planner, the inputs, and the packed BERT forward
equal to the per-cell (unpacked) result."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from diffbio_sc.models._bert import BertConfig, BertEncoder
from diffbio_sc.models._packing import pack_tokens, plan_packing, plan_slots, slot_inputs


def _tiny_bert(hidden: int, layers: int, positions: int) -> BertEncoder:
    """A random-weight BERT of 60 tokens and 4 heads."""
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        hidden_act="relu",
        max_position_embeddings=positions,
    )
    return BertEncoder(cfg, rngs=nnx.Rngs(0))


def test_plan_hand_case():
    # best-fit decreasing: 5 -> row 0, 4 -> row 1, 3 -> row 0 (fills it), 2 -> row 1
    plan = plan_packing([5, 3, 2, 4], 8)
    assert plan.n_rows == 2
    np.testing.assert_array_equal(plan.row, [0, 0, 1, 1])
    np.testing.assert_array_equal(plan.offset, [0, 5, 4, 0])
    assert plan.fill == 14 / 16


@pytest.mark.parametrize("max_segments", [None, 2])
def test_plan_properties(max_segments):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 50, size=300)
    plan = plan_packing(lengths, 64, max_segments=max_segments)
    occupied = np.zeros((plan.n_rows, 64), dtype=int)
    for r, o, n in zip(plan.row, plan.offset, plan.length, strict=True):
        assert o + n <= 64
        occupied[r, o : o + n] += 1
    assert occupied.max() == 1 and occupied.sum() == lengths.sum()
    if max_segments:
        assert np.bincount(plan.row).max() <= max_segments
    if max_segments is None:  # best fit wastes little room here
        assert plan.n_rows <= int(np.ceil(lengths.sum() / 64)) + 2
    again = plan_packing(lengths, 64, max_segments=max_segments)
    np.testing.assert_array_equal(again.row, plan.row)
    np.testing.assert_array_equal(again.offset, plan.offset)


def test_plan_refuses_bad_lengths():
    with pytest.raises(ValueError, match="cell 1 has 9 tokens"):
        plan_packing([3, 9], 8)
    with pytest.raises(ValueError, match="integers"):
        plan_packing([1.5], 8)


def test_pack_tokens_layout():
    tokens = np.array([[7, 8, 9, 0], [5, 6, 0, 0], [4, 0, 0, 0]])
    plan = plan_packing([3, 2, 1], 4)
    ids, seg, pos = pack_tokens(tokens, plan, pad_id=0)
    for i, n in enumerate([3, 2, 1]):
        r, o = plan.row[i], plan.offset[i]
        np.testing.assert_array_equal(ids[r, o : o + n], tokens[i, :n])
        assert (seg[r, o : o + n] == i + 1).all()
        np.testing.assert_array_equal(pos[r, o : o + n], np.arange(n))
    assert (ids[seg == 0] == 0).all() and seg.astype(bool).sum() == 6


@pytest.mark.parametrize(
    ("width", "max_len", "hidden", "layers"),
    [(40, 30, 32, 2), pytest.param(512, 300, 16, 1, marks=pytest.mark.slow)],
)
def test_packed_forward_equals_unpacked(width, max_len, hidden, layers):
    """Each cell's layer states and pooled embeddings, packed with others, equal
    the cell run alone (1e-5); the second case tiles queries (512 -> 2 x 256)."""
    model = _tiny_bert(hidden, layers, width)
    rng = np.random.default_rng(1)
    lengths = np.concatenate([rng.integers(1, max_len, size=7), [0, max_len]])
    tokens = np.zeros((lengths.size, max_len), dtype=np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 60, size=n)
        if n:
            tokens[i, 0] = 2  # a <cls>-like token excluded from the mean
    plan = plan_packing(lengths, width)
    assert plan.n_rows < lengths.size  # several cells share a row
    ids, seg, pos = pack_tokens(tokens, plan, pad_id=0)
    graph, params = nnx.split(model)

    @jax.jit
    def packed(params, ids, seg, pos):
        m = nnx.merge(graph, params)
        states = m.packed_states(ids, seg, pos)
        n = lengths.size
        mean = m.pool_packed(ids, seg, states[-1], n_cells=n, exclude_ids=(2,))
        return states, mean, m.pool_packed(ids, seg, states[-1], n_cells=n, pooling="cls")

    @jax.jit
    def unpacked(params, tokens):  # the padded batch: every cell alone in its row
        m = nnx.merge(graph, params)
        states = m.hidden_states(tokens)
        return states, m.pool(tokens, states[-1], exclude_ids=(2,))

    states, mean, cls = jax.device_get(packed(params, ids, seg, pos))
    alone, ref = jax.device_get(unpacked(params, tokens))
    for i, n in enumerate(lengths):
        if n == 0:
            assert (mean[i] == 0).all()
            continue
        r, o = plan.row[i], plan.offset[i]
        for layer in range(layers + 1):
            np.testing.assert_allclose(states[layer][r, o : o + n], alone[layer][i, :n], atol=1e-5)
        np.testing.assert_allclose(mean[i], ref[i], atol=1e-5)
        np.testing.assert_allclose(cls[i], alone[-1][i, 0], atol=1e-5)


def test_plan_slots_sorted_calls_and_inputs():
    lengths = np.array([5, 0, 12, 3, 12, 7, 1])
    n_tokens, calls = plan_slots(lengths, 16, grid=4, slot_step=2)
    assert n_tokens == 64  # 16 rounded up to 64
    # longest first, ties by index; consecutive cells while their tokens fit in 64
    order = np.concatenate([c.cells for c in calls])
    np.testing.assert_array_equal(order, [2, 4, 5, 0, 3, 6, 1])
    assert [(c.n_slots, c.slot_width) for c in calls] == [(8, 12)]
    n_tokens, calls = plan_slots(lengths, 16, grid=4, slot_step=2)
    tokens = np.arange(1, 7 * 12 + 1).reshape(7, 12)
    ids, seg, pos, slots = slot_inputs(tokens, lengths, calls[0], 64, pad_id=0)
    flat_ids, flat_seg, flat_pos = ids.reshape(-1), seg.reshape(-1), pos.reshape(-1)
    for j, c in enumerate(calls[0].cells):
        n = lengths[c]
        got = slots[j, :n]
        np.testing.assert_array_equal(flat_ids[got], tokens[c, :n])
        assert (flat_seg[got] == j + 1).all() and (flat_pos[got] == np.arange(n)).all()
        assert (slots[j, n:] == 64).all()
    assert (slots[7] == 64).all() and flat_seg.astype(bool).sum() == lengths.sum()
    # a budget below the longest cell: calls as wide as it (rounded up to 64)
    n_tokens, calls = plan_slots(np.array([100, 90, 10, 5]), 16, grid=32)
    assert n_tokens == 128 and [c.slot_width for c in calls] == [128, 96]
    n_tokens, calls = plan_slots(np.array([60, 50, 10, 5, 3]), 64, grid=32)
    assert [list(c.cells) for c in calls] == [[0], [1, 2], [3, 4]]
    assert [c.slot_width for c in calls] == [64, 64, 32]


def test_plan_slots_one_shape_per_width():
    """Calls of one slot width share one slot count (one compiled shape per width); widths
    are multiples of the grid up to 8 grids, then 8 steps per doubling."""
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(200, 60, 1000), 40, 430).astype(np.int64)
    n_tokens, calls = plan_slots(lengths, 32_768, grid=64, slot_step=8)
    shapes = {(c.n_slots, c.slot_width) for c in calls}
    assert len(shapes) == len({c.slot_width for c in calls}) < len(calls)
    for c in calls:
        assert c.cells.size <= c.n_slots and lengths[c.cells].max() <= c.slot_width
        assert c.slot_width % 64 == 0 and c.slot_width - 64 < lengths[c.cells].max()
        assert lengths[c.cells].sum() <= n_tokens
    # above 8 grids: 8 steps per doubling (576 -> 640, 1,100 -> 1,152)
    for longest, width in ((576, 576), (577, 640), (1100, 1152)):
        assert plan_slots(np.array([longest, 3]), 4096, grid=64)[1][0].slot_width == width
    # per_width=False (the fine layout of large jobs): the same calls, each with its own
    # cell count rounded up to 8 (one in 8 steps above 64), never more slots than shared
    _, own = plan_slots(lengths, 32_768, grid=64, slot_step=8, per_width=False)
    assert [list(c.cells) for c in own] == [list(c.cells) for c in calls]
    for c, shared in zip(own, calls, strict=True):
        assert c.slot_width == shared.slot_width and c.n_slots <= shared.n_slots
        assert c.cells.size <= c.n_slots < c.cells.size * 9 / 8 + 8  # <= 1/8 empty slots
    assert any(c.n_slots < s.n_slots for c, s in zip(own, calls, strict=True))
    # hand case: 3 cells of 30 tokens and 20 of 10 in calls of at most 64 tokens: 2, 4, 6,
    # 6 and 5 cells, all 32 wide; shared counts give each call 8 slots, own counts 4 or 8
    _, hand = plan_slots(np.array([30] * 3 + [10] * 20), 64, grid=32, slot_step=4, per_width=False)
    assert [(c.cells.size, c.n_slots, c.slot_width) for c in hand] == [
        (2, 4, 32),
        (4, 4, 32),
        (6, 8, 32),
        (6, 8, 32),
        (5, 8, 32),
    ]


def test_slot_layout_forward_equals_unpacked():
    """Cells sorted into calls whose attention runs on per-cell slots: each cell's states
    and pooled embeddings equal the cell run alone (1e-5), in float32 and (looser) bf16."""
    model = _tiny_bert(32, 2, 64)
    rng = np.random.default_rng(2)
    lengths = np.concatenate([rng.integers(1, 40, size=9), [0, 40]])
    tokens = np.zeros((lengths.size, 40), dtype=np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 60, size=n)
    graph, params = nnx.split(model)
    n_tokens, calls = plan_slots(lengths, 128, grid=8)
    assert len(calls) > 1 and len({c.slot_width for c in calls}) > 1

    @jax.jit
    def unpacked(params, tokens):
        m = nnx.merge(graph, params)
        states = m.hidden_states(tokens)
        return states, m.pool(tokens, states[-1])

    alone, ref = jax.device_get(unpacked(params, tokens))
    for dtype, tol in ((None, 1e-5), ("bfloat16", 0.1)):

        @jax.jit
        def packed(params, ids, seg, pos, slots, dtype=dtype):
            m = nnx.merge(graph, params)
            states = m.packed_states(ids, seg, pos, slots=slots, dtype=dtype)
            n = slots.shape[0]
            return states, m.pool_packed(ids, seg, states[-1], n_cells=n)

        seen = 0
        for call in calls:
            ids, seg, pos, slots = slot_inputs(tokens, lengths, call, n_tokens, pad_id=0)
            states, mean = jax.device_get(packed(params, ids, seg, pos, slots))
            for j, c in enumerate(call.cells):
                n = lengths[c]
                seen += 1
                if n == 0:
                    assert (mean[j] == 0).all()
                    continue
                at = slots[j, :n]
                for layer in range(3):
                    got = states[layer].reshape(-1, 32)[at]
                    np.testing.assert_allclose(got, alone[layer][c, :n], atol=tol)
                np.testing.assert_allclose(mean[j], ref[c], atol=tol)
        assert seen == lengths.size


@pytest.mark.parametrize("n_layers", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_scanned_layers_equal_the_unrolled_ones(n_layers):
    """``stack_layers`` + ``stacked_states`` (one ``lax.scan`` over stacked weights) give the
    state of layer ``n_layers`` of the unrolled encoder: padded batches, packed rows and
    the slot layout; the model's own weights are left as they were."""
    from diffbio_sc.models._bert import stack_layers, stacked_states

    model = _tiny_bert(32, 2, 64)
    before = jax.tree_util.tree_map(np.array, nnx.state(model))
    rng = np.random.default_rng(4)
    lengths = np.array([7, 0, 30, 12, 1, 25])
    tokens = np.zeros((lengths.size, 30), dtype=np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 60, size=n)
    static, params = stack_layers(model, n_layers)
    assert (params["layers"] is None) == (n_layers == 0)
    if n_layers:  # layer i's weights at index i of the stack, bit for bit, on the model's device
        flat = dict(nnx.to_flat_state(params["layers"]))
        for i in range(n_layers):
            for path, var in nnx.to_flat_state(nnx.state(model.layers[i])):
                stacked = flat[path].get_value()
                assert isinstance(stacked, jax.Array)
                assert stacked.devices() == var.get_value().devices()
                np.testing.assert_array_equal(np.asarray(stacked)[i], np.asarray(var.get_value()))
    run = jax.jit(stacked_states, static_argnums=0)
    want = model.hidden_states(tokens, n_layers=n_layers)[n_layers]
    valid = tokens > 0
    np.testing.assert_allclose(
        np.asarray(run(static, params, tokens))[valid], np.asarray(want)[valid], atol=1e-5
    )
    plan = plan_packing(lengths, 32, max_segments=4)
    ids, seg, pos = pack_tokens(tokens, plan, pad_id=0)
    got = run(static, params, ids, segment_ids=seg, positions=pos)
    ref = model.packed_states(ids, seg, pos, n_layers=n_layers)[n_layers]
    np.testing.assert_allclose(np.asarray(got)[seg > 0], np.asarray(ref)[seg > 0], atol=1e-5)
    n_tokens, calls = plan_slots(lengths, 32, grid=8)
    for call in calls[:2]:
        ids, seg, pos, slots = slot_inputs(tokens, lengths, call, n_tokens, pad_id=0)
        got = run(static, params, ids, segment_ids=seg, positions=pos, slots=slots)
        ref = model.packed_states(ids, seg, pos, n_layers=n_layers, slots=slots)[n_layers]
        np.testing.assert_allclose(np.asarray(got)[seg > 0], np.asarray(ref)[seg > 0], atol=1e-5)
    after = jax.tree_util.tree_map(np.array, nnx.state(model))
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)
    with pytest.raises(ValueError, match="n_layers"):
        stack_layers(model, 3)


def test_inference_split_scans_small_stacks_and_caches_them(monkeypatch):
    """The model layer's scan-or-unroll decision: a stack within ``SCAN_MAX_BYTES`` is
    scanned and built once per model and weights (the same arrays on a second call), made
    again after a weight was replaced (the new value in the stack), dropped with the model;
    above the limit the layers stay unrolled (no copy)."""
    import gc
    import weakref

    from diffbio_sc.models import _bert
    from diffbio_sc.models._bert import StackedLayers, inference_split, stacked_bytes

    model = _tiny_bert(32, 2, 64)
    static, params = inference_split(model, 2)
    assert isinstance(static, StackedLayers) and static.n_layers == 2
    kernel = np.asarray(model.layers[1].query.kernel[...])
    np.testing.assert_array_equal(np.asarray(params["layers"]["query"]["kernel"][1]), kernel)
    again = inference_split(model, 2)
    assert again[1]["layers"]["query"]["kernel"] is params["layers"]["query"]["kernel"]
    # another layer count: a new stack of that many layers
    assert inference_split(model, 1)[0].n_layers == 1
    # a replaced weight (training, set_weights): the stack is rebuilt from the new value
    model.layers[1].query.kernel[...] = model.layers[1].query.kernel[...] + 1.0
    _, fresh = inference_split(model, 2)
    np.testing.assert_array_equal(np.asarray(fresh["layers"]["query"]["kernel"][1]), kernel + 1.0)
    # the cached stack does not keep the model alive
    ref = weakref.ref(model)
    del model, static, params, again, fresh
    gc.collect()
    assert ref() is None
    # above the limit: the unrolled graph, no stacked copy
    model = _tiny_bert(32, 2, 64)
    monkeypatch.setattr(_bert, "SCAN_MAX_BYTES", stacked_bytes(model, 2) - 1)
    static, _ = inference_split(model, 2)
    assert not isinstance(static, StackedLayers)
    assert isinstance(inference_split(model, 1)[0], StackedLayers)
