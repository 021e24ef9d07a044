"""dfm.tl.load_embeddings: strict alignment, presets, metadata, unchanged AnnData on error."""

from __future__ import annotations

import copy
import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

N = 40
D = 8
API_FIELDS = {
    "model_family",
    "adapter_mode",
    "artifact_id",
    "preprocessing_version",
    "pooling_strategy",
    "source",
    "n_dims",
    "created_by",
    "artifact_sha256",
    "alignment",
}


def _barcodes(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    return ["".join(rng.choice(letters, 12)) + "-1" for _ in range(n)]


@pytest.fixture
def adata():
    names = _barcodes(N)
    assert len(set(names)) == N
    a = ad.AnnData(np.zeros((N, 5), dtype=np.float32))
    a.obs_names = names
    a.obs["batch"] = pd.Categorical(["b1", "b2"] * (N // 2))
    a.obs["cell_type"] = pd.Categorical(["T", "B", "NK", "Mono"] * (N // 4))
    a.obsm["X_prev"] = np.full((N, 2), 7.0, dtype=np.float32)
    a.uns["dfm"] = {"embeddings": {"X_prev": {"source": "earlier"}}}
    return a


@pytest.fixture
def truth():
    """The embedding each cell should get, in adata.obs_names order."""
    return np.random.default_rng(11).normal(size=(N, D)).astype(np.float32)


def _state(a):
    return {
        "obs_names": a.obs_names.tolist(),
        "obs": a.obs.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in a.obsm.items()},
        "uns": copy.deepcopy(dict(a.uns)),
    }


def _assert_unchanged(a, state):
    assert a.obs_names.tolist() == state["obs_names"]
    pd.testing.assert_frame_equal(a.obs, state["obs"])
    assert sorted(a.obsm.keys()) == sorted(state["obsm"])
    for k, v in state["obsm"].items():
        np.testing.assert_array_equal(a.obsm[k], v)
    assert a.uns.keys() == state["uns"].keys()
    assert repr(dict(a.uns)) == repr(state["uns"])


def _shuffled(adata, truth, seed=3):
    perm = np.random.default_rng(seed).permutation(N)
    return perm, truth[perm], adata.obs_names.to_numpy()[perm]


# ---------------------------------------------------------------------------
# alignment


@pytest.mark.parametrize("fmt", ["npz", "h5ad", "csv", "tsv", "parquet", "safetensors"])
def test_shuffled_rows_align_exactly(tmp_path, adata, truth, fmt):
    _, emb, ids = _shuffled(adata, truth)
    path = dfm.io.write_embeddings(tmp_path / f"e.{fmt}", emb, ids)
    dfm.tl.load_embeddings(adata, path, key_added="X_ext")
    np.testing.assert_array_equal(adata.obsm["X_ext"], truth)
    assert adata.obsm["X_ext"].dtype == np.float32
    entry = adata.uns["dfm"]["embeddings"]["X_ext"]
    assert API_FIELDS <= set(entry)
    assert entry["artifact_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    al = entry["alignment"]
    assert (al["method"], al["n_in_file"], al["n_matched"], al["n_extra_dropped"]) == (
        "ids",
        N,
        N,
        0,
    )
    assert al["reordered"] is True
    assert entry["adapter_mode"] == "precomputed"
    assert entry["model_family"] == "single_cell_transformer"
    assert entry["source"] == "generic" and entry["n_dims"] == D
    assert entry["created_by"]["function"] == "diffbio_sc.tl.load_embeddings"
    assert adata.uns["dfm"]["embeddings"]["X_prev"] == {"source": "earlier"}


def test_in_order_file_is_not_reordered(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, adata.obs_names)
    dfm.tl.load_embeddings(adata, path)
    assert adata.uns["dfm"]["embeddings"]["X_generic"]["alignment"]["reordered"] is False
    np.testing.assert_array_equal(adata.obsm["X_generic"], truth)


def test_superset_needs_allow_subset(tmp_path, adata, truth):
    extra_ids = np.array([f"EXTRA{i}" for i in range(15)])
    emb = np.vstack([truth, np.ones((15, D), np.float32)])
    ids = np.concatenate([adata.obs_names.to_numpy(), extra_ids])
    perm = np.random.default_rng(4).permutation(len(ids))
    path = dfm.io.write_embeddings(tmp_path / "sup.npz", emb[perm], ids[perm])
    state = _state(adata)
    with pytest.raises(DfmInputError) as err:
        dfm.tl.load_embeddings(adata, path)
    msg = str(err.value)
    assert "15 ids that are not in adata.obs_names" in msg and "allow_subset=True" in msg
    assert "EXTRA" in msg
    _assert_unchanged(adata, state)
    dfm.tl.load_embeddings(adata, path, allow_subset=True)
    np.testing.assert_array_equal(adata.obsm["X_generic"], truth)
    al = adata.uns["dfm"]["embeddings"]["X_generic"]["alignment"]
    assert (al["n_in_file"], al["n_matched"], al["n_extra_dropped"]) == (N + 15, N, 15)


def test_superset_with_nan_in_dropped_rows_is_fine(tmp_path, adata, truth):
    emb = np.vstack([truth, np.full((2, D), np.nan, np.float32)])
    ids = np.concatenate([adata.obs_names.to_numpy(), ["gone1", "gone2"]])
    path = dfm.io.write_embeddings(tmp_path / "sup.npz", emb, ids)
    dfm.tl.load_embeddings(adata, path, allow_subset=True)
    np.testing.assert_array_equal(adata.obsm["X_generic"], truth)


def test_subset_file_lists_missing(tmp_path, adata, truth):
    _, emb, ids = _shuffled(adata, truth)
    keep = np.arange(N) >= 25  # 25 cells missing from the file
    path = dfm.io.write_embeddings(tmp_path / "sub.npz", emb[keep], ids[keep])
    state = _state(adata)
    with pytest.raises(DfmInputError) as err:
        dfm.tl.load_embeddings(adata, path, allow_subset=True)
    msg = str(err.value)
    assert "25 of 40 observations have no row in the file" in msg
    missing = set(ids[~keep])
    shown = [name for name in adata.obs_names if f"'{name}'" in msg]
    assert len(shown) == 10 and set(shown) <= missing
    assert "(and 15 more)" in msg
    _assert_unchanged(adata, state)


def test_duplicate_ids_error(tmp_path, adata, truth):
    ids = adata.obs_names.to_numpy().copy()
    ids = np.concatenate([ids, ids[:2]])
    emb = np.vstack([truth, truth[:2]])
    np.savez(tmp_path / "dup.npz", embeddings=emb, cell_ids=ids.astype(str))
    state = _state(adata)
    with pytest.raises(DfmInputError, match=f"2 duplicated ids, e.g. '{ids[0]}', '{ids[1]}'"):
        dfm.tl.load_embeddings(adata, tmp_path / "dup.npz", allow_subset=True)
    _assert_unchanged(adata, state)


def test_geneformer_csv_positions_hint_then_id_key(tmp_path, adata, truth):
    # EmbExtractor-style: cells sorted by length, index 0..n-1, labels incl. the barcode.
    order = np.random.default_rng(5).permutation(N)
    df = pd.DataFrame(truth[order])
    df["cell_type"] = adata.obs["cell_type"].to_numpy()[order]
    df["n_genes"] = np.arange(N)[::-1]
    df["cell_barcode"] = adata.obs_names.to_numpy()[order]
    path = tmp_path / "geneformer.csv"
    df.to_csv(path)
    state = _state(adata)
    with pytest.raises(DfmInputError) as err:
        dfm.tl.load_embeddings(adata, path, source="geneformer")
    msg = str(err.value)
    assert "row positions 0 .. 39" in msg and "id_key=" in msg and "allow_positional" in msg
    assert "'cell_barcode'" in msg  # points at the label column holding the ids
    _assert_unchanged(adata, state)

    dfm.tl.load_embeddings(
        adata,
        path,
        source="geneformer",
        id_key="cell_barcode",
        preprocessing_version="rank_value_v2",
        pooling_strategy="cls",
        layer_index=-1,
        artifact_id="Geneformer-V2-104M",
    )
    np.testing.assert_allclose(adata.obsm["X_geneformer"], truth, rtol=0, atol=0)
    entry = adata.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["source"] == "geneformer"
    assert entry["preprocessing_version"] == "rank_value_v2"
    assert entry["pooling_strategy"] == "cls"
    assert entry["artifact_id"] == "Geneformer-V2-104M"
    assert entry["layer_index"] == -1
    assert "penultimate" in entry["layer_description"]
    assert "counts from the top" in entry["layer_description"]
    assert "0 = last layer" in entry["layer_convention"]
    assert entry["id_source"] == "column 'cell_barcode'"


def test_geneformer_defaults_and_layer_zero(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "g.parquet", truth, adata.obs_names)
    dfm.tl.load_embeddings(adata, path, source="Geneformer", layer_index=0)
    entry = adata.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["pooling_strategy"] == "mean"
    assert entry["preprocessing_version"] == "unspecified"
    assert entry["artifact_id"] == "g.parquet"
    assert entry["layer_description"].startswith("the last transformer layer")


def test_other_tools_layer_counted_from_input(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, adata.obs_names)
    dfm.tl.load_embeddings(adata, path, layer_index=3)
    desc = adata.uns["dfm"]["embeddings"]["X_generic"]["layer_description"]
    assert "transformer layer 3 counted from the input" in desc
    dfm.tl.load_embeddings(adata, path, layer_index=-1, key_added="X_last")
    assert adata.uns["dfm"]["embeddings"]["X_last"]["layer_description"].startswith(
        "the last transformer layer"
    )
    assert "layer_convention" not in adata.uns["dfm"]["embeddings"]["X_last"]


def test_obs_names_numeric_hint(tmp_path, truth):
    a = ad.AnnData(np.zeros((N, 3), np.float32))  # default obs_names '0'..'39'
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, _barcodes(N))
    with pytest.raises(DfmInputError, match="adata.obs_names look like integers.*default"):
        dfm.tl.load_embeddings(a, path)


def test_allow_positional_with_row_number_ids(tmp_path, adata, truth):
    df = pd.DataFrame(truth)  # ids are 0..n-1 positions, rows already in obs order
    df.to_csv(tmp_path / "p.csv")
    dfm.tl.load_embeddings(adata, tmp_path / "p.csv", allow_positional=True)
    np.testing.assert_array_equal(adata.obsm["X_generic"], truth)
    assert adata.uns["dfm"]["embeddings"]["X_generic"]["alignment"]["method"] == "positional"


def test_allow_positional_never_overrides_real_ids(tmp_path, truth):
    # obs_names reset to row numbers, file with real barcodes in another order:
    # positional alignment would silently mislabel, so it stays an error
    a = ad.AnnData(np.zeros((N, 3), np.float32))
    perm = np.random.default_rng(8).permutation(N)
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth[perm], np.array(_barcodes(N))[perm])
    state = _state(a)
    with pytest.raises(DfmInputError, match="adata.obs_names look like integers"):
        dfm.tl.load_embeddings(a, path, allow_positional=True)
    _assert_unchanged(a, state)


def test_npy_positional(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npy", truth)
    state = _state(adata)
    with pytest.raises(DfmInputError, match="no cell ids.*allow_positional=True"):
        dfm.tl.load_embeddings(adata, path)
    _assert_unchanged(adata, state)
    dfm.tl.load_embeddings(adata, path, allow_positional=True)
    np.testing.assert_array_equal(adata.obsm["X_generic"], truth)
    al = adata.uns["dfm"]["embeddings"]["X_generic"]["alignment"]
    assert al["method"] == "positional" and al["reordered"] is False


def test_positional_row_count_and_transposed_hint(tmp_path, adata, truth):
    state = _state(adata)
    np.save(tmp_path / "short.npy", truth[:30])
    with pytest.raises(DfmInputError, match="30 rows but the AnnData has 40"):
        dfm.tl.load_embeddings(adata, tmp_path / "short.npy", allow_positional=True)
    np.save(tmp_path / "t.npy", truth.T.copy())  # dims x cells
    with pytest.raises(DfmInputError, match="transposed"):
        dfm.tl.load_embeddings(adata, tmp_path / "t.npy", allow_positional=True)
    _assert_unchanged(adata, state)


def test_nan_rows_named_by_obs_name(tmp_path, adata, truth):
    emb = truth.copy()
    emb[[4, 9]] = np.nan
    emb[17, 0] = np.inf
    perm, _, ids = _shuffled(adata, truth)
    path = dfm.io.write_embeddings(tmp_path / "nan.npz", emb[perm], ids)
    state = _state(adata)
    with pytest.raises(DfmInputError) as err:
        dfm.tl.load_embeddings(adata, path)
    msg = str(err.value)
    assert "3 embedding rows hold NaN or infinite" in msg
    for i in (4, 9, 17):
        assert adata.obs_names[i] in msg
    _assert_unchanged(adata, state)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_dtype_converted_and_recorded(tmp_path, adata, truth, dtype):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth.astype(dtype), adata.obs_names)
    dfm.tl.load_embeddings(adata, path)
    out = adata.obsm["X_generic"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, truth.astype(dtype).astype(np.float32))
    al = adata.uns["dfm"]["embeddings"]["X_generic"]["alignment"]
    assert al["original_dtype"] == np.dtype(dtype).name and al["dtype_converted"] is True


# ---------------------------------------------------------------------------
# presets


def test_scgpt_h5ad_unit_norm_and_batch_context(tmp_path, adata, truth):
    unit = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    perm = np.random.default_rng(6).permutation(N)
    export = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[perm]))
    export.obsm["X_scGPT"] = unit[perm]
    export.obsm["X_pca"] = np.zeros((N, 3), np.float32)
    export.write_h5ad(tmp_path / "scgpt.h5ad")
    dfm.tl.load_embeddings(
        adata,
        tmp_path / "scgpt.h5ad",
        source="scgpt",
        requires_batch_context=True,
        batch_key="batch",
        context_version="scGPT_human-2023",
    )
    np.testing.assert_allclose(adata.obsm["X_scgpt"], unit, rtol=0, atol=1e-7)
    entry = adata.uns["dfm"]["embeddings"]["X_scgpt"]
    assert entry["obsm_key_in_file"] == "X_scGPT"
    assert entry["pooling_strategy"] == "cls"
    assert entry["rows_unit_norm"] is True and entry["l2_normalized"] is False
    assert entry["requires_batch_context"] is True
    assert entry["batch_key"] == "batch" and entry["context_version"] == "scGPT_human-2023"


def test_scgpt_not_unit_norm_recorded_and_normalised_on_request(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, adata.obs_names)
    dfm.tl.load_embeddings(adata, path, source="scgpt")
    entry = adata.uns["dfm"]["embeddings"]["X_scgpt"]
    assert entry["rows_unit_norm"] is False and entry["l2_normalized"] is False
    assert entry["requires_batch_context"] is False
    np.testing.assert_array_equal(adata.obsm["X_scgpt"], truth)  # not silently normalised
    dfm.tl.load_embeddings(adata, path, source="scgpt", l2_normalize=True, key_added="X_n")
    expected = truth / np.linalg.norm(truth.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(adata.obsm["X_n"], expected, rtol=1e-6)
    assert adata.uns["dfm"]["embeddings"]["X_n"]["l2_normalized"] is True


def test_uce_h5ad_usual_key(tmp_path, adata, truth):
    export = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    export.obsm["X_uce"] = truth
    export.obsm["X_umap"] = np.zeros((N, 2), np.float32)
    export.write_h5ad(tmp_path / "uce.h5ad")
    dfm.tl.load_embeddings(adata, tmp_path / "uce.h5ad", source="uce")
    np.testing.assert_array_equal(adata.obsm["X_uce"], truth)
    entry = adata.uns["dfm"]["embeddings"]["X_uce"]
    assert entry["pooling_strategy"] == "cls" and entry["obsm_key_in_file"] == "X_uce"
    state = _state(adata)
    with pytest.raises(DfmInputError, match=r"several .obsm entries \['X_uce', 'X_umap'\]"):
        dfm.tl.load_embeddings(adata, tmp_path / "uce.h5ad", source="generic", key_added="X_g")
    _assert_unchanged(adata, state)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mudata_sequence_modality(tmp_path, truth):
    from mudata import MuData

    seq_ids = [f"chr1:{i * 100}-{i * 100 + 99}" for i in range(N)]
    dna = ad.AnnData(obs=pd.DataFrame({"sequence": ["ACGT"] * N}, index=seq_ids))
    rna = ad.AnnData(np.zeros((5, 3), np.float32))
    rna.obs_names = [f"c{i}" for i in range(5)]
    mdata = MuData({"dna": dna, "rna": rna})
    perm = np.random.default_rng(7).permutation(N)
    path = dfm.io.write_embeddings(
        tmp_path / "dnabert2.npz", truth[perm], np.array(seq_ids)[perm], id_key="sequence_id"
    )
    with pytest.raises(DfmInputError, match=r"Pass mod=.*\['dna', 'rna'\]"):
        dfm.tl.load_embeddings(mdata, path, source="dnabert2")
    with pytest.raises(DfmInputError, match="Modality 'atac' not found"):
        dfm.tl.load_embeddings(mdata, path, source="dnabert2", mod="atac")
    assert "dfm" not in mdata.mod["dna"].uns
    dfm.tl.load_embeddings(mdata, path, source="dnabert2", mod="dna")
    np.testing.assert_array_equal(mdata.mod["dna"].obsm["X_dnabert2"], truth)
    entry = mdata.mod["dna"].uns["dfm"]["embeddings"]["X_dnabert2"]
    assert entry["model_family"] == "sequence_transformer"
    assert entry["pooling_strategy"] == "mean"
    assert entry["id_source"] == "npz array 'sequence_ids'"
    assert "dfm" not in mdata.mod["rna"].uns
    out = dfm.tl.load_embeddings(
        mdata, path, source="dnabert2", mod="dna", key_added="X_copy", copy=True
    )
    assert isinstance(out, MuData) and "X_copy" not in mdata.mod["dna"].obsm
    np.testing.assert_array_equal(out.mod["dna"].obsm["X_copy"], truth)


def test_nucleotide_transformer_on_sequence_anndata(tmp_path, truth):
    seq_ids = [f"seq{i}" for i in range(N)]
    seqs = ad.AnnData(obs=pd.DataFrame(index=seq_ids))  # no vars, like read_fasta output
    path = dfm.io.write_embeddings(
        tmp_path / "nt.safetensors", truth, seq_ids, id_key="sequence_id"
    )
    out = dfm.tl.load_embeddings(seqs, path, source="nucleotide-transformer", copy=True)
    assert "X_nucleotide_transformer" not in seqs.obsm
    np.testing.assert_array_equal(out.obsm["X_nucleotide_transformer"], truth)
    assert out.uns["dfm"]["embeddings"]["X_nucleotide_transformer"]["model_family"] == (
        "sequence_transformer"
    )


# ---------------------------------------------------------------------------
# persistence, copy


def test_h5ad_written_after_loading_keeps_embedding_and_metadata(tmp_path, adata, truth):
    _, emb, ids = _shuffled(adata, truth)
    path = dfm.io.write_embeddings(tmp_path / "e.csv", emb, ids)
    dfm.tl.load_embeddings(
        adata,
        path,
        source="scgpt",
        allow_subset=True,
        layer_index=-2,
        batch_key="batch",
        l2_normalize=True,
    )
    before = adata.uns["dfm"]["embeddings"]["X_scgpt"]
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(back.obsm["X_scgpt"], adata.obsm["X_scgpt"])
    after = back.uns["dfm"]["embeddings"]["X_scgpt"]
    assert set(after) == set(before)
    for k, v in before.items():
        if isinstance(v, dict):
            assert {
                kk: (vv.item() if hasattr(vv, "item") else vv) for kk, vv in after[k].items()
            } == v
        else:
            assert (after[k].item() if hasattr(after[k], "item") else after[k]) == v


def test_copy_returns_new_and_leaves_input(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, adata.obs_names)
    state = _state(adata)
    out = dfm.tl.load_embeddings(adata, path, copy=True)
    _assert_unchanged(adata, state)
    np.testing.assert_array_equal(out.obsm["X_generic"], truth)
    assert dfm.tl.load_embeddings(adata, path) is None


def test_replacing_existing_key(tmp_path, adata, truth):
    path = dfm.io.write_embeddings(tmp_path / "e.npz", truth, adata.obs_names)
    dfm.tl.load_embeddings(adata, path, key_added="X_prev")
    np.testing.assert_array_equal(adata.obsm["X_prev"], truth)
    assert adata.uns["dfm"]["embeddings"]["X_prev"]["source"] == "generic"


# ---------------------------------------------------------------------------
# bad inputs: message content and the AnnData is unchanged


def _write_npz(tmp_path, adata, truth):
    return dfm.io.write_embeddings(tmp_path / "ok.npz", truth, adata.obs_names)


BAD_OPTIONS = [
    ({"source": "scGPTv9"}, "Unknown embedding source 'scGPTv9'.*generic"),
    (
        {"source": "geneformer", "pooling_strategy": "max"},
        r"pooling_strategy='max'.*\['mean', 'cls'\]",
    ),
    (
        {"source": "geneformer", "preprocessing_version": "rank_value_v3"},
        r"rank_value_v3.*\['rank_value_v1', 'rank_value_v2'\]",
    ),
    ({"source": "geneformer", "layer_index": 3}, r"layer_index=3.*counts layers from the top"),
    ({"layer_index": 1.5}, "layer_index must be an integer"),
    ({"requires_batch_context": True}, "requires_batch_context=True needs batch_key="),
    ({"batch_key": "sample"}, r"batch_key='sample' is not a column.*'batch'"),
    ({"key_added": ""}, "key_added must be a non-empty string"),
    ({"mod": "rna"}, "mod='rna' applies to a MuData"),
    ({"max_dims": 4, "key_added": "X_prev"}, "8 dimensions, above the sanity limit of 4"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_OPTIONS)
def test_bad_options_leave_adata_unchanged(tmp_path, adata, truth, kwargs, match):
    path = _write_npz(tmp_path, adata, truth)
    state = _state(adata)
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.load_embeddings(adata, path, **kwargs)
    _assert_unchanged(adata, state)


def test_bad_files_leave_adata_unchanged(tmp_path, adata, truth):
    state = _state(adata)
    ids = adata.obs_names.to_numpy()
    obj = np.empty(N, dtype=object)
    obj[:] = list(ids)
    np.savez(tmp_path / "obj.npz", embeddings=truth, cell_ids=obj)
    np.savez(tmp_path / "r3.npz", embeddings=truth[:, :, None], cell_ids=ids.astype(str))
    np.savez(tmp_path / "d0.npz", embeddings=np.zeros((N, 0)), cell_ids=ids.astype(str))
    (tmp_path / "nodims.csv").write_text("cell_id,cell_type\na,x\n")
    cases = [
        ("obj.npz", {}, r"object array.*np.asarray\(ids, dtype=str\)"),
        ("r3.npz", {}, "rank 3"),
        ("d0.npz", {}, "0 dimensions"),
        ("nodims.csv", {}, "No dimension columns.*dim_columns="),
        ("missing.npz", {}, "not found"),
    ]
    for name, kwargs, match in cases:
        with pytest.raises((DfmInputError, FileNotFoundError), match=match):
            dfm.tl.load_embeddings(adata, tmp_path / name, key_added="X_prev", **kwargs)
        _assert_unchanged(adata, state)


def test_not_anndata_is_type_error(tmp_path, adata, truth):
    path = _write_npz(tmp_path, adata, truth)
    with pytest.raises(TypeError, match="AnnData or MuData"):
        dfm.tl.load_embeddings(adata.X, path)


def test_duplicate_obs_names_error(tmp_path, adata, truth):
    path = _write_npz(tmp_path, adata, truth)
    names = adata.obs_names.tolist()
    names[1] = names[0]
    adata.obs_names = names
    state = _state(adata)
    with pytest.raises(DfmInputError, match="duplicate obs_names.*obs_names_make_unique"):
        dfm.tl.load_embeddings(adata, path)
    _assert_unchanged(adata, state)
