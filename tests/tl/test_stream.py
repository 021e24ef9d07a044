"""``dfm.tl.pretrain(stream=True)``: out-of-core model data, chunk-level shuffle, bounded memory.

Expectations: the in-memory batches of the same data (``_in_memory_batches``
over ``tokens_and_targets``), the definition of a chunk-level shuffle, and the
weights of the same call on in-memory input.
"""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.tl import _model_data as md
from diffbio_sc.tl._pretrain import _in_memory_batches
from diffbio_sc.tl._stream import ChunkStore, chunk_order, write_chunks


def test_chunk_order_is_a_seeded_chunk_level_shuffle():
    bounds = np.array([0, 10, 20, 25, 40])
    train = np.setdiff1d(np.arange(40), [3, 20, 21, 22, 23, 24])  # chunk 2 keeps no training cell
    order = chunk_order(bounds)
    a = order(np.random.default_rng(7), train)
    assert np.array_equal(np.sort(a), train)  # a permutation of the training cells
    chunk = np.searchsorted(bounds, a, side="right") - 1
    assert np.count_nonzero(np.diff(chunk)) == 2  # 3 non-empty chunks, each visited in one run
    assert np.array_equal(a, order(np.random.default_rng(7), train))  # reproducible
    b = order(np.random.default_rng(8), train)
    assert not np.array_equal(a, b)


def _prepared(n, g=60, seed=0):
    a = dfm.datasets.synthetic_counts(n, g, n_cell_types=3, n_batches=2, seed=seed)
    med = md.scan(
        a, None, target_sum=1e4, chunk_size=64, need_medians=True, cells=np.arange(n)
    ).medians
    cols = np.flatnonzero(np.isfinite(med) & (med > 0))
    gene_scale = np.zeros(g)
    gene_scale[cols] = 1 / med[cols]
    col_to_token = np.zeros(g, np.int32)
    col_to_token[cols] = np.arange(cols.size) + md.N_SPECIAL
    return a, gene_scale, col_to_token, cols[:20]


@pytest.mark.parametrize("with_counts", [False, True])
def test_chunk_store_batches_equal_in_memory(tmp_path, with_counts):
    a, gene_scale, col_to_token, hvg = _prepared(150)
    kw = dict(target_sum=1e4, max_tokens=12, chunk_size=40, hvg_cols=hvg)
    ids, vals, prof, counts = md.tokens_and_targets(
        a, None, gene_scale, col_to_token, with_counts=with_counts, **kw
    )
    train = np.arange(0, 150, 2)
    bounds = np.append(np.arange(0, 150, 40), 150)
    store = ChunkStore(tmp_path, bounds)
    store.batch_codes = np.arange(150, dtype=np.int32) % 3
    mean, pca_rows = write_chunks(
        a,
        None,
        gene_scale,
        col_to_token,
        store=store,
        with_counts=with_counts,
        train_idx=train,
        pca_cells=np.array([1, 44, 90, 149]),
        **kw,
    )
    ref_mean = md.profile_mean(prof, train)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(pca_rows.toarray(), prof[[1, 44, 90, 149]].toarray())
    ref = _in_memory_batches(
        ids, vals, prof, mean, counts if with_counts else None, store.batch_codes
    )
    for idx in (np.array([0, 5, 39, 40, 41]), np.array([79, 80, 149]), np.arange(120, 150)):
        got, want = store.get_batch(idx), ref(idx)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_streamed_pass_memory_does_not_grow_with_cells(tmp_path):
    """Peak traced allocation of pass 2 plus one epoch of batches: flat in the cell count."""
    peaks = []
    for n in (600, 2400):
        a, gene_scale, col_to_token, hvg = _prepared(n, seed=1)
        d = tmp_path / str(n)
        d.mkdir()
        bounds = np.append(np.arange(0, n, 100), n)
        train = np.arange(n)
        tracemalloc.start()
        store = ChunkStore(d, bounds)
        write_chunks(
            a,
            None,
            gene_scale,
            col_to_token,
            store=store,
            target_sum=1e4,
            max_tokens=32,
            chunk_size=100,
            hvg_cols=hvg,
            with_counts=True,
            train_idx=train,
            pca_cells=None,
        )
        order = chunk_order(bounds)(np.random.default_rng(0), train)
        for b in range(0, n - 31, 32):
            store.get_batch(np.sort(order[b : b + 32]))
        peaks.append(tracemalloc.get_traced_memory()[1] - n * 16)  # less per-cell indices
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0]


@pytest.fixture(scope="module")
def data():
    return dfm.datasets.synthetic_counts(120, 80, n_cell_types=3, n_batches=2, seed=0)


@pytest.mark.slow  # fast-suite budget: two trainings (150 s on the loaded shared machine)
def test_stream_pretrain_backed_equals_in_memory(data, tmp_path):
    from diffbio_sc.models import MaskedExpressionConfig

    cfg = MaskedExpressionConfig(hidden_dim=16, n_layers=1, n_heads=2, max_tokens=16)
    kw = dict(
        config=cfg,
        epochs=2,
        batch_size=32,
        n_top_genes=50,
        progress_bar=False,
        seed=0,
        batch_key="batch",
        chunk_size=50,
    )
    path = tmp_path / "t.h5ad"
    data.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    d = tmp_path / "stream"
    d.mkdir()
    m_backed = dfm.tl.pretrain(backed, stream=True, stream_dir=str(d), **kw)
    backed.file.close()
    assert list(d.iterdir()) == []  # temporary files removed
    m_mem = dfm.tl.pretrain(data, stream=True, **kw)
    p0, p1 = m_backed.get_weights(), m_mem.get_weights()
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k])
    t = m_mem.metadata["training"]
    assert t["stream"] is True and t["shuffle"] == "chunk-level"
    assert m_mem.metadata["tokenizer"]["median_source"].endswith("(histogram approximation)")
    with pytest.raises(dfm._validate.DfmInputError, match="stream_dir"):
        dfm.tl.pretrain(data, stream=True, stream_dir=str(tmp_path / "missing"), **kw)


@pytest.mark.slow  # 4-13 s: runs in CI's slow step (fast suite budget)
def test_stream_pretrain_max_steps_is_a_step_budget(data, tmp_path):
    """``max_steps`` stops mid-epoch; with ``epochs=None`` it decides the epochs."""
    from diffbio_sc.models import MaskedExpressionConfig

    cfg = MaskedExpressionConfig(hidden_dim=8, n_layers=1, n_heads=1, max_tokens=8)
    kw = dict(config=cfg, batch_size=32, n_top_genes=20, progress_bar=False, chunk_size=50)
    with pytest.raises(dfm._validate.DfmInputError, match="max_steps"):
        dfm.tl.pretrain(data, stream=True, max_steps=0, **kw)
    # 108 training cells, 3 steps per epoch: 4 steps are one epoch and one step.
    m = dfm.tl.pretrain(data, stream=True, stream_dir=str(tmp_path), max_steps=4, **kw)
    t = m.metadata["training"]
    assert (t["steps"], t["epochs"], t["epochs_run"], t["max_steps"]) == (4, 2, 2, 4)
    assert len(m.history["val_loss"]) == 2
    assert list(tmp_path.iterdir()) == []
