"""dfm.tl.pretrain and dfm.tl.embed: training loop, determinism, writing, streaming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

import anndata as ad  # noqa: E402

import diffbio_sc as dfm  # noqa: E402
from diffbio_sc._validate import DfmInputError  # noqa: E402

TINY = dict(hidden_dim=16, n_layers=1, n_heads=2, max_tokens=16, dropout=0.1, mask_ratio=0.3)
FAST = dict(epochs=2, batch_size=32, n_top_genes=50, progress_bar=False)


def _cfg(**kw):
    from diffbio_sc.models import MaskedExpressionConfig

    return MaskedExpressionConfig(vocab_size=10, **{**TINY, **kw})


@pytest.fixture(scope="module")
def data():
    return dfm.datasets.synthetic_counts(120, 80, n_cell_types=3, n_batches=2, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    return dfm.tl.pretrain(data, config=_cfg(), seed=0, batch_key="batch", **FAST)


def _params(model):
    from diffbio_sc.models._io import _flat_params

    return _flat_params(model)


def _snapshot(adata):
    return (
        adata.X.copy(),
        adata.obs.copy(),
        adata.var.copy(),
        set(adata.obsm.keys()),
        json.dumps(adata.uns.get("dfm", {}), default=str, sort_keys=True),
    )


def _assert_unchanged(adata, snap):
    X, obs, var, obsm, uns = snap
    assert (adata.X != X).nnz == 0
    assert adata.obs.equals(obs) and adata.var.equals(var)
    assert set(adata.obsm.keys()) == obsm
    assert json.dumps(adata.uns.get("dfm", {}), default=str, sort_keys=True) == uns


# ---------------------------------------------------------------- pretrain
def test_pretrain_history_metadata_and_tokenizer(trained, data):
    model = trained
    assert model.embed_drop.deterministic  # returned in eval mode
    h = model.history
    assert len(h["train_loss"]) == len(h["val_loss"]) == 2
    assert all(np.isfinite(h["train_loss"])) and all(np.isfinite(h["val_loss"]))
    meta = model.metadata
    # Vocabulary: every expressed gene with a median; token id = position + 4.
    expressed = np.asarray((data.X > 0).sum(axis=0)).ravel() > 0
    assert meta["genes"] == list(data.var_names[expressed])
    assert model.config.vocab_size == len(meta["genes"]) + 4
    assert meta["tokenizer"]["max_tokens"] == 16
    assert len(meta["profile_genes"]) == model.config.n_profile_genes == 50
    tr = meta["training"]
    assert tr["n_val"] == 12 and tr["n_train"] == 108 and tr["steps"] == 2 * (108 // 32) == 6
    assert tr["best_val_loss"] == pytest.approx(min(h["val_loss"]))


def test_pretrain_medians_match_gene_medians(trained, data):
    """The model's medians (computed on the fly) equal dfm.pp.gene_medians."""
    ref = dfm.pp.gene_medians(data, copy=True).var["dfm_median"]
    np.testing.assert_allclose(
        trained.metadata["medians"], ref[trained.metadata["genes"]].to_numpy()
    )
    assert trained.metadata["tokenizer"]["median_source"] == "computed on training data"


def test_pretrain_same_seed_same_weights(trained, data):
    again = dfm.tl.pretrain(data, config=_cfg(), seed=0, batch_key="batch", **FAST)
    other = dfm.tl.pretrain(data, config=_cfg(), seed=1, batch_key="batch", **FAST)
    p0, p1, p2 = _params(trained), _params(again), _params(other)
    assert p0.keys() == p1.keys()
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k])
    assert any(not np.array_equal(p0[k], p2[k]) for k in p0)
    assert trained.history == again.history


def test_pretrain_early_stopping_restores_best(data):
    # A vanishing learning rate cannot improve the validation loss, so
    # training stops after `patience` epochs without improvement.
    model = dfm.tl.pretrain(
        data,
        config=_cfg(),
        **{**FAST, "epochs": 8},
        learning_rate=1e-12,
        early_stopping_patience=1,
    )
    tr = model.metadata["training"]
    assert tr["stopped_early"] and tr["epochs_run"] == 2 and tr["best_epoch"] == 1


def test_pretrain_batch_key_conditions_decoders(trained):
    model = trained
    assert model.config.n_batches == 2
    assert model.metadata["batch_categories"] == ["batch_0", "batch_1"]
    assert model.batch_embed is not None


def test_pretrain_on_backed_data_matches_in_memory(trained, data, tmp_path):
    path = tmp_path / "t.h5ad"
    data.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    model = dfm.tl.pretrain(backed, config=_cfg(), seed=0, batch_key="batch", chunk_size=50, **FAST)
    backed.file.close()
    p0, p1 = _params(trained), _params(model)
    for k in p0:
        np.testing.assert_allclose(p0[k], p1[k], atol=1e-6)


def test_pretrain_restricted_vocabulary_and_no_validation(data):
    model = dfm.tl.pretrain(
        data, config=_cfg(), n_vocab_genes=30, validation_fraction=0.0, init="random", **FAST
    )
    assert len(model.metadata["genes"]) == 30 and model.config.vocab_size == 34
    # The profile genes are drawn from the vocabulary.
    assert set(model.metadata["profile_genes"]) <= set(model.metadata["genes"])
    assert model.history["val_loss"] == [] and model.metadata["training"]["best_epoch"] is None
    adata = data.copy()
    dfm.tl.embed(adata, model, progress_bar=False)  # other genes are ignored
    assert adata.uns["dfm"]["embeddings"]["X_dfm"]["gene_coverage"] == 1.0
    assert np.isfinite(adata.obsm["X_dfm"]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_key="nope"), "nope"),
        (dict(epochs=0), "epochs"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(layer="counts"), "counts"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(init="zeros"), "init"),
    ],
)
def test_pretrain_rejects_bad_input_and_leaves_adata_unchanged(data, kwargs, match):
    snap = _snapshot(data)
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.pretrain(data, config=_cfg(), **{**FAST, **kwargs})
    _assert_unchanged(data, snap)


def test_pretrain_rejects_negative_values():
    bad = dfm.datasets.synthetic_counts(40, 30, seed=1)
    bad.X = bad.X.astype(np.float32)
    bad.X.data[0] = -1.0
    snap = _snapshot(bad)
    with pytest.raises(DfmInputError, match="negative"):
        dfm.tl.pretrain(bad, config=_cfg(), **FAST)
    _assert_unchanged(bad, snap)


# ---------------------------------------------------------------- embed
def test_embed_writes_obsm_and_uns_and_survives_h5ad(trained, data, tmp_path):
    adata = data.copy()
    dfm.tl.embed(adata, trained, batch_size=32, progress_bar=False)
    X = adata.obsm["X_dfm"]
    assert X.dtype == np.float32 and X.shape == (120, 16) and np.isfinite(X).all()
    entry = adata.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["source"] == "dfm"
    assert entry["model_family"] == "single_cell_transformer"
    assert entry["adapter_mode"] == "native_trainable"
    assert entry["pooling_strategy"] == "mean"
    assert entry["n_dims"] == 16 and len(entry["config_sha256"]) == 64
    assert entry["gene_coverage"] == 1.0
    assert entry["created_by"]["function"] == "diffbio_sc.tl.embed"
    assert entry["training"]["steps"] == trained.metadata["training"]["steps"]
    path = tmp_path / "e.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["X_dfm"], X)
    assert back.uns["dfm"]["embeddings"]["X_dfm"]["config_sha256"] == entry["config_sha256"]
    # The embedding is the model's forward pass on the tokenizer's tokens.
    from diffbio_sc.pp._tokenize import rank_value_encode

    med = np.asarray(trained.metadata["medians"])
    cols = data.var_names.get_indexer(trained.metadata["genes"])
    scale = np.zeros(data.n_vars)
    scale[cols] = 1.0 / med
    gidx, vals, _ = rank_value_encode(data.X[:5], scale, target_sum=1e4, max_tokens=16)
    tok = np.zeros(data.n_vars, np.int32)
    tok[cols] = np.arange(cols.size) + 4
    ids = np.where(gidx >= 0, tok[np.maximum(gidx, 0)], 0)
    ref = np.asarray(trained.embed(ids, vals))
    np.testing.assert_allclose(X[:5], ref, atol=1e-5)


def test_embed_independent_of_batch_composition(trained, data):
    full = data.copy()
    dfm.tl.embed(full, trained, batch_size=32, progress_bar=False)
    rng = np.random.default_rng(0)
    idx = rng.permutation(data.n_obs)[:37]
    sub = data[idx].copy()
    dfm.tl.embed(sub, trained, batch_size=8, progress_bar=False)
    np.testing.assert_allclose(sub.obsm["X_dfm"], full.obsm["X_dfm"][idx], atol=1e-5)


def test_embed_from_saved_model_and_copy(trained, data, tmp_path):
    path = trained.save(tmp_path / "model")
    adata = data.copy()
    out = dfm.tl.embed(adata, str(path), batch_size=32, copy=True, progress_bar=False)
    assert "X_dfm" not in adata.obsm and out is not adata
    ref = data.copy()
    dfm.tl.embed(ref, trained, batch_size=32, progress_bar=False)
    np.testing.assert_allclose(out.obsm["X_dfm"], ref.obsm["X_dfm"], atol=1e-6)
    assert out.uns["dfm"]["embeddings"]["X_dfm"]["model_path"] == str(path)


def test_embed_gene_vocabulary_mismatch_names_missing_genes(trained, data):
    n_model = len(trained.metadata["genes"])
    other = data[:, trained.metadata["genes"][:20]].copy()
    first_missing = trained.metadata["genes"][20]
    snap = _snapshot(other)
    with pytest.raises(
        DfmInputError, match=rf"Only 20 of the model's {n_model} genes.*'{first_missing}'"
    ):
        dfm.tl.embed(other, trained, progress_bar=False)
    _assert_unchanged(other, snap)
    # Allowed when the caller lowers the coverage threshold; unknown genes ignored.
    dfm.tl.embed(other, trained, min_gene_coverage=0.2, progress_bar=False)
    entry = other.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["gene_coverage"] == pytest.approx(20 / n_model)


def test_embed_rejects_bad_arguments(trained, data):
    adata = data.copy()
    snap = _snapshot(adata)
    with pytest.raises(TypeError, match="model"):
        dfm.tl.embed(adata, model=42)
    with pytest.raises(TypeError, match="only used with model=None"):
        dfm.tl.embed(adata, trained, epochs=3)
    with pytest.raises(DfmInputError, match="batch_size"):
        dfm.tl.embed(adata, trained, batch_size=0)
    with pytest.raises(FileNotFoundError):
        dfm.tl.embed(adata, "/nonexistent/model")
    _assert_unchanged(adata, snap)


def test_embed_without_model_pretrains(trained, data):
    adata = data.copy()
    kw = {k: v for k, v in FAST.items() if k != "batch_size"}
    dfm.tl.embed(adata, config=_cfg(), seed=0, batch_key="batch", pretrain_batch_size=32, **kw)
    assert adata.uns["dfm"]["embeddings"]["X_dfm"]["training"]["steps"] == 6
    expect = data.copy()
    dfm.tl.embed(expect, trained, progress_bar=False)
    np.testing.assert_allclose(adata.obsm["X_dfm"], expect.obsm["X_dfm"], atol=1e-6)


def test_embed_streams_backed_anndata(trained, data, tmp_path):
    path = tmp_path / "b.h5ad"
    data.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    dfm.tl.embed(backed, trained, batch_size=16, chunk_size=25, progress_bar=False)
    mem = data.copy()
    dfm.tl.embed(mem, trained, batch_size=32, progress_bar=False)
    np.testing.assert_allclose(backed.obsm["X_dfm"], mem.obsm["X_dfm"], atol=1e-5)
    backed.file.close()


def test_embed_data_parallel_two_devices_matches_one(trained, data, tmp_path):
    model_dir = trained.save(tmp_path / "model")
    h5 = tmp_path / "d.h5ad"
    data.write_h5ad(h5)
    script = textwrap.dedent(
        f"""
        import anndata as ad, numpy as np, jax
        import diffbio_sc as dfm
        assert jax.device_count() == 2, jax.devices()
        a = ad.read_h5ad({str(h5)!r})
        dfm.tl.embed(a, {str(model_dir)!r}, batch_size=15, progress_bar=False)
        assert a.uns['dfm']['embeddings']['X_dfm']['n_devices'] == 2
        np.save({str(tmp_path / "two.npy")!r}, a.obsm['X_dfm'])
        """
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    res = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    one = data.copy()
    dfm.tl.embed(one, trained, batch_size=32, progress_bar=False)
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), one.obsm["X_dfm"], atol=1e-5)


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_demo_end_to_end_beats_chance_clearly():
    from sklearn.metrics import f1_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    adata = dfm.datasets.celllines_demo()
    dfm.tl.embed(adata, epochs=3, progress_bar=False)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    pred = cross_val_predict(KNeighborsClassifier(15), adata.obsm["X_dfm"], y, cv=5)
    assert f1_score(y, pred, average="macro") > 0.8
