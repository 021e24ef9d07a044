"""Published-checkpoint support: reading without torch, equality with the reference, tl.

The fixtures were built by scripts/make_checkpoint_fixtures.py with the real
reference code (transformers' BertForMaskedLM; scGPT's own TransformerModel)
and hold every layer's expected hidden states. No torch is needed here.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.io._checkpoints import CheckpointError, read_checkpoint, read_torch_weights
from diffbio_sc.models._bert import bert_from_checkpoint
from diffbio_sc.models._scgpt import scgpt_from_checkpoint, scgpt_vocab

FIX = Path(__file__).parent / "fixtures"
GENEFORMER = ["geneformer_v1", "geneformer_v1_bin", "geneformer_v2"]
SCGPT = ["scgpt", "scgpt_category"]
TOL = 1e-5


def _expected(name: str):
    return np.load(FIX / f"expected_{name.replace('_bin', '')}.npz")


def _valid(e):
    return np.arange(e["input_ids"].shape[1])[None] < e["lengths"][:, None]


@pytest.fixture(scope="module")
def loaded():
    """Checkpoints loaded once per module (loading traces the architecture)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = dfm.models.load_checkpoint(FIX / name)
        return cache[name]

    return get


_HIDDEN = {}


def _hidden_states(module, *inputs):
    """Every layer's states through one jitted call (eager JAX would compile op by op)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(module)
    if "fn" not in _HIDDEN:
        _HIDDEN["fn"] = jax.jit(
            lambda gd, st, *x: nnx.merge(gd, st).hidden_states(*x), static_argnums=0
        )
    return [np.asarray(h) for h in _HIDDEN["fn"](graphdef, state, *inputs)]


def _snapshot(adata):
    return (
        list(adata.obsm.keys()),
        list(adata.varm.keys()),
        json.dumps(adata.uns.get("dfm", {}), default=str, sort_keys=True),
        adata.X.copy(),
    )


def _assert_unchanged(adata, snap):
    keys, vkeys, uns, X = snap
    assert list(adata.obsm.keys()) == keys
    assert list(adata.varm.keys()) == vkeys
    assert json.dumps(adata.uns.get("dfm", {}), default=str, sort_keys=True) == uns
    assert (adata.X != X).nnz == 0


# ------------------------------------------------------------------ reading


def test_bin_zip_legacy_and_safetensors_hold_the_same_tensors():
    st = read_checkpoint(FIX / "geneformer_v1").weights
    zipped = read_torch_weights(FIX / "geneformer_v1_bin" / "pytorch_model.bin")
    legacy = read_torch_weights(FIX / "geneformer_v1_bin" / "legacy_pytorch_model.bin")
    assert set(zipped) == set(legacy)
    # safetensors drops the tied decoder weight; the .bin keeps it (sharing storage)
    assert set(zipped) - set(st) == {
        "cls.predictions.decoder.weight",
        "cls.predictions.decoder.bias",
    }
    for k, v in st.items():
        np.testing.assert_array_equal(zipped[k], v)
        np.testing.assert_array_equal(legacy[k], v)
    np.testing.assert_array_equal(
        zipped["cls.predictions.decoder.weight"], st["bert.embeddings.word_embeddings.weight"]
    )


class _Exec:
    """Pickles as a call of builtins.exec: what a malicious checkpoint would hold."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _malicious_state(marker: Path):
    return OrderedDict([("w", 1), ("payload", _Exec(f"open({str(marker)!r}, 'w').write('ran')"))])


def _zip_checkpoint(path: Path, obj) -> None:
    """A torch-style zip archive (archive/data.pkl) around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_bin_with_non_tensor_global_is_refused_and_nothing_runs(tmp_path, layout):
    marker = tmp_path / "marker"
    path = tmp_path / "pytorch_model.bin"
    if layout == "zip":
        _zip_checkpoint(path, _malicious_state(marker))
    else:
        with open(path, "wb") as fh:
            for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                pickle.dump(header, fh, protocol=2)
            pickle.dump(_malicious_state(marker), fh, protocol=2)
    with pytest.raises(CheckpointError, match=r"\.exec'") as err:
        read_torch_weights(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_malicious_checkpoint_leaves_adata_unchanged(tmp_path, cells):
    d = tmp_path / "ckpt"
    shutil.copytree(FIX / "geneformer_v1_bin", d)
    (d / "legacy_pytorch_model.bin").unlink()
    marker = tmp_path / "marker"
    _zip_checkpoint(d / "pytorch_model.bin", _malicious_state(marker))
    snap = _snapshot(cells)
    with pytest.raises(CheckpointError, match="Refusing"):
        dfm.tl.embed_checkpoint(cells, d)
    assert not marker.exists()
    _assert_unchanged(cells, snap)


def test_torch_reader_refuses_other_persistent_ids_and_truncation(tmp_path):
    class _PID(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "x") if obj == "ref" else None

    buf = io.BytesIO()
    _PID(buf, protocol=2).dump({"a": "ref"})
    p = tmp_path / "pid.bin"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
    with pytest.raises(CheckpointError, match="not a tensor storage"):
        read_torch_weights(p)
    # a storage shorter than the tensors that use it
    src = FIX / "geneformer_v1_bin" / "pytorch_model.bin"
    bad = tmp_path / "short.bin"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            zout.writestr(n, data[:8] if n.endswith("data/0") else data)
    with pytest.raises(CheckpointError, match="truncated"):
        read_torch_weights(bad)
    # a storage class called as a function, and a huge stride-0 view of a tiny storage
    calls_storage = b"\x80\x02ctorch\nFloatStorage\n)R."
    p2 = tmp_path / "call.bin"
    with zipfile.ZipFile(p2, "w") as zf:
        zf.writestr("archive/data.pkl", calls_storage)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_torch_weights(p2)
    with zipfile.ZipFile(src) as zin:
        pkl = zin.read("pytorch_model/data.pkl")
    assert pkl.count(b"_rebuild_tensor_v2") == 1  # memoised: one GLOBAL, then references
    with pytest.raises(CheckpointError, match="neither"):
        (tmp_path / "text.bin").write_text("hello")
        read_torch_weights(tmp_path / "text.bin")


# ------------------------------------------------------------------ equality with the reference


@pytest.mark.parametrize("name", ["geneformer_v1", "geneformer_v2"])
def test_bert_matches_transformers_every_layer(name):
    model = bert_from_checkpoint(read_checkpoint(FIX / name))
    e = _expected(name)
    valid = _valid(e)
    states = _hidden_states(model, e["input_ids"])
    assert len(states) == e["hidden_states"].shape[0]
    for got, want in zip(states, e["hidden_states"], strict=True):
        np.testing.assert_allclose(np.asarray(got)[valid], want[valid], atol=TOL, rtol=0)
    logits = np.asarray(model.mlm_logits(states[-1]))
    np.testing.assert_allclose(logits[valid], e["logits"][valid], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", SCGPT)
def test_scgpt_matches_reference_every_layer(name):
    ckpt = read_checkpoint(FIX / name)
    model = scgpt_from_checkpoint(
        ckpt, scgpt_vocab(json.loads((FIX / name / "vocab.json").read_text()))
    )
    e = _expected(name)
    valid = _valid(e)
    states = _hidden_states(model, e["input_ids"], e["values"])
    for got, want in zip(states, e["hidden_states"], strict=True):
        np.testing.assert_allclose(np.asarray(got)[valid], want[valid], atol=TOL, rtol=0)
    cls = states[-1][:, 0]
    np.testing.assert_allclose(
        cls / np.linalg.norm(cls, axis=1, keepdims=True), e["cls_embedding"], atol=TOL, rtol=0
    )


@pytest.mark.slow
def test_scgpt_flash_attn_wqkv_keys_map_to_in_proj(tmp_path, cells):
    import safetensors.numpy

    d = tmp_path / "flash"
    d.mkdir()
    for f in ("args.json", "vocab.json"):
        shutil.copy(FIX / "scgpt" / f, d / f)
    w = read_checkpoint(FIX / "scgpt").weights
    renamed = {
        k.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight").replace(
            "self_attn.in_proj_bias", "self_attn.Wqkv.bias"
        ): v
        for k, v in w.items()
    }
    assert any("Wqkv" in k for k in renamed)
    safetensors.numpy.save_file(renamed, str(d / "model.safetensors"))
    dfm.tl.embed_checkpoint(cells, d, gene_key="symbol")
    np.testing.assert_allclose(cells.obsm["X_scgpt"], _expected("scgpt")["cls_embedding"], atol=TOL)


# ------------------------------------------------------------------ dfm.tl.embed_checkpoint


@pytest.mark.parametrize(
    "name",  # V1 (the larger compile) runs in the slow CI step: fast-suite budget
    [pytest.param(n, marks=pytest.mark.slow) if n == "geneformer_v1" else n for n in GENEFORMER],
)
def test_embed_checkpoint_geneformer_equals_extractor(cells, name):
    e = _expected(name)
    dfm.tl.embed_checkpoint(cells, FIX / name)
    np.testing.assert_allclose(cells.obsm["X_geneformer"], e["mean_embedding"], atol=TOL, rtol=0)
    if name == "geneformer_v2":
        dfm.tl.embed_checkpoint(cells, FIX / name, layer_index=0, key_added="last")
        np.testing.assert_allclose(cells.obsm["last"], e["last_layer_mean"], atol=TOL, rtol=0)
    entry = cells.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["source"] == "geneformer" and entry["adapter_mode"] == "checkpoint"
    assert entry["layer_index"] == -1 and entry["layer_from_input"] == entry["n_layers"] - 1
    assert entry["n_genes_in_vocab"] == 40 and entry["n_genes"] == 48
    assert 0 < entry["frac_counts_in_vocab"] < 1
    assert len(entry["artifact_sha256"]) == 64 and len(entry["gene_medians_sha256"]) == 64


def test_embed_checkpoint_geneformer_v2_cls(cells, loaded):
    dfm.tl.embed_checkpoint(cells, loaded("geneformer_v2"), pooling="cls", key_added="cls")
    np.testing.assert_allclose(
        cells.obsm["cls"], _expected("geneformer_v2")["cls_embedding"], atol=TOL
    )
    with pytest.raises(dfm._validate.DfmInputError, match="V2"):
        dfm.tl.embed_checkpoint(cells, loaded("geneformer_v1"), pooling="cls")


@pytest.mark.parametrize("name", SCGPT)
def test_embed_checkpoint_scgpt_equals_reference(cells, name):
    dfm.tl.embed_checkpoint(cells, FIX / name, gene_key="symbol")
    np.testing.assert_allclose(cells.obsm["X_scgpt"], _expected(name)["cls_embedding"], atol=TOL)
    entry = cells.uns["dfm"]["embeddings"]["X_scgpt"]
    assert entry["pooling_strategy"] == "cls_l2" and entry["n_cells_subsampled"] == 0


def test_cell_order_and_batch_independence(cells, loaded):
    m = loaded("geneformer_v2")
    ref = _expected("geneformer_v2")["mean_embedding"]
    perm = np.random.default_rng(0).permutation(cells.n_obs)
    shuffled = cells[perm].copy()
    # 64 tokens per batch: two cells of 32 tokens per batch, in a different grouping
    dfm.tl.embed_checkpoint(shuffled, m, max_batch_tokens=64)
    np.testing.assert_allclose(shuffled.obsm["X_geneformer"], ref[perm], atol=TOL)
    one = cells[[3]].copy()
    dfm.tl.embed_checkpoint(one, m, max_batch_tokens=64)
    np.testing.assert_allclose(one.obsm["X_geneformer"][0], ref[3], atol=TOL)


@pytest.mark.slow
def test_scgpt_subsampling_is_keyed_on_the_cell(cells):
    n_in_vocab = np.asarray((cells.X[:, :40] > 0).sum(axis=1)).ravel()
    k = 8
    a = dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", max_length=k, copy=True)
    entry = a.uns["dfm"]["embeddings"]["X_scgpt"]
    assert entry["n_cells_subsampled"] == int((n_in_vocab > k - 1).sum())
    b = dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", max_length=k, copy=True)
    np.testing.assert_array_equal(a.obsm["X_scgpt"], b.obsm["X_scgpt"])
    sub = cells[[5, 0]].copy()  # other cells absent, other order
    dfm.tl.embed_checkpoint(sub, FIX / "scgpt", gene_key="symbol", max_length=k)
    np.testing.assert_allclose(sub.obsm["X_scgpt"], a.obsm["X_scgpt"][[5, 0]], atol=1e-6)
    c = dfm.tl.embed_checkpoint(
        cells, FIX / "scgpt", gene_key="symbol", max_length=k, seed=1, copy=True
    )
    short = n_in_vocab <= k - 1  # not sub-sampled, no tied values: the seed cannot matter
    np.testing.assert_allclose(c.obsm["X_scgpt"][short], a.obsm["X_scgpt"][short], atol=1e-6)
    assert not np.allclose(c.obsm["X_scgpt"][~short], a.obsm["X_scgpt"][~short], atol=1e-3)
    full = dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", copy=True)
    np.testing.assert_allclose(full.obsm["X_scgpt"][short], a.obsm["X_scgpt"][short], atol=1e-6)


def test_gene_contextual_embeddings_are_means_of_token_states(cells, loaded):
    e = _expected("geneformer_v1")
    dfm.tl.embed_checkpoint(cells, loaded("geneformer_v1"), gene_embeddings_key="X_gf_genes")
    got = cells.varm["X_gf_genes"]
    states = e["hidden_states"][-2]  # the default layer
    tok = json.loads((FIX / "geneformer_v1" / "token_dictionary.json").read_text())
    ids = e["input_ids"]
    for j, gene in enumerate(cells.var_names):
        t = tok.get(gene)
        hit = ids == t if t is not None else np.zeros_like(ids, bool)
        if not hit.any():
            assert np.isnan(got[j]).all()
        else:
            np.testing.assert_allclose(got[j], states[hit].mean(axis=0), atol=TOL)
    assert np.isfinite(got).all(axis=1).sum() > 20


def test_embed_dispatches_checkpoints_and_provenance_survives_h5ad(cells, tmp_path):
    from diffbio_sc.tl._checkpoint import is_checkpoint

    assert is_checkpoint(FIX / "scgpt") and is_checkpoint(FIX / "geneformer_v1_bin")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not is_checkpoint(tmp_path) and not is_checkpoint(tmp_path / "missing")
    dfm.tl.embed(cells, FIX / "geneformer_v2")  # dfm.tl.embed hands checkpoints over
    want = _expected("geneformer_v2")["mean_embedding"]
    np.testing.assert_allclose(cells.obsm["X_geneformer"], want, atol=TOL)
    cells.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    entry = back.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["preprocessing_version"].startswith("geneformer_v2;max_tokens=32")
    np.testing.assert_array_equal(back.obsm["X_geneformer"], cells.obsm["X_geneformer"])


def test_loaded_model_reused_and_saved(cells, loaded, tmp_path):
    m = loaded("geneformer_v1")
    assert m.family == "geneformer" and m.recipe == "geneformer_v1" and m.max_tokens == 32
    dfm.tl.embed_checkpoint(cells, m)
    want = _expected("geneformer_v1")["mean_embedding"]
    np.testing.assert_allclose(cells.obsm["X_geneformer"], want, atol=TOL)
    # diffbio_sc's own format: one directory with weights and dictionaries
    m.save(tmp_path / "saved")
    assert isinstance(dfm.models.load(tmp_path / "saved"), dfm.models.BertEncoder)
    again = dfm.tl.embed_checkpoint(cells, tmp_path / "saved", copy=True)
    np.testing.assert_allclose(again.obsm["X_geneformer"], want, atol=TOL)
    entry = again.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["artifact_sha256"] == m.sha256
    short = dfm.tl.embed_checkpoint(cells, m, max_tokens=8, copy=True)
    assert m.max_tokens == 32  # the loaded model is not changed by a call
    entry = short.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["preprocessing_version"].startswith("geneformer_v1;max_tokens=8;")
    # cell0 has 3 tokens: unaffected; longer cells are truncated to their top 8 genes
    np.testing.assert_allclose(short.obsm["X_geneformer"][0], want[0], atol=TOL)
    assert not np.allclose(short.obsm["X_geneformer"][1:], want[1:], atol=1e-3)


# ------------------------------------------------------------------ bad input


def _copy(tmp_path, name):
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    return d


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_bad_checkpoints_give_clear_errors_and_leave_adata_unchanged(tmp_path, cells):
    import safetensors.numpy

    snap = _snapshot(cells)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no recognised checkpoint.*notes\.txt"):
        dfm.tl.embed_checkpoint(cells, empty)

    d = _copy(tmp_path, "geneformer_v1")
    _edit_config(d, model_type="roberta", architectures=["RobertaForMaskedLM"])
    with pytest.raises(ValueError, match=r"config\.json.*roberta"):
        dfm.tl.embed_checkpoint(cells, d)
    _edit_config(
        d,
        model_type="bert",
        architectures=["BertForMaskedLM"],
        position_embedding_type="relative_key",
    )
    with pytest.raises(ValueError, match="relative_key"):
        dfm.tl.embed_checkpoint(cells, d)

    w = safetensors.numpy.load_file(str(FIX / "geneformer_v1" / "model.safetensors"))
    for case, weights, pattern in [
        (
            "missing",
            {k: v for k, v in w.items() if "layer.1.output.dense.bias" not in k},
            "missing",
        ),
        ("extra", {**w, "bert.encoder.extra.weight": np.zeros(3, np.float32)}, "unexpected"),
    ]:
        dd = tmp_path / case
        shutil.copytree(FIX / "geneformer_v1", dd)
        safetensors.numpy.save_file(weights, str(dd / "model.safetensors"))
        with pytest.raises(ValueError, match=pattern) as err:
            dfm.tl.embed_checkpoint(cells, dd)
        assert "model.safetensors" in str(err.value)

    dd = tmp_path / "shape"
    shutil.copytree(FIX / "geneformer_v1", dd)
    _edit_config(dd, intermediate_size=40)
    with pytest.raises(ValueError, match=r"config\.json.*has shape .* expected"):
        dfm.tl.embed_checkpoint(cells, dd)
    _assert_unchanged(cells, snap)


def test_bad_scgpt_checkpoints_give_clear_errors_and_leave_adata_unchanged(tmp_path, cells):
    import safetensors.numpy

    snap = _snapshot(cells)
    w = read_checkpoint(FIX / "scgpt").weights

    def variant(name, weights=None, **args):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(FIX / "scgpt" / "vocab.json", d / "vocab.json")
        cfg = json.loads((FIX / "scgpt" / "args.json").read_text())
        cfg.update(args)
        (d / "args.json").write_text(json.dumps(cfg))
        safetensors.numpy.save_file(
            {k: np.ascontiguousarray(v) for k, v in (weights or w).items()},
            str(d / "model.safetensors"),
        )
        return d

    in_proj = "transformer_encoder.layers.1.self_attn.in_proj_weight"
    cases = [
        ("missing", {k: v for k, v in w.items() if k != "value_encoder.norm.bias"}, {}, "missing"),
        ("extra", {**w, "transformer_encoder.layers.0.extra": w[in_proj]}, {}, "unexpected"),
        ("shape", None, {"d_hid": 20}, r"has shape .* expected"),
        ("dsbn_args", None, {"DSBN": True}, "DSBN"),
        ("dsbn_tensors", {**w, "dsbn.bns.0.weight": w["encoder.enc_norm.weight"]}, {}, "batch"),
        ("dup", {**w, in_proj.replace("in_proj_weight", "Wqkv.weight"): w[in_proj]}, {}, "dupl"),
        ("style", None, {"input_emb_style": "fancy"}, "input_emb_style"),
    ]
    for name, weights, args, pattern in cases:
        d = variant(name, weights, **args)
        with pytest.raises(ValueError, match=pattern) as err:
            dfm.tl.embed_checkpoint(cells, d, gene_key="symbol")
        assert str(d) in str(err.value), (name, str(err.value))
    # a V1 token dictionary with a V2 model (the reverse is tested below)
    with pytest.raises(ValueError, match=r"token_dictionary\.json.*vocab_size"):
        dfm.tl.embed_checkpoint(
            cells,
            FIX / "geneformer_v2",
            token_dictionary=FIX / "geneformer_v1" / "token_dictionary.json",
        )
    _assert_unchanged(cells, snap)


def test_dictionary_mismatches(tmp_path, cells):
    snap = _snapshot(cells)
    # the V2 dictionary (4 special tokens) does not fit the V1 model
    with pytest.raises(ValueError, match=r"token_dictionary\.json.*vocab_size"):
        dfm.tl.embed_checkpoint(
            cells,
            FIX / "geneformer_v1",
            token_dictionary=FIX / "geneformer_v2" / "token_dictionary.json",
        )
    d = _copy(tmp_path, "scgpt")
    voc = json.loads((d / "vocab.json").read_text())
    voc["EXTRA_GENE"] = max(voc.values()) + 1
    (d / "vocab.json").write_text(json.dumps(voc))
    with pytest.raises(ValueError, match=r"vocabulary has 44 tokens.*43 rows.*vocab\.json"):
        dfm.tl.embed_checkpoint(cells, d, gene_key="symbol")
    pkl = tmp_path / "tok.pkl"
    pkl.write_bytes(pickle.dumps({"<pad>": 0}))
    with pytest.raises(ValueError, match="pickle"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", token_dictionary=pkl)
    _assert_unchanged(cells, snap)


def test_gene_id_mismatch_suggests_the_matching_column(cells):
    snap = _snapshot(cells)
    # scGPT's vocabulary holds symbols; var_names are Ensembl IDs
    with pytest.raises(dfm._validate.DfmInputError, match=r"gene_key='symbol'"):
        dfm.tl.embed_checkpoint(cells, FIX / "scgpt")
    with pytest.raises(dfm._validate.DfmInputError, match="gene_key=None"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", gene_key="symbol")
    with pytest.raises(dfm._validate.DfmInputError, match="not a .var column"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", gene_key="nope")
    with pytest.raises(dfm._validate.DfmInputError, match="pooling"):
        dfm.tl.embed_checkpoint(cells, FIX / "scgpt", gene_key="symbol", pooling="mean")
    with pytest.raises(TypeError):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", max_batch_tokens=1.5)
    with pytest.raises(dfm._validate.DfmInputError, match="layer_index"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", layer_index=-4)
    _assert_unchanged(cells, snap)


def test_expanded_view_larger_than_its_storage_is_refused(tmp_path, monkeypatch):
    import sys
    import types

    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pickled by reference only
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_cls = type("FloatStorage", (), {"__module__": "torch"})
    torch_mod.FloatStorage = storage_cls
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class _Storage:
        pass

    class _Tensor:
        def __reduce__(self):  # 10**9 elements, all reading the one stored float
            return (_rebuild_tensor_v2, (store, 0, (10**9,), (0,), False, OrderedDict()))

    store = _Storage()

    class _P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_cls, "0", "cpu", 1) if obj is store else None

    buf = io.BytesIO()
    _P(buf, protocol=2).dump(OrderedDict([("w", _Tensor())]))
    path = tmp_path / "expanded.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", np.ones(1, np.float32).tobytes())
    with pytest.raises(CheckpointError, match="more elements than its storage"):
        read_torch_weights(path)
