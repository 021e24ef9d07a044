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

    return MaskedExpressionConfig(**{**TINY, **kw})  # vocab_size is set by pretrain


@pytest.fixture(scope="module")
def data():
    return dfm.datasets.synthetic_counts(120, 80, n_cell_types=3, n_batches=2, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    return dfm.tl.pretrain(data, config=_cfg(), seed=0, batch_key="batch", **FAST)


@pytest.fixture(scope="module")
def embedded(trained, data):
    """``data`` embedded once with ``trained`` (batch 32): the reference embedding."""
    out = data.copy()
    dfm.tl.embed(out, trained, batch_size=32, progress_bar=False)
    return out.obsm["X_dfm"]


def _params(model):
    return model.get_weights()


def _model_inputs_via_tokenize(adata, model):
    """The model's input tokens, from the public tokenizer plus a plain reference.

    Token ids come from ``dfm.pp.tokenize`` (given the model's gene medians),
    mapped from its vocabulary (``var_names`` position + 4) to the model's;
    values are ``count / cell total * 1e4 / median`` computed here in NumPy.
    """
    genes = model.metadata["genes"]
    med = dict(zip(genes, model.metadata["medians"], strict=True))
    max_tokens = model.config.max_tokens
    tok = dfm.pp.tokenize(adata, gene_medians=med, max_tokens=max_tokens, copy=True)
    var_ids = tok.obsm["dfm_tokens"]
    model_pos = {g: i for i, g in enumerate(genes)}
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    ids = np.zeros(var_ids.shape, np.int32)
    vals = np.zeros(var_ids.shape, np.float32)
    for c in range(adata.n_obs):
        total = X[c].sum()
        for t, v in enumerate(var_ids[c]):
            if v == 0:  # <pad>
                break
            gene = adata.var_names[v - 4]
            ids[c, t] = model_pos[gene] + 4
            vals[c, t] = X[c, v - 4] / total * 1e4 / med[gene]
    return ids, vals


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
    if hasattr(X, "nnz"):
        assert (adata.X != X).nnz == 0
    else:
        np.testing.assert_array_equal(adata.X, X)
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
    # batch_key with the default config: the batch adversary is on at weight 0.1 and the
    # bottleneck is variational; the adversary's cross-entropy (near log(2) for two
    # batches at the start) and the KL are recorded per epoch.
    assert model.config.batch_adversary_weight == 0.1 and model.adversary_in is not None
    assert model.config.variational is True and model.z_mean is not None
    assert len(h["train_adversary_loss"]) == len(h["train_kl_loss"]) == 2
    assert 0.3 < h["train_adversary_loss"][0] < 1.5 and h["train_kl_loss"][0] > 0
    assert "adversarial batch classifier" in tr["objective"] and "variational" in tr["objective"]


def test_default_budget_rule():
    from diffbio_sc.tl._pretrain import auto_epochs

    # ceil(600 / (n_train // 64)) clipped to [5, 40]
    assert auto_epochs(1080, 64) == 38  # 16 steps per epoch: 608 steps (PBMC)
    assert auto_epochs(1777, 64) == 23  # 27 steps per epoch: 621 steps (Kang)
    assert auto_epochs(500, 64) == 40  # small data: 40 epochs (280 steps)
    assert auto_epochs(100_000, 64) == 5  # large data: 5 epochs
    assert auto_epochs(10, 64) == 40  # one step per epoch


@pytest.mark.slow  # 4-13 s: runs in CI's slow step (fast suite budget)
def test_pretrain_knn_agreement_monitor_and_stop(trained, data):
    # off by default (not computed: its embedding pass costs ~3% of a default run)
    assert trained.history["val_knn_agreement"] == []
    # computing it changes nothing else: 2 epochs give one agreement (< 1.0, no
    # stop), and the same weights and validation losses as without it
    watched = dfm.tl.pretrain(
        data, config=_cfg(), seed=0, batch_key="batch", stop_agreement=1.0, **FAST
    )
    assert len(watched.history["val_knn_agreement"]) == 1
    assert watched.history["val_loss"] == trained.history["val_loss"]
    for name, w in _params(trained).items():
        np.testing.assert_array_equal(_params(watched)[name], w, err_msg=name)
    # stop_agreement=0: every epoch after the first qualifies; two in a row are
    # needed and training never stops before 5 epochs (the minimum of the budget rule).
    model = dfm.tl.pretrain(
        data, config=_cfg(), seed=0, stop_agreement=0.0, **{**FAST, "epochs": 8}
    )
    tr = model.metadata["training"]
    assert tr["epochs_run"] == 5 and tr["stopped_early"]
    h = model.history["val_knn_agreement"]
    assert len(h) == 4 and all(0.0 <= a <= 1.0 for a in h)  # from the second epoch on


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


@pytest.mark.slow  # one more compiled training step (the averaged one)
def test_pretrain_ema_is_recorded_seeded_and_changes_the_weights(trained, data):
    avg = dfm.tl.pretrain(data, config=_cfg(), seed=0, batch_key="batch", ema=0.9, **FAST)
    again = dfm.tl.pretrain(data, config=_cfg(), seed=0, batch_key="batch", ema=0.9, **FAST)
    assert avg.metadata["training"]["ema"] == 0.9
    assert trained.metadata["training"]["ema"] is None
    p0, p1, p2 = _params(trained), _params(avg), _params(again)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert any(not np.array_equal(p0[k], p1[k]) for k in p0)


def test_pretrain_average_checkpoints_returns_the_mean_of_the_epochs_weights(data, monkeypatch):
    """The model holds the mean of the weights a plain run (same seed) has at the checkpoints."""
    from diffbio_sc.tl import _pretrain

    seen = {}

    def recorder(data_fn, val_idx, seed, stop, min_epochs):
        def epoch_end(model, epoch):  # read-only: the run is a plain run
            seen[epoch + 1] = {k: np.array(v) for k, v in model.get_weights().items()}
            return {}, False

        return epoch_end

    kw = dict(config=_cfg(), seed=0, **{**FAST, "epochs": 3})
    with monkeypatch.context() as m:
        m.setattr(_pretrain, "_agreement_monitor", recorder)
        plain = dfm.tl.pretrain(data, **kw)
    avg = dfm.tl.pretrain(data, average_checkpoints=[1.0, 0.5], **kw)
    tr = avg.metadata["training"]
    assert tr["average_checkpoints"] == [0.5, 1.0] and tr["checkpoint_epochs"] == [2, 3]
    assert plain.metadata["training"]["average_checkpoints"] is None
    assert avg.history["val_loss"] == plain.history["val_loss"]  # the same training
    got, last = avg.get_weights(), plain.get_weights()
    for k in got:
        np.testing.assert_allclose(got[k], (seen[2][k] + seen[3][k]) / 2, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(got[k], last[k]) for k in got)
    # dfm.tl.embed passes the option on and writes the averaged model's embedding
    a, b = data.copy(), data.copy()
    dfm.tl.embed(a, avg, batch_size=32, progress_bar=False)
    ekw = {k: v for k, v in kw.items() if k != "batch_size"}
    dfm.tl.embed(b, batch_size=32, pretrain_batch_size=32, average_checkpoints=(0.5, 1.0), **ekw)
    np.testing.assert_allclose(b.obsm["X_dfm"], a.obsm["X_dfm"], rtol=1e-5, atol=1e-6)
    assert list(b.uns["dfm"]["embeddings"]["X_dfm"]["training"]["checkpoint_epochs"]) == [2, 3]


@pytest.mark.slow  # fast-suite budget: runs in the slow CI step
def test_pretrain_loop_modes_batch_codes_early_stopping_and_bar(trained, data, monkeypatch, capsys):
    """Spy on the compiled steps of one run: dropout on in the train step and off in
    validation; each minibatch row's batch code and bottleneck target belong to
    the cell whose tokens are in that row; early stopping on the validation loss
    restores the best epoch's weights; a progress bar shows the loss.
    """
    import jax
    from flax import nnx

    from diffbio_sc.models import _train
    from diffbio_sc.tl import _pretrain

    real_train, _ = _train._steps(_pretrain._masked_loss)
    ids_by_cell, _ = _model_inputs_via_tokenize(data, trained)
    cell_of_row = {row.tobytes(): c for c, row in enumerate(ids_by_cell)}
    assert len(cell_of_row) == data.n_obs  # token rows identify the cells
    codes = np.unique(data.obs["batch"].astype(str), return_inverse=True)[1]
    seen = {"train_det": set(), "eval_det": set(), "cells": [], "bc": [], "prof": []}

    def spy_train(graphdef, state, lr, batch, key):
        model, _ = nnx.merge(graphdef, state)
        seen["train_det"].add(model.embed_drop.deterministic)
        seen["cells"].extend(cell_of_row[row.tobytes()] for row in np.asarray(batch["ids"]))
        seen["bc"].extend(np.asarray(batch["batch_codes"]).tolist())
        seen["prof"].append(np.asarray(batch["profile"]))
        return real_train(graphdef, state, lr, batch, key)

    val_losses = iter([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])  # best at epoch 2
    snapshots = []

    def fake_eval(model, batch, key):
        seen["eval_det"].add(model.embed_drop.deterministic)
        snapshots.append([np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
        return np.float32(next(val_losses))

    monkeypatch.setattr(_train, "_steps", lambda loss_fn, cpu=False: (spy_train, fake_eval))
    capsys.readouterr()
    model = dfm.tl.pretrain(
        data,
        config=_cfg(),
        seed=0,
        batch_key="batch",
        **{**FAST, "epochs": 6, "progress_bar": True},
        early_stopping_patience=2,
    )
    err = capsys.readouterr().err
    assert "pretrain" in err and "loss=" in err  # tqdm bar showing the loss
    assert seen["train_det"] == {False} and seen["eval_det"] == {True}
    cells = np.asarray(seen["cells"])
    assert cells.size == 4 * 3 * 32  # 4 epochs x 3 steps x 32 cells
    np.testing.assert_array_equal(seen["bc"], codes[cells])
    # Decoder targets (profile_likelihood='nb', the default): the raw counts of
    # the profile genes of the cell in that row.
    X = data.X.toarray().astype(np.float64)
    logn = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    cols = data.var_names.get_indexer(model.metadata["profile_genes"])
    mean = np.asarray(model.metadata["profile_mean"])
    np.testing.assert_array_equal(np.concatenate(seen["prof"]), X[cells][:, cols])
    # profile_mean (used by the PCA initialisation) is the mean of
    # log1p(count / total * 1e4) over the training cells (with this seed, every one of them
    # was drawn at least once; validation cells never are).
    train_cells = np.unique(cells)
    assert train_cells.size == model.metadata["training"]["n_train"] == 108
    np.testing.assert_allclose(mean, logn[train_cells][:, cols].mean(axis=0), rtol=1e-5)
    tr = model.metadata["training"]
    assert tr["stopped_early"] and tr["epochs_run"] == 4 and tr["best_epoch"] == 2
    assert model.history["val_loss"] == [3.0, 1.0, 2.0, 4.0] and tr["best_val_loss"] == 1.0
    assert len(snapshots) == 4  # one validation batch per epoch
    final = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    for got, want in zip(final, snapshots[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(final, snapshots[3], strict=True))


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_pretrain_batch_key_conditions_decoders_not_the_encoder(trained, data):
    """The batch label changes both decoders' losses (the encoder takes no batch input)."""
    import jax

    model = trained
    assert model.metadata["batch_categories"] == ["batch_0", "batch_1"]
    ids, vals = _model_inputs_via_tokenize(data[:6].copy(), model)
    key = jax.random.key(0)
    n_prof = model.config.n_profile_genes
    prof = (np.arange(6 * n_prof).reshape(6, n_prof) % 4).astype(np.float32)  # counts
    out = {}
    for b in (0, 1):
        codes = np.full(6, b, np.int32)
        loss, parts = model.loss(ids, vals, key=key, profile=prof, batch=codes)
        out[b] = (float(parts["value"]), float(parts["profile"]))
    assert out[0][0] != out[1][0] and out[0][1] != out[1][1]
    # The encoder never sees the batch: ``embed`` takes no batch input at all.


def test_pretrain_on_backed_data_matches_in_memory(trained, data, tmp_path):
    path = tmp_path / "t.h5ad"
    data.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    model = dfm.tl.pretrain(backed, config=_cfg(), seed=0, batch_key="batch", chunk_size=50, **FAST)
    backed.file.close()
    p0, p1 = _params(trained), _params(model)
    for k in p0:
        np.testing.assert_allclose(p0[k], p1[k], atol=1e-6)


@pytest.mark.slow
def test_pretrain_restricted_vocabulary_and_no_validation(data, caplog):
    import logging

    model = dfm.tl.pretrain(
        data, config=_cfg(), n_vocab_genes=30, validation_fraction=0.0, init="random", **FAST
    )
    assert len(model.metadata["genes"]) == 30 and model.config.vocab_size == 34
    # The profile genes are drawn from the vocabulary.
    assert set(model.metadata["profile_genes"]) <= set(model.metadata["genes"])
    assert model.history["val_loss"] == [] and model.metadata["training"]["best_epoch"] is None
    # Other genes are ignored; a cell expressing none of the model's genes is
    # embedded (as the zero vector with mean pooling) and reported.
    adata = data.copy()
    outside = np.flatnonzero(~adata.var_names.isin(model.metadata["genes"]))[0]
    X = adata.X.tolil()
    X[3, :] = 0
    X[3, outside] = 7
    adata.X = X.tocsr()
    logger = logging.getLogger("diffbio_sc")
    logger.addHandler(caplog.handler)
    try:
        dfm.tl.embed(adata, model, batch_size=32, progress_bar=False)
    finally:
        logger.removeHandler(caplog.handler)
    entry = adata.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["gene_coverage"] == 1.0 and entry["n_cells_without_gene_tokens"] == 1
    assert "1 of 120 cells express none of the model's genes" in caplog.text
    assert f"'{adata.obs_names[3]}'" in caplog.text
    emb = adata.obsm["X_dfm"]
    assert np.isfinite(emb).all() and not emb[3].any()
    assert (np.abs(np.delete(emb, 3, axis=0)).sum(axis=1) > 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_key="nope"), "nope"),
        (dict(epochs=0), "epochs"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(layer="counts"), "counts"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(init="zeros"), "init"),
        (dict(seed=-1), "seed"),
        (dict(stop_agreement=1.5), "stop_agreement"),
        (dict(stop_agreement=-0.1), "stop_agreement"),
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
@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
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
    # The embedding is the model's forward pass on dfm.pp.tokenize's tokens.
    ids, vals = _model_inputs_via_tokenize(data[:5].copy(), trained)
    assert (ids[:, -1] != 0).all()  # every cell fills the 16-token context
    np.testing.assert_allclose(X[:5], np.asarray(trained.embed(ids, vals)), atol=1e-5)


def test_embed_independent_of_batch_composition(trained, data, embedded):
    rng = np.random.default_rng(0)
    idx = rng.permutation(data.n_obs)[:37]  # other cells, other order, other batch size
    sub = data[idx].copy()
    dfm.tl.embed(sub, trained, batch_size=16, progress_bar=False)
    np.testing.assert_allclose(sub.obsm["X_dfm"], embedded[idx], atol=1e-5)
    # Distinct cells get distinct embeddings (the comparison above is not vacuous).
    assert np.linalg.norm(embedded[idx[0]] - embedded[idx[1]]) > 1e-2


def test_embed_from_saved_model_and_copy(trained, data, embedded, tmp_path):
    path = trained.save(tmp_path / "model")
    adata = data.copy()
    out = dfm.tl.embed(adata, str(path), batch_size=32, copy=True, progress_bar=False)
    assert "X_dfm" not in adata.obsm and out is not adata
    np.testing.assert_allclose(out.obsm["X_dfm"], embedded, atol=1e-6)
    # A model left in training mode is embedded without dropout and stays in its mode.
    trained.train()
    try:
        again = dfm.tl.embed(data, trained, batch_size=32, copy=True, progress_bar=False)
        assert not trained.embed_drop.deterministic
    finally:
        trained.eval()
    np.testing.assert_allclose(again.obsm["X_dfm"], embedded, atol=1e-6)
    entry = out.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["model_path"] == str(path.resolve()) and entry["weights_retrievable"]
    assert (
        entry["weights_sha256"] == json.loads((path / "config.json").read_text())["weights_sha256"]
    )


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
    dfm.tl.embed(other, trained, min_gene_coverage=0.2, batch_size=32, progress_bar=False)
    entry = other.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["gene_coverage"] == pytest.approx(20 / n_model)


def test_gene_mapping_ignores_ensembl_versions_like_tokenize():
    import pandas as pd

    from diffbio_sc.tl._model_data import gene_mapping

    genes = ["ENSG00000000003.14", "ENSG00000000005", "TP53"]
    var = pd.Index(["TP53", "ENSG00000000005.6", "XIST", "ENSG00000000003"])
    scale, tok, summary = gene_mapping(genes, np.array([2.0, 4.0, 0.5]), var, min_gene_coverage=1)
    np.testing.assert_allclose(scale, [2.0, 0.25, 0.0, 0.5])
    np.testing.assert_array_equal(tok, [6, 5, 0, 4])
    assert summary == {"n_model_genes": 3, "n_genes_found": 3, "gene_coverage": 1.0}
    # Names that collide once versions are removed are matched exactly instead.
    var2 = pd.Index(["ENSG00000000005.1", "ENSG00000000005.2", "TP53"])
    with pytest.raises(DfmInputError, match=r"Only 1 of the model's 3 genes.*ENSG00000000003\.14"):
        gene_mapping(genes, np.ones(3), var2, min_gene_coverage=0.5)
    with pytest.raises(DfmInputError, match="corrupt"):
        gene_mapping(["A", "A"], np.ones(2), var, min_gene_coverage=0.0)


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


def test_embed_without_model_pretrains(data, embedded):
    adata = data.copy()
    kw = {k: v for k, v in FAST.items() if k != "batch_size"}
    dfm.tl.embed(
        adata,
        batch_size=32,
        config=_cfg(),
        seed=0,
        batch_key="batch",
        pretrain_batch_size=32,
        **kw,
    )
    assert adata.uns["dfm"]["embeddings"]["X_dfm"]["training"]["steps"] == 6
    np.testing.assert_allclose(adata.obsm["X_dfm"], embedded, atol=1e-6)


def test_embed_streams_backed_anndata(trained, data, embedded, tmp_path):
    path = tmp_path / "b.h5ad"
    data.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    dfm.tl.embed(backed, trained, batch_size=16, chunk_size=25, progress_bar=False)
    np.testing.assert_allclose(backed.obsm["X_dfm"], embedded, atol=1e-5)
    backed.file.close()


@pytest.mark.slow
def test_embed_data_parallel_two_devices_matches_one(trained, data, embedded, tmp_path):
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
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), embedded, atol=1e-5)


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_demo_end_to_end_close_to_pca_in_the_same_run():
    """kNN macro-F1 of the default pipeline, relative to PCA on the same cells and folds."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    from diffbio_sc.tl._baselines import pca_baseline

    adata = dfm.datasets.celllines_demo()
    dfm.tl.embed(adata, epochs=3, progress_bar=False)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def f1(rep):
        pred = cross_val_predict(KNeighborsClassifier(15), rep, y, cv=cv)
        return f1_score(y, pred, average="macro")

    f1_dfm, f1_pca = f1(adata.obsm["X_dfm"]), f1(pca_baseline(adata))
    chance = 1.0 / len(np.unique(y))
    # PCA scores about 0.98 here; 3 epochs of pretraining must come close to it.
    assert f1_dfm > chance + 0.5
    assert f1_dfm >= f1_pca - 0.06, (f1_dfm, f1_pca)


def test_model_tokens_sum_duplicate_entries_like_the_tokenizer():
    """A non-canonical CSR (a gene stored twice in a cell) is summed, as dfm.pp.tokenize does."""
    import scipy.sparse as sp

    from diffbio_sc.tl._model_data import iter_token_chunks

    # cell 0 stores gene 1 as 2 + 3 (= 5 counts); cell 1 is canonical
    dup = sp.csr_matrix(
        (
            np.array([1, 2, 3, 4, 2], dtype=np.float32),
            np.array([0, 1, 1, 2, 0]),
            np.array([0, 4, 5]),
        ),
        shape=(2, 3),
    )
    assert not dup.has_canonical_format
    canon = dup.copy()
    canon.sum_duplicates()
    scale = np.ones(3)
    col_to_token = np.arange(3, dtype=np.int32) + 4
    out = []
    for X in (dup, canon):
        a = ad.AnnData(X)
        out.append(
            list(
                iter_token_chunks(
                    a, None, scale, col_to_token, target_sum=10.0, max_tokens=3, chunk_size=1
                )
            )
        )
    for (_, _, ids_d, vals_d), (_, _, ids_c, vals_c) in zip(*out, strict=True):
        np.testing.assert_array_equal(ids_d, ids_c)
        np.testing.assert_allclose(vals_d, vals_c)
    # by hand: cell 0 = [1, 5, 4] / 10 * 10 -> genes 1, 2, 0 -> tokens 5, 6, 4
    np.testing.assert_array_equal(out[0][0][2], [[5, 6, 4]])
    np.testing.assert_allclose(out[0][0][3], [[5.0, 4.0, 1.0]])


def _split_entries(X):
    """The same counts with every entry >= 2 stored twice (1 + rest): a non-canonical CSR."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    rows, cols, vals = [], [], []
    for r in range(X.shape[0]):
        for j, v in zip(
            X.indices[X.indptr[r] : X.indptr[r + 1]],
            X.data[X.indptr[r] : X.indptr[r + 1]],
            strict=True,
        ):
            parts = [1.0, v - 1.0] if v >= 2 else [v]
            for p in parts:
                rows.append(r)
                cols.append(j)
                vals.append(p)
    indptr = np.searchsorted(rows, np.arange(X.shape[0] + 1))
    dup = sp.csr_matrix((np.asarray(vals, np.float32), np.asarray(cols), indptr), shape=X.shape)
    assert not dup.has_canonical_format
    return dup


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_pretrain_profiles_sum_duplicate_entries():
    """Bottleneck targets from a CSR storing a count as 2 + 3 use log1p(5), not log1p(2)+log1p(3)."""
    canon = dfm.datasets.synthetic_counts(60, 40, n_cell_types=2, seed=3)
    dup = canon.copy()
    dup.X = _split_entries(canon.X)
    kw = dict(config=_cfg(), seed=0, validation_fraction=0.0)
    kw.update({**FAST, "epochs": 1, "n_top_genes": 10})
    m_d = dfm.tl.pretrain(dup, **kw)
    m_c = dfm.tl.pretrain(canon, **kw)
    # Independent reference (all cells train): the mean of log1p(count / total * 1e4).
    X = canon.X.toarray().astype(np.float64)
    logn = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    assert m_d.metadata["profile_genes"] == m_c.metadata["profile_genes"]
    cols = canon.var_names.get_indexer(m_c.metadata["profile_genes"])
    ref = logn[:, cols].mean(axis=0)
    np.testing.assert_allclose(m_c.metadata["profile_mean"], ref, rtol=1e-5)
    np.testing.assert_allclose(m_d.metadata["profile_mean"], ref, rtol=1e-5)
    for k, v in m_c.get_weights().items():
        np.testing.assert_allclose(m_d.get_weights()[k], v, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------- hardening (issue 9)
def _no_read(monkeypatch):
    """Fail the test if the matrix is read: argument errors must come first."""
    from diffbio_sc.tl import _model_data

    def boom(*a, **k):
        raise AssertionError("the matrix was read before the arguments were checked")

    monkeypatch.setattr(_model_data, "_chunks", boom)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(epochs=2.5), TypeError, "epochs"),
        (dict(epochs="3"), TypeError, "epochs"),
        (dict(seed=0.7), TypeError, "seed"),
        (dict(seed=2**64), DfmInputError, "seed"),
        (dict(batch_size=0), DfmInputError, "batch_size"),
        (dict(chunk_size=0), DfmInputError, "chunk_size"),
        (dict(chunk_size=2.5), TypeError, "chunk_size"),
        (dict(weight_decay=float("nan")), DfmInputError, "weight_decay"),
        (dict(grad_clip=float("nan")), DfmInputError, "grad_clip"),
        (dict(learning_rate=float("inf")), DfmInputError, "learning_rate"),
        (dict(target_sum=0), DfmInputError, "target_sum"),
        (dict(validation_fraction=float("nan")), DfmInputError, "validation_fraction"),
        (dict(warmup_fraction=1.0), DfmInputError, "warmup_fraction"),
        (dict(n_top_genes=0), DfmInputError, "n_top_genes"),
        (dict(max_tokens=0), DfmInputError, "max_tokens"),
        (dict(early_stopping_patience=0), DfmInputError, "early_stopping_patience"),
        (dict(progress_bar="yes"), TypeError, "progress_bar"),
        (dict(config={"hidden_dim": 8}), TypeError, "MaskedExpressionConfig"),
        (dict(ema=1.0), DfmInputError, "ema is the decay"),
        (dict(ema="0.99"), TypeError, "ema"),
        (dict(average_checkpoints=(0.5, 2.0)), DfmInputError, "average_checkpoints"),
        (dict(average_checkpoints="last"), TypeError, "average_checkpoints"),
    ],
)
def test_pretrain_checks_every_argument_before_reading(data, monkeypatch, kwargs, err, match):
    _no_read(monkeypatch)
    snap = _snapshot(data)
    with pytest.raises(err, match=match):
        dfm.tl.pretrain(data, **{"config": _cfg(), **FAST, **kwargs})
    _assert_unchanged(data, snap)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(key_added=None), TypeError, "key_added"),
        (dict(key_added=""), DfmInputError, "key_added"),
        (dict(key_added="a/b"), DfmInputError, "key_added"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(min_gene_coverage=float("nan")), DfmInputError, "min_gene_coverage"),
        (dict(min_gene_coverage=1.5), DfmInputError, "min_gene_coverage"),
        (dict(chunk_size=0), DfmInputError, "chunk_size"),
        (dict(copy="yes"), TypeError, "copy"),
        (dict(progress_bar=1), TypeError, "progress_bar"),
        (dict(save_model=42), TypeError, "model path"),
    ],
)
def test_embed_checks_every_argument_before_reading(trained, data, monkeypatch, kwargs, err, match):
    _no_read(monkeypatch)
    adata = data.copy()
    snap = _snapshot(adata)
    with pytest.raises(err, match=match):
        dfm.tl.embed(adata, trained, **kwargs)
    _assert_unchanged(adata, snap)


def test_embed_refuses_to_save_over_user_files(trained, data, tmp_path, monkeypatch):
    _no_read(monkeypatch)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "afile").write_text("x")
    adata = data.copy()
    snap = _snapshot(adata)
    for target in (tmp_path / "mine", tmp_path / "afile"):
        with pytest.raises(FileExistsError):
            dfm.tl.embed(adata, trained, save_model=target)
    _assert_unchanged(adata, snap)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_log_normalised_input_is_refused_with_the_layer_hint(data):
    lognorm = data.copy()
    X = lognorm.X.toarray().astype(np.float32)
    lognorm.X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    snap = _snapshot(lognorm)
    with pytest.raises(DfmInputError, match="layer="):
        dfm.tl.pretrain(lognorm, config=_cfg(), **FAST)
    _assert_unchanged(lognorm, snap)


def test_embed_refuses_log_normalised_input(trained, data):
    lognorm = data.copy()
    lognorm.X = lognorm.X.astype(np.float32) * 0.5
    snap = _snapshot(lognorm)
    with pytest.raises(DfmInputError, match="layer="):
        dfm.tl.embed(lognorm, trained, progress_bar=False)
    _assert_unchanged(lognorm, snap)


def test_non_numeric_median_column_is_an_error_not_nan(data):
    bad = data.copy()
    bad.var["dfm_median"] = ["1.0"] * (bad.n_vars - 1) + ["n/a"]
    snap = _snapshot(bad)
    with pytest.raises(DfmInputError, match="dfm_median"):
        dfm.tl.pretrain(bad, config=_cfg(), **FAST)
    _assert_unchanged(bad, snap)


def test_non_finite_cell_totals_are_an_error(trained, data):
    big = data.copy()
    X = big.X.toarray().astype(np.float64)
    X[2, :3] = 1e308  # whole numbers, but the cell's total overflows
    big.X = X
    snap = _snapshot(big)
    with pytest.raises(DfmInputError, match="1e308|finite|float64"):
        dfm.tl.pretrain(big, config=_cfg(), **FAST)
    with pytest.raises(DfmInputError, match="1e308|finite|float64"):
        dfm.tl.embed(big, trained, progress_bar=False)
    _assert_unchanged(big, snap)


def test_float16_counts_give_the_float32_embedding(trained, data, embedded):
    half = data.copy()
    half.X = half.X.toarray().astype(np.float16)  # counts < 2048 are exact in float16
    dfm.tl.embed(half, trained, batch_size=32, progress_bar=False)
    np.testing.assert_allclose(half.obsm["X_dfm"], embedded, atol=1e-5)


def test_object_dtype_counts_get_our_error(trained, data):
    obj = data.copy()
    obj.X = obj.X.toarray().astype(object)
    with pytest.raises(DfmInputError, match="dtype"):
        dfm.tl.embed(obj, trained, progress_bar=False)


@pytest.mark.slow
def test_embed_without_model_keeps_it_only_when_asked(data, tmp_path):
    small = data[:60].copy()
    kw = dict(
        config=_cfg(), seed=0, epochs=1, pretrain_batch_size=32, n_top_genes=20, progress_bar=False
    )
    a = small.copy()
    dfm.tl.embed(a, **kw)
    entry = a.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["weights_retrievable"] is False or entry["weights_retrievable"] == 0
    assert "weights_sha256" not in entry and "save_model" in entry["model_note"]
    b = small.copy()
    dfm.tl.embed(b, save_model=tmp_path / "kept", **kw)
    entry = b.uns["dfm"]["embeddings"]["X_dfm"]
    doc = json.loads((tmp_path / "kept" / "config.json").read_text())
    assert entry["weights_retrievable"] and entry["model_path"] == str(
        (tmp_path / "kept").resolve()
    )
    assert entry["weights_sha256"] == doc["weights_sha256"]
    # Same seed, same model: the unsaved and the saved run embed identically, and new
    # cells embedded later with the kept model land in the same space.
    np.testing.assert_allclose(a.obsm["X_dfm"], b.obsm["X_dfm"], atol=1e-6)
    later = data[60:].copy()
    dfm.tl.embed(later, tmp_path / "kept", progress_bar=False)
    full = data.copy()
    dfm.tl.embed(full, tmp_path / "kept", progress_bar=False)
    np.testing.assert_allclose(later.obsm["X_dfm"], full.obsm["X_dfm"][60:], atol=1e-5)


@pytest.mark.slow
def test_pretrain_with_cls_token_and_cls_pooling(data):
    cfg = _cfg(use_cls=True, pooling="cls", dropout=0.0)
    model = dfm.tl.pretrain(data, config=cfg, seed=0, **{**FAST, "epochs": 3})
    h = model.history["train_loss"]
    assert np.isfinite(h).all() and h[-1] < h[0]
    out = data[:8].copy()
    dfm.tl.embed(out, model, progress_bar=False)
    assert out.uns["dfm"]["embeddings"]["X_dfm"]["pooling_strategy"] == "cls"
    # The embedding is the <cls> token's final state (position 0 of the sequence).
    ids, vals = _model_inputs_via_tokenize(data[:8].copy(), model)
    hidden, _ = model(ids, vals)
    np.testing.assert_allclose(out.obsm["X_dfm"], np.asarray(hidden)[:, 0], atol=1e-5)
