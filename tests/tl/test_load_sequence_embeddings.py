"""Imported DNABERT-2 / Nucleotide Transformer embeddings: layouts, MuData targets, .h5mu."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc import _keys
from diffbio_sc._validate import DfmInputError
from diffbio_sc.tl._target import resolve_target, writable_target

N, D = 24, 6
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def seq_ids():
    return [f"chr2:{1000 + 50 * i}-{1049 + 50 * i}(+)" for i in range(N)]


@pytest.fixture
def truth():
    return np.random.default_rng(3).normal(size=(N, D)).astype(np.float32)


@pytest.fixture
def perm():
    return np.random.default_rng(5).permutation(N)


def _seq_adata(ids):
    """An AnnData of sequences as read_fasta returns it: no variables, sequences in .obs."""
    return ad.AnnData(obs=pd.DataFrame({"sequence": ["ACGTN"] * len(ids)}, index=ids))


def _mudata(ids):
    from mudata import MuData

    rna = ad.AnnData(np.ones((4, 3), np.float32))
    rna.obs_names = [f"cell{i}" for i in range(4)]
    return MuData({"rna": rna, "dna": _seq_adata(ids)})


def _write_layout(tmp_path, layout, emb, ids):
    """Write ``emb`` with ``ids`` in one of the layouts sequence-extraction scripts produce."""
    if layout == "npz_ids":  # np.savez(path, embeddings=..., ids=...)
        path = tmp_path / "dnabert2.npz"
        np.savez(path, embeddings=emb, ids=np.asarray(ids, dtype=str))
    elif layout == "npz_names":
        path = tmp_path / "nt.npz"
        np.savez(path, embeddings=emb, names=np.asarray(ids).astype("S"))
    elif layout == "csv_name":  # a table with the FASTA name, the sequence and the dims
        path = tmp_path / "emb.csv"
        table = pd.DataFrame(emb, columns=[str(i) for i in range(emb.shape[1])])
        table.insert(0, "sequence", "ACGT")
        table.insert(0, "name", ids)
        table.to_csv(path, index=False)
    elif layout == "tsv_seq_id_prefix":
        path = tmp_path / "emb.tsv"
        table = pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])
        table.insert(0, "seq_id", ids)
        table.to_csv(path, sep="\t", index=False)
    elif layout == "parquet_id":
        path = tmp_path / "emb.parquet"
        table = pd.DataFrame(emb, columns=[str(i) for i in range(emb.shape[1])])
        table.insert(0, "id", ids)
        table.to_parquet(path, index=False)
    elif layout == "h5ad":
        path = tmp_path / "emb.h5ad"
        ad.AnnData(obs=pd.DataFrame(index=list(ids)), obsm={"X_DNABERT2": emb}).write_h5ad(path)
    else:  # pragma: no cover
        raise AssertionError(layout)
    return path


LAYOUTS = ["npz_ids", "npz_names", "csv_name", "tsv_seq_id_prefix", "parquet_id", "h5ad"]


@pytest.mark.parametrize("source", ["dnabert2", "nucleotide_transformer"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sequence_layouts_align_by_id_into_mudata(tmp_path, seq_ids, truth, perm, layout, source):
    ids = np.asarray(seq_ids)[perm]
    path = _write_layout(tmp_path, layout, truth[perm], ids)
    mdata = _mudata(seq_ids)
    kwargs = {"dim_columns": "emb_"} if layout == "tsv_seq_id_prefix" else {}
    dfm.tl.load_embeddings(mdata, path, source=source, mod="dna", **kwargs)
    key = f"X_{source}"
    # rows follow the modality's obs_names, whatever order the file had
    np.testing.assert_array_equal(mdata.mod["dna"].obsm[key], truth)
    entry = mdata.mod["dna"].uns["dfm"]["embeddings"][key]
    assert entry["model_family"] == "sequence_transformer"
    assert entry["adapter_mode"] == "precomputed" and entry["adapter_mode"] in _keys.ADAPTER_MODES
    assert entry["source"] == source and entry["n_dims"] == D
    assert entry["alignment"]["reordered"] is True
    assert key not in mdata.mod["rna"].obsm and "dfm" not in mdata.mod["rna"].uns


def test_generic_source_does_not_guess_sequence_id_names(tmp_path, seq_ids, truth):
    """The extra id names are a sequence-preset rule; a cell export with 'ids' is refused."""
    path = _write_layout(tmp_path, "npz_ids", truth, seq_ids)
    with pytest.raises(DfmInputError, match="holds no ids"):
        dfm.tl.load_embeddings(_seq_adata(seq_ids), path, source="generic")
    out = dfm.tl.load_embeddings(
        _seq_adata(seq_ids), path, source="generic", ids_key="ids", copy=True
    )
    np.testing.assert_array_equal(out.obsm["X_generic"], truth)


def test_h5mu_round_trip_keeps_embedding_and_provenance(tmp_path, seq_ids, truth, perm):
    import mudata

    path = _write_layout(tmp_path, "npz_ids", truth[perm], np.asarray(seq_ids)[perm])
    mdata = _mudata(seq_ids)
    dfm.tl.load_embeddings(
        mdata, path, source="dnabert2", mod="dna", artifact_id="DNABERT-2-117M", layer_index=-1
    )
    before = mdata.mod["dna"].uns["dfm"]["embeddings"]["X_dnabert2"]
    mdata.write(tmp_path / "seq.h5mu")
    back = mudata.read_h5mu(tmp_path / "seq.h5mu")
    np.testing.assert_array_equal(back.mod["dna"].obsm["X_dnabert2"], truth)
    assert back.mod["dna"].obs_names.tolist() == seq_ids
    after = back.mod["dna"].uns["dfm"]["embeddings"]["X_dnabert2"]
    assert set(after) == set(before)
    for field in ("model_family", "adapter_mode", "artifact_id", "source", "artifact_sha256"):
        assert str(after[field]) == str(before[field])
    assert int(after["layer_index"]) == -1
    assert "last transformer layer" in str(after["layer_description"])


def test_missing_or_extra_sequences_are_named(tmp_path, seq_ids, truth):
    path = _write_layout(tmp_path, "csv_name", truth[:-2], seq_ids[:-2])
    mdata = _mudata(seq_ids)
    with pytest.raises(DfmInputError, match=r"2 of 24 observations have no row.*chr2:2150"):
        dfm.tl.load_embeddings(mdata, path, source="dnabert2", mod="dna")
    assert "X_dnabert2" not in mdata.mod["dna"].obsm and "dfm" not in mdata.mod["dna"].uns


def test_target_resolver(seq_ids):
    mdata = _mudata(seq_ids)
    t = resolve_target(mdata, "dna")
    assert t.adata is mdata.mod["dna"] and t.root is mdata and t.mod == "dna"
    c = writable_target(t, copy=True)
    assert c.root is not mdata and c.adata is c.root.mod["dna"]
    assert c.adata.obs_names.tolist() == seq_ids
    a = _seq_adata(seq_ids)
    assert resolve_target(a).adata is a and writable_target(resolve_target(a), False).root is a
    with pytest.raises(DfmInputError, match=r"Pass mod=.*\['rna', 'dna'\]"):
        resolve_target(mdata)
    with pytest.raises(DfmInputError, match="Modality 'atac' not found"):
        resolve_target(mdata, "atac")
    with pytest.raises(TypeError, match="modality name"):
        resolve_target(mdata, 0)
    with pytest.raises(DfmInputError, match="applies to a MuData"):
        resolve_target(a, "dna")
    with pytest.raises(DfmInputError, match="no observations"):
        resolve_target(_seq_adata([]))
    with pytest.raises(TypeError, match="AnnData or MuData"):
        resolve_target({"dna": a})
