"""Issue 24: no state shared between models; short ``repr``; a clear error for missing metadata."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

import anndata as ad  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import diffbio_sc as dfm  # noqa: E402
from diffbio_sc._validate import DfmInputError  # noqa: E402
from diffbio_sc.models import MaskedExpressionConfig  # noqa: E402
from diffbio_sc.models._masked import create_model  # noqa: E402

SAVED = Path(__file__).parent / "data" / "masked_v2_dd6d1e5"  # genes g0..g9
CFG = MaskedExpressionConfig(
    vocab_size=12, hidden_dim=8, n_layers=1, n_heads=2, max_tokens=4, dropout=0.0
)


def _two_models():
    return create_model(CFG, jax.random.key(0)), create_model(CFG, jax.random.key(1))


def test_models_of_one_architecture_share_no_metadata_after_jit():
    m1, m2 = _two_models()

    @nnx.jit
    def run(model, ids):
        return model.embed(ids, ids.astype(jnp.float32))

    ids = jnp.full((2, 4), 5, jnp.int32)
    run(m1, ids)
    run(m2, ids)  # a cache hit: the first call's graph definition is reused
    # metadata set after the compiled calls, as dfm.tl.pretrain sets it after training
    m1.metadata = {"genes": ["a", "b"]}
    m2.metadata = {"genes": ["x", "y"]}
    m2.history["train_loss"].append(1.0)
    assert m1.metadata == {"genes": ["a", "b"]}
    assert m1.history["train_loss"] == []
    assert m1.metadata is not m2.metadata
    # the jit cache is still shared (no recompilation per model)
    assert nnx.split(m1)[0] == nnx.split(m2)[0]


@pytest.mark.slow
def test_models_trained_by_fit_share_no_metadata():
    from diffbio_sc.models._train import TrainConfig, fit

    def loss_fn(model, batch, key):
        emb = model.embed(batch["ids"], batch["ids"].astype(jnp.float32))
        return jnp.mean(emb**2 * batch["weight"][:, None]), {}

    data = {"ids": np.random.default_rng(0).integers(4, 12, (8, 4)).astype(np.int32)}
    tc = TrainConfig(epochs=1, batch_size=4, seed=0, progress_bar=False)
    models = _two_models()
    for i, m in enumerate(models):
        fit(m, loss_fn, data, train_idx=np.arange(6), val_idx=[6, 7], config=tc)
        m.metadata = {"genes": [f"model{i}"]}
    assert [m.metadata["genes"] for m in models] == [["model0"], ["model1"]]


def test_metadata_is_a_copy_and_copies_of_models_are_independent():
    m, _ = _two_models()
    genes = ["a", "b"]
    m.metadata = {"genes": genes}
    genes.append("c")  # the caller's list is not the model's
    assert m.metadata["genes"] == ["a", "b"]
    dup = copy.deepcopy(m)
    assert dup.metadata == m.metadata
    dup.metadata["genes"].append("z")
    assert m.metadata["genes"] == ["a", "b"]
    np.testing.assert_array_equal(
        dup.get_weights()["gene_embed.embedding"], m.get_weights()["gene_embed.embedding"]
    )
    # a module rebuilt from its graph carries no metadata (not another model's)
    assert nnx.clone(m).metadata == {}


@pytest.mark.slow
def test_pretrain_twice_leaves_the_first_models_genes():
    data = dfm.datasets.synthetic_counts(48, 30, n_cell_types=2, seed=0)
    other = data.copy()
    other.var_names = [f"other_{g}" for g in data.var_names]
    kw = dict(
        config=MaskedExpressionConfig(hidden_dim=8, n_layers=1, n_heads=2, max_tokens=8),
        epochs=1,
        n_top_genes=10,
        progress_bar=False,
    )
    m1 = dfm.tl.pretrain(data, **kw)
    genes1 = list(m1.metadata["genes"])
    m2 = dfm.tl.pretrain(other, **kw)  # same architecture: the jit cache is hit
    assert m1.metadata["genes"] == genes1 and genes1[0].startswith("gene")
    assert m2.metadata["genes"][0].startswith("other_")


def test_native_model_repr_is_a_short_summary():
    m = dfm.models.load(SAVED)
    n = sum(v.size for v in m.get_weights().values())
    text = repr(m)
    lines = text.splitlines()
    assert lines[0] == "MaskedExpressionModel (native masked-expression transformer)"
    assert len(lines) <= 8
    assert "hidden_dim=8" in text and f"parameters: {n:,}" in text
    assert "genes: 10 (g0, g1, g2, ...)" in text and str(SAVED.resolve()) in text
    assert str(m) == text
    m.metadata = {
        **m.metadata,
        "training": {"n_cells": 120, "epochs_run": 2, "best_val_loss": 0.5},
        "batch_key": "batch",
    }
    assert "trained on: 120 cells, batch_key 'batch' (2 batches), 2 epochs, best val loss 0.5" in (
        repr(m)
    )
    # the nnx module tree is still there, and graph operations still work
    tree = nnx.reprlib.get_repr(m)
    assert "gene_embed" in tree and len(tree.splitlines()) > 50
    graphdef, state = nnx.split(m)
    back = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(
        back.get_weights()["value_head.kernel"], m.get_weights()["value_head.kernel"]
    )


@pytest.fixture
def cells():
    import pandas as pd

    rng = np.random.default_rng(0)
    return ad.AnnData(
        X=rng.poisson(3.0, (6, 10)).astype(np.float32),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(10)]),
    )


def test_saved_model_without_tokenizer_section_is_a_clear_error(tmp_path, cells):
    d = tmp_path / "model"
    shutil.copytree(SAVED, d)
    doc = json.loads((d / "config.json").read_text())
    del doc["metadata"]["tokenizer"]
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(DfmInputError, match=r"model/config\.json\) has no 'tokenizer' section"):
        dfm.tl.embed(cells, model=d)
    assert "X_dfm" not in cells.obsm and "dfm" not in cells.uns
    # an in-memory model whose metadata lost it: our error, not a KeyError
    m = dfm.models.load(SAVED)
    m.metadata = {k: v for k, v in m.metadata.items() if k != "tokenizer"}
    with pytest.raises(DfmInputError, match="no 'tokenizer' section"):
        dfm.tl.embed(cells, model=m)
    m.metadata = {**m.metadata, "tokenizer": {"max_tokens": 6}}
    with pytest.raises(DfmInputError, match="no 'target_sum'"):
        dfm.tl.embed(cells, model=m)
    m.metadata = {**m.metadata, "medians": [0.0] * 10}
    with pytest.raises(DfmInputError, match="gene medians must be positive"):
        dfm.tl.embed(cells, model=m)
    assert "X_dfm" not in cells.obsm


def test_non_finite_embeddings_are_counted_not_blamed_on_corruption_blindly(cells):
    m = dfm.models.load(SAVED)
    emb = np.array(m.gene_embed.embedding.get_value())
    emb[4:] = 3e38  # every gene token overflows float32 in the LayerNorm
    m.gene_embed.embedding.set_value(jnp.asarray(emb))
    with pytest.raises(FloatingPointError, match=r"for 6 of 6 cells \(e\.g\. 'c0'"):
        dfm.tl.embed(cells, model=m, progress_bar=False)
    assert "X_dfm" not in cells.obsm
