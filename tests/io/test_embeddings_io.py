"""dfm.io.read_embeddings / write_embeddings: every layout, round trips, refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

ROUND_TRIP_FORMATS = ["npz", "h5ad", "csv", "tsv", "parquet", "safetensors"]


@pytest.fixture
def emb_ids():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 6)).astype(np.float32)
    ids = np.array([f"cell_{i:03d}" for i in rng.permutation(12)])
    return emb, ids


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("fmt", ROUND_TRIP_FORMATS)
def test_round_trip_every_format(tmp_path, emb_ids, fmt):
    emb, ids = emb_ids
    path = dfm.io.write_embeddings(tmp_path / f"e.{fmt}", emb, ids)
    art = dfm.io.read_embeddings(path)
    assert art.ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(art.embeddings, emb)
    assert art.embeddings.dtype == np.float32
    assert art.metadata["format"] == fmt
    assert art.metadata["n_rows"] == 12 and art.metadata["n_dims"] == 6
    assert art.metadata["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_npy_positional(tmp_path, emb_ids):
    emb, _ = emb_ids
    path = dfm.io.write_embeddings(tmp_path / "e.npy", emb)
    art = dfm.io.read_embeddings(path, allow_positional=True)
    assert art.ids is None
    np.testing.assert_array_equal(art.embeddings, emb)
    assert art.metadata["id_source"] == "row position"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "h5ad"])
def test_round_trip_labels(tmp_path, emb_ids, fmt):
    emb, ids = emb_ids
    labels = pd.DataFrame(
        {"cell_type": [f"t{i % 3}" for i in range(12)], "n_counts": np.arange(12) * 10}
    )
    path = dfm.io.write_embeddings(tmp_path / f"e.{fmt}", emb, ids, labels=labels)
    art = dfm.io.read_embeddings(path)
    np.testing.assert_array_equal(art.embeddings, emb)
    assert art.metadata["label_columns"] == ["cell_type", "n_counts"]
    assert art.labels["cell_type"].astype(str).tolist() == labels["cell_type"].tolist()
    assert art.labels["n_counts"].astype(int).tolist() == labels["n_counts"].tolist()


def test_round_trip_compressed_npz_and_gzipped_csv(tmp_path, emb_ids):
    emb, ids = emb_ids
    p1 = dfm.io.write_embeddings(tmp_path / "e.npz", emb, ids, compress=True)
    p2 = dfm.io.write_embeddings(tmp_path / "e.csv.gz", emb, ids)
    for p in (p1, p2):
        art = dfm.io.read_embeddings(p)
        np.testing.assert_array_equal(art.embeddings, emb)
        assert art.ids.tolist() == ids.tolist()


def test_round_trip_sequence_ids(tmp_path, emb_ids):
    emb, ids = emb_ids
    path = dfm.io.write_embeddings(tmp_path / "s.npz", emb, ids, id_key="sequence_id")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["embeddings", "sequence_ids"]
    art = dfm.io.read_embeddings(path)
    assert art.metadata["ids_key"] == "sequence_ids"
    assert art.ids.tolist() == ids.tolist()


def test_dtype_conversion_is_recorded(tmp_path, emb_ids):
    emb, ids = emb_ids
    for dt in (np.float16, np.float64):
        path = dfm.io.write_embeddings(tmp_path / f"e_{np.dtype(dt).name}.npz", emb.astype(dt), ids)
        art = dfm.io.read_embeddings(path)
        assert art.embeddings.dtype == np.float32
        assert art.metadata["original_dtype"] == np.dtype(dt).name
        np.testing.assert_array_equal(art.embeddings, emb.astype(dt).astype(np.float32))
        kept = dfm.io.read_embeddings(path, dtype=None)
        assert kept.embeddings.dtype == dt


# ---------------------------------------------------------------------------
# upstream layouts written by hand


def test_geneformer_csv_layout_by_hand(tmp_path):
    # Exactly what EmbExtractor's DataFrame.to_csv gives: unnamed index, dims 0..d-1,
    # then label columns (one of them numeric).
    text = (
        ",0,1,2,cell_type,n_counts\n"
        "0,0.5,-1.25,2.0,T cell,1200\n"
        "1,1.5,0.25,-3.0,B cell,800\n"
        "2,0.0,4.0,1.0,T cell,950\n"
    )
    path = tmp_path / "geneformer_embs.csv"
    path.write_text(text)
    art = dfm.io.read_embeddings(path)
    np.testing.assert_array_equal(
        art.embeddings, np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -3.0], [0.0, 4.0, 1.0]])
    )
    assert art.ids.tolist() == ["0", "1", "2"]
    assert art.metadata["id_source"] == "leading index column"
    assert art.metadata["columns"] == ["0", "1", "2"]
    assert art.metadata["label_columns"] == ["cell_type", "n_counts"]
    assert art.labels["n_counts"].tolist() == [1200, 800, 950]


def test_geneformer_dataframe_to_csv_with_id_label(tmp_path):
    rng = np.random.default_rng(2)
    embs = rng.normal(size=(15, 10)).astype(np.float32)
    df = pd.DataFrame(embs)
    df["cell_type"] = ["a", "b", "c"] * 5
    df["leiden"] = np.arange(15) % 4  # numeric label column: must not become a dim
    df["barcode"] = [f"BC{i:04d}" for i in range(15)]
    path = tmp_path / "g.csv"
    df.to_csv(path)
    art = dfm.io.read_embeddings(path, id_key="barcode")
    assert art.n_dims == 10
    np.testing.assert_array_equal(art.embeddings, embs)
    assert art.ids.tolist() == df["barcode"].tolist()
    assert "leiden" in art.metadata["label_columns"]
    assert art.metadata["id_source"] == "column 'barcode'"


def test_dimension_columns_sorted_numerically(tmp_path):
    # Columns out of order in the file: 0..11 must be returned in numeric order.
    rng = np.random.default_rng(3)
    embs = rng.normal(size=(4, 12))
    order = [3, 11, 0, 10, 1, 2, 9, 4, 5, 8, 6, 7]
    df = pd.DataFrame({str(j): embs[:, j] for j in order}, index=["a", "b", "c", "d"])
    df.index.name = "cell_id"
    df.to_csv(tmp_path / "o.csv")
    art = dfm.io.read_embeddings(tmp_path / "o.csv", dtype=None)
    np.testing.assert_array_equal(art.embeddings, embs)


def test_dim_columns_prefix_and_list(tmp_path):
    rng = np.random.default_rng(4)
    embs = rng.normal(size=(5, 11))
    df = pd.DataFrame({f"emb_{j}": embs[:, j] for j in range(11)})
    df.insert(0, "cell_id", list("vwxyz"))
    df["score"] = 1.0
    df.to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    art = dfm.io.read_embeddings(tmp_path / "p.tsv", dim_columns="emb_", dtype=None)
    np.testing.assert_array_equal(art.embeddings, embs)  # emb_10 after emb_9
    assert art.ids.tolist() == list("vwxyz")
    sub = dfm.io.read_embeddings(tmp_path / "p.tsv", dim_columns=["emb_2", "emb_0"], dtype=None)
    np.testing.assert_array_equal(sub.embeddings, embs[:, [2, 0]])
    with pytest.raises(DfmInputError, match="No dimension columns"):
        dfm.io.read_embeddings(tmp_path / "p.tsv")
    with pytest.raises(DfmInputError, match="'emb_99'"):
        dfm.io.read_embeddings(tmp_path / "p.tsv", dim_columns=["emb_99"])


def test_integer_columns_with_gap_is_error(tmp_path):
    (tmp_path / "gap.csv").write_text("cell_id,0,1,3,cell_type\na,1,2,3,x\n")
    with pytest.raises(DfmInputError, match=r"not a full run 0 .. d-1 \(missing \[2\]"):
        dfm.io.read_embeddings(tmp_path / "gap.csv")


def test_non_numeric_dimension_column_is_error(tmp_path):
    (tmp_path / "bad.csv").write_text("cell_id,0,1\na,1.0,oops\nb,2.0,3.0\n")
    with pytest.raises(DfmInputError, match="column '1' holds a value that is not a number"):
        dfm.io.read_embeddings(tmp_path / "bad.csv")


def test_csv_without_pyarrow_matches(tmp_path, emb_ids, monkeypatch):
    from diffbio_sc.io._embeddings import _table as _embeddings

    emb, ids = emb_ids
    labels = {"cell_type": np.array(["x", "y", "z"] * 4)}
    path = dfm.io.write_embeddings(tmp_path / "e.tsv", emb, ids, labels=labels)
    fast = dfm.io.read_embeddings(path)
    monkeypatch.setattr(_embeddings, "_have_pyarrow", lambda: False)
    slow = dfm.io.read_embeddings(path)
    np.testing.assert_array_equal(slow.embeddings, emb)
    np.testing.assert_array_equal(slow.embeddings, fast.embeddings)
    assert slow.ids.tolist() == fast.ids.tolist() == ids.tolist()
    assert slow.labels["cell_type"].tolist() == fast.labels["cell_type"].tolist()
    (tmp_path / "bad.csv").write_text("cell_id,0,1\na,1.0,oops\n")
    with pytest.raises(DfmInputError, match="Cannot parse"):
        dfm.io.read_embeddings(tmp_path / "bad.csv")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        dfm.io.read_embeddings(dfm.io.write_embeddings(tmp_path / "e.parquet", emb, ids))


def test_csv_read_in_many_blocks(tmp_path, monkeypatch):
    from diffbio_sc.io._embeddings import _table as _embeddings

    rng = np.random.default_rng(8)
    emb = rng.normal(size=(300, 7)).astype(np.float32)
    ids = np.array([f"id{i}" for i in rng.permutation(300)])
    labels = {"cell_type": np.array(["T", "B", "NK"] * 100), "n_genes": np.arange(300)}
    path = dfm.io.write_embeddings(tmp_path / "big.csv", emb, ids, labels=labels)
    monkeypatch.setattr(_embeddings, "_CSV_BLOCK_BYTES", 1024)  # ~10 rows per block
    art = dfm.io.read_embeddings(path)
    np.testing.assert_array_equal(art.embeddings, emb)
    assert art.ids.tolist() == ids.tolist()
    assert art.labels["n_genes"].tolist() == list(range(300))
    assert art.labels["cell_type"].tolist() == labels["cell_type"].tolist()


def test_h5ad_obsm_sparse_and_dataframe(tmp_path):
    import scipy.sparse as sp

    dense = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=np.float32)
    a = ad.AnnData(obs=pd.DataFrame(index=["a", "b", "c"]))
    a.obsm["X_sparse"] = sp.csr_matrix(dense)
    a.obsm["X_frame"] = pd.DataFrame(dense * 2, index=a.obs_names, columns=["u", "v"])
    a.write_h5ad(tmp_path / "x.h5ad")
    sparse = dfm.io.read_embeddings(tmp_path / "x.h5ad", obsm_key="X_sparse")
    np.testing.assert_array_equal(sparse.embeddings, dense)
    frame = dfm.io.read_embeddings(tmp_path / "x.h5ad", obsm_key="X_frame")
    np.testing.assert_array_equal(frame.embeddings, dense * 2)
    assert frame.metadata["columns"] == ["u", "v"]


def test_parquet_non_numeric_dimension(tmp_path):
    df = pd.DataFrame(
        {"0": [1.0, 2.0], "1": ["a", "b"]}, index=pd.Index(["x", "y"], name="cell_id")
    )
    df.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(DfmInputError, match="must be numeric, but '1'"):
        dfm.io.read_embeddings(tmp_path / "s.parquet")


def test_geneformer_csv_with_cell_id_label_uses_it(tmp_path):
    # EmbExtractor with emb_label=['cell_id']: the unnamed index holds row positions,
    # the explicit 'cell_id' column the ids; the latter wins by default.
    df = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    df["cell_type"] = ["T", "B", "T"]
    df["cell_id"] = ["z", "x", "y"]
    df.to_csv(tmp_path / "g.csv")
    art = dfm.io.read_embeddings(tmp_path / "g.csv")
    assert art.ids.tolist() == ["z", "x", "y"]
    assert art.metadata["id_source"] == "column 'cell_id'"
    assert art.metadata["label_columns"] == ["cell_type"]
    np.testing.assert_array_equal(art.embeddings, np.arange(6.0).reshape(3, 2))


def test_empty_ids_refused_and_float_ids_read_as_integers(tmp_path):
    (tmp_path / "e.csv").write_text("cell_id,0,1\n,1,2\nb,3,4\n")
    with pytest.raises(DfmInputError, match="1 empty ids"):
        dfm.io.read_embeddings(tmp_path / "e.csv")
    np.savez(tmp_path / "e.npz", embeddings=np.eye(2), cell_ids=np.array(["a", ""]))
    with pytest.raises(DfmInputError, match="1 empty ids"):
        dfm.io.read_embeddings(tmp_path / "e.npz")
    # a float id column of whole numbers (what pandas makes of integer ids with gaps)
    df = pd.DataFrame({"cell_id": [7.0, 12.0], "0": [1.0, 2.0], "1": [3.0, 4.0]})
    df.to_parquet(tmp_path / "f.parquet", index=False)
    assert dfm.io.read_embeddings(tmp_path / "f.parquet").ids.tolist() == ["7", "12"]
    df["cell_id"] = [7.5, 12.0]
    df.to_parquet(tmp_path / "g.parquet", index=False)
    with pytest.raises(DfmInputError, match="non-integer or missing"):
        dfm.io.read_embeddings(tmp_path / "g.parquet")


@pytest.mark.parametrize("fmt", ["parquet", "safetensors", "npz", "npy", "h5ad", "csv"])
@pytest.mark.parametrize("content", [b"", b"not an embedding file at all " * 4])
def test_empty_or_corrupt_file_is_clear_error(tmp_path, fmt, content):
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(content)
    # the message names the file (or, for text that parses as a table, what is missing)
    with pytest.raises(DfmInputError, match=rf"bad\.{fmt}|No dimension columns"):
        dfm.io.read_embeddings(path, allow_positional=True)


def test_hdf5_that_is_not_anndata(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5ad", "w") as f:
        f["matrix"] = np.eye(3)
    with pytest.raises(DfmInputError, match="not an AnnData .h5ad"):
        dfm.io.read_embeddings(tmp_path / "x.h5ad")


def test_float64_overflow_is_explained(tmp_path):
    emb = np.array([[1e300, 1.0], [1.0, 1.0]])
    np.savez(tmp_path / "o.npz", embeddings=emb, cell_ids=np.array(["a", "b"]))
    with pytest.raises(DfmInputError, match=r"1 embedding rows.*'a'.*beyond the float32 range"):
        dfm.io.read_embeddings(tmp_path / "o.npz")
    assert dfm.io.read_embeddings(tmp_path / "o.npz", dtype=None).embeddings[0, 0] == 1e300


def test_csv_ids_keep_leading_zeros(tmp_path):
    (tmp_path / "z.csv").write_text("cell_id,0,1\n0001,1,2\n0002,3,4\n")
    art = dfm.io.read_embeddings(tmp_path / "z.csv")
    assert art.ids.tolist() == ["0001", "0002"]


def test_csv_without_id_column(tmp_path):
    (tmp_path / "n.csv").write_text("0,1,cell_type\n1,2,x\n3,4,y\n")
    with pytest.raises(DfmInputError, match="no id column"):
        dfm.io.read_embeddings(tmp_path / "n.csv")
    art = dfm.io.read_embeddings(tmp_path / "n.csv", allow_positional=True)
    assert art.ids is None
    np.testing.assert_array_equal(art.embeddings, [[1, 2], [3, 4]])


def test_missing_id_key_column_lists_columns(tmp_path, emb_ids):
    emb, ids = emb_ids
    path = dfm.io.write_embeddings(tmp_path / "e.csv", emb, ids)
    with pytest.raises(DfmInputError, match="id_key='barcode' is not a column.*'cell_id'"):
        dfm.io.read_embeddings(path, id_key="barcode")


def test_parquet_geneformer_style_range_index(tmp_path):
    rng = np.random.default_rng(5)
    embs = rng.normal(size=(6, 4)).astype(np.float32)
    df = pd.DataFrame(embs, columns=[str(i) for i in range(4)])
    df["cell_type"] = list("aabbcc")
    df.to_parquet(tmp_path / "g.parquet")
    art = dfm.io.read_embeddings(tmp_path / "g.parquet")
    assert art.ids.tolist() == [str(i) for i in range(6)]
    assert art.metadata["original_dtype"] == "float32"
    np.testing.assert_array_equal(art.embeddings, embs)


def test_h5ad_obsm_selection(tmp_path):
    rng = np.random.default_rng(6)
    obs = pd.DataFrame({"cell_type": list("abcd"), "barcode": ["w", "x", "y", "z"]})
    obs.index = ["c1", "c2", "c3", "c4"]
    one = ad.AnnData(obs=obs, obsm={"X_uce": rng.normal(size=(4, 3)).astype(np.float32)})
    one.write_h5ad(tmp_path / "one.h5ad")
    art = dfm.io.read_embeddings(tmp_path / "one.h5ad")
    assert art.metadata["obsm_key"] == "X_uce"
    assert art.ids.tolist() == ["c1", "c2", "c3", "c4"]
    np.testing.assert_array_equal(art.embeddings, one.obsm["X_uce"])
    by_col = dfm.io.read_embeddings(tmp_path / "one.h5ad", id_key="barcode")
    assert by_col.ids.tolist() == ["w", "x", "y", "z"]

    several = one.copy()
    several.obsm["X_scGPT"] = rng.normal(size=(4, 5)).astype(np.float32)
    several.obsm["X_pca"] = rng.normal(size=(4, 2)).astype(np.float32)
    several.write_h5ad(tmp_path / "several.h5ad")
    with pytest.raises(
        DfmInputError, match=r"several .obsm entries \['X_pca', 'X_scGPT', 'X_uce'\]"
    ):
        dfm.io.read_embeddings(tmp_path / "several.h5ad")
    picked = dfm.io.read_embeddings(tmp_path / "several.h5ad", source="scgpt")
    assert picked.metadata["obsm_key"] == "X_scGPT"
    np.testing.assert_array_equal(picked.embeddings, several.obsm["X_scGPT"])
    explicit = dfm.io.read_embeddings(tmp_path / "several.h5ad", obsm_key="X_pca")
    np.testing.assert_array_equal(explicit.embeddings, several.obsm["X_pca"])
    with pytest.raises(DfmInputError, match="no .obsm\\['X_umap'\\].*'X_pca'"):
        dfm.io.read_embeddings(tmp_path / "several.h5ad", obsm_key="X_umap")


def test_h5ad_without_obsm(tmp_path):
    ad.AnnData(obs=pd.DataFrame(index=["a", "b"])).write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(DfmInputError, match="no .obsm entries"):
        dfm.io.read_embeddings(tmp_path / "empty.h5ad")


def test_safetensors_companion_integer_tensor(tmp_path):
    from safetensors.numpy import save_file

    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    save_file(
        {"embeddings": emb, "cell_ids": np.array([40, 10, 30, 20], dtype=np.int64)},
        str(tmp_path / "c.safetensors"),
    )
    art = dfm.io.read_embeddings(tmp_path / "c.safetensors")
    assert art.ids.tolist() == ["40", "10", "30", "20"]
    assert art.metadata["id_source"] == "safetensors tensor 'cell_ids'"
    np.testing.assert_array_equal(art.embeddings, emb)


def test_safetensors_metadata_ids_by_hand(tmp_path):
    from safetensors.numpy import save_file

    emb = np.ones((2, 3), dtype=np.float16)
    save_file(
        {"embeddings": emb},
        str(tmp_path / "m.safetensors"),
        metadata={"sequence_ids": json.dumps(["chr1:1-100", "chr2:5-60"])},
    )
    art = dfm.io.read_embeddings(tmp_path / "m.safetensors")
    assert art.ids.tolist() == ["chr1:1-100", "chr2:5-60"]
    assert art.metadata["original_dtype"] == "float16"
    save_file({"embeddings": emb}, str(tmp_path / "bad.safetensors"), metadata={"cell_ids": "{"})
    with pytest.raises(DfmInputError, match="not valid JSON"):
        dfm.io.read_embeddings(tmp_path / "bad.safetensors")
    save_file({"embeddings": emb}, str(tmp_path / "noid.safetensors"))
    with pytest.raises(DfmInputError, match="holds no ids"):
        dfm.io.read_embeddings(tmp_path / "noid.safetensors")


def test_safetensors_missing_package_message(tmp_path, emb_ids, monkeypatch):
    emb, ids = emb_ids
    path = dfm.io.write_embeddings(tmp_path / "e.safetensors", emb, ids)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        dfm.io.read_embeddings(path)
    with pytest.raises(ImportError, match="pip install safetensors"):
        dfm.io.write_embeddings(tmp_path / "f.safetensors", emb, ids)


# ---------------------------------------------------------------------------
# npz / npy specifics and security


def test_npz_object_ids_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ids = np.empty(3, dtype=object)
    ids[:] = [Evil(), "b", "c"]
    with open(tmp_path / "obj.npz", "wb") as fh:
        np.savez(fh, embeddings=np.zeros((3, 2), np.float32), cell_ids=ids)
    with pytest.raises(DfmInputError) as err:
        dfm.io.read_embeddings(tmp_path / "obj.npz")
    msg = str(err.value)
    assert "object array" in msg and "'cell_ids'" in msg
    assert "np.asarray(ids, dtype=str)" in msg  # how to re-save
    assert "arbitrary code" in msg
    assert not marker.exists()


def test_npz_object_embeddings_refused(tmp_path):
    emb = np.empty((2, 2), dtype=object)
    emb[:] = 1.0
    with open(tmp_path / "obj.npz", "wb") as fh:
        np.savez(fh, embeddings=emb, cell_ids=np.array(["a", "b"]))
    with pytest.raises(DfmInputError, match="'embeddings' is an object array"):
        dfm.io.read_embeddings(tmp_path / "obj.npz")


def test_npz_bytes_and_integer_ids(tmp_path):
    emb = np.eye(3, dtype=np.float32)
    np.savez(tmp_path / "b.npz", embeddings=emb, cell_ids=np.array([b"x", b"y", b"z"]))
    assert dfm.io.read_embeddings(tmp_path / "b.npz").ids.tolist() == ["x", "y", "z"]
    np.savez(tmp_path / "i.npz", embeddings=emb, cell_ids=np.array([7, 8, 9]))
    assert dfm.io.read_embeddings(tmp_path / "i.npz").ids.tolist() == ["7", "8", "9"]


def test_npz_key_errors(tmp_path):
    emb = np.eye(3, dtype=np.float32)
    np.savez(tmp_path / "a.npz", arr_0=emb)
    with pytest.raises(DfmInputError, match="no array 'embeddings'.*arr_0.*embeddings_key="):
        dfm.io.read_embeddings(tmp_path / "a.npz")
    np.savez(tmp_path / "n.npz", embeddings=emb)
    with pytest.raises(DfmInputError, match="holds no ids.*allow_positional=True"):
        dfm.io.read_embeddings(tmp_path / "n.npz")
    assert dfm.io.read_embeddings(tmp_path / "n.npz", allow_positional=True).ids is None
    np.savez(
        tmp_path / "both.npz",
        embeddings=emb,
        cell_ids=np.array(["a", "b", "c"]),
        sequence_ids=np.array(["s1", "s2", "s3"]),
    )
    with pytest.raises(DfmInputError, match="both.*ids_key="):
        dfm.io.read_embeddings(tmp_path / "both.npz")
    seq = dfm.io.read_embeddings(tmp_path / "both.npz", source="dnabert2")
    assert seq.ids.tolist() == ["s1", "s2", "s3"]
    cells = dfm.io.read_embeddings(tmp_path / "both.npz", ids_key="cell_ids")
    assert cells.ids.tolist() == ["a", "b", "c"]


def test_npy_needs_explicit_flag(tmp_path):
    np.save(tmp_path / "e.npy", np.eye(3, dtype=np.float32))
    with pytest.raises(DfmInputError, match="no cell ids.*allow_positional=True"):
        dfm.io.read_embeddings(tmp_path / "e.npy")


def test_ids_rows_length_mismatch(tmp_path):
    np.savez(tmp_path / "m.npz", embeddings=np.eye(3), cell_ids=np.array(["a", "b"]))
    with pytest.raises(DfmInputError, match="3 embedding rows but 2 ids"):
        dfm.io.read_embeddings(tmp_path / "m.npz")


# ---------------------------------------------------------------------------
# sanity limits and values


def test_rank_checks(tmp_path):
    np.savez(tmp_path / "r1.npz", embeddings=np.ones(4), cell_ids=np.array(list("abcd")))
    with pytest.raises(DfmInputError, match="1-D.*must be 2-D"):
        dfm.io.read_embeddings(tmp_path / "r1.npz")
    np.savez(tmp_path / "r3.npz", embeddings=np.ones((2, 3, 4)), cell_ids=np.array(["a", "b"]))
    with pytest.raises(DfmInputError, match="rank 3.*pooled first"):
        dfm.io.read_embeddings(tmp_path / "r3.npz")


def test_zero_dims_and_zero_rows(tmp_path):
    np.savez(tmp_path / "z.npz", embeddings=np.ones((3, 0)), cell_ids=np.array(list("abc")))
    with pytest.raises(DfmInputError, match="0 dimensions"):
        dfm.io.read_embeddings(tmp_path / "z.npz")
    np.savez(tmp_path / "e.npz", embeddings=np.ones((0, 4)), cell_ids=np.array([], dtype=str))
    with pytest.raises(DfmInputError, match="no rows"):
        dfm.io.read_embeddings(tmp_path / "e.npz")


def test_dimension_limit_and_transposed_hint(tmp_path):
    wide = np.zeros((2, 65_537), dtype=np.float16)
    np.savez(tmp_path / "w.npz", embeddings=wide, cell_ids=np.array(["a", "b"]))
    with pytest.raises(DfmInputError, match=r"65,537 dimensions.*65,536.*transposed.*\.T"):
        dfm.io.read_embeddings(tmp_path / "w.npz")
    art = dfm.io.read_embeddings(tmp_path / "w.npz", max_dims=70_000)
    assert art.n_dims == 65_537
    np.savez(tmp_path / "s.npz", embeddings=np.zeros((5, 8)), cell_ids=np.array(list("abcde")))
    with pytest.raises(DfmInputError, match="8 dimensions, above the sanity limit of 4"):
        dfm.io.read_embeddings(tmp_path / "s.npz", max_dims=4)


def test_non_finite_rows_named(tmp_path):
    emb = np.ones((5, 3), dtype=np.float32)
    emb[1, 2] = np.nan
    emb[3, 0] = np.inf
    np.savez(tmp_path / "nan.npz", embeddings=emb, cell_ids=np.array(list("abcde")))
    with pytest.raises(DfmInputError, match=r"2 embedding rows hold NaN or infinite.*'b', 'd'"):
        dfm.io.read_embeddings(tmp_path / "nan.npz")
    art = dfm.io.read_embeddings(tmp_path / "nan.npz", check_finite=False)
    assert np.isnan(art.embeddings[1, 2])


def test_non_numeric_embeddings_refused(tmp_path):
    np.savez(tmp_path / "s.npz", embeddings=np.array([["a"], ["b"]]), cell_ids=np.array(["x", "y"]))
    with pytest.raises(DfmInputError, match="must be integer or floating"):
        dfm.io.read_embeddings(tmp_path / "s.npz")


def test_format_inference(tmp_path, emb_ids):
    emb, ids = emb_ids
    with pytest.raises(DfmInputError, match="Cannot tell the format.*format="):
        dfm.io.write_embeddings(tmp_path / "e.bin", emb, ids)
    path = dfm.io.write_embeddings(tmp_path / "e.bin", emb, ids, format="npz")
    np.testing.assert_array_equal(dfm.io.read_embeddings(path, format="npz").embeddings, emb)
    with pytest.raises(DfmInputError, match="Unknown format 'pickle'"):
        dfm.io.read_embeddings(path, format="pickle")
    with pytest.raises(FileNotFoundError, match="not found"):
        dfm.io.read_embeddings(tmp_path / "nope.npz")


def test_write_errors(tmp_path, emb_ids):
    emb, ids = emb_ids
    with pytest.raises(DfmInputError, match="ids are required"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, None)
    with pytest.raises(DfmInputError, match="cannot store ids"):
        dfm.io.write_embeddings(tmp_path / "e.npy", emb, ids)
    dup = ids.copy()
    dup[1] = dup[0]
    with pytest.raises(DfmInputError, match="1 duplicate ids"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, dup)
    with pytest.raises(DfmInputError, match="11 ids for 12"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, ids[:11])
    with pytest.raises(DfmInputError, match="labels cannot be stored in 'npz'"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, ids, labels={"t": np.arange(12)})
    with pytest.raises(DfmInputError, match="clash"):
        dfm.io.write_embeddings(tmp_path / "e.csv", emb, ids, labels={"3": np.arange(12)})
    with pytest.raises(DfmInputError, match="would overwrite the embeddings"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, ids, ids_key="embeddings")
    with pytest.raises(DfmInputError, match="empty ids"):
        dfm.io.write_embeddings(tmp_path / "e.npz", emb, np.where(ids == ids[3], "", ids))
    assert not list(tmp_path.iterdir())


def test_io_import_is_light():
    code = (
        "import sys, diffbio_sc as dfm; dfm.io.read_embeddings; "
        "heavy = [m for m in ('anndata', 'h5py', 'safetensors', 'scanpy', 'jax') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# atomic writes: the previous file survives a kill, a full disk or an error mid-write

ATOMIC_FORMATS = [
    "npz",
    "npy",
    "csv",
    "tsv",
    "parquet",
    "safetensors",
    pytest.param("h5ad", marks=pytest.mark.slow),
]


def _old_file(tmp_path, fmt):
    """Write the 'previous' file at the target and return (path, its bytes, new emb, new ids)."""
    rng = np.random.default_rng(2)
    old = rng.normal(size=(5, 3)).astype(np.float32)
    old_ids = None if fmt == "npy" else np.array([f"old{i}" for i in range(5)])
    path = dfm.io.write_embeddings(tmp_path / f"emb.{fmt}", old, old_ids)
    new = rng.normal(size=(3000, 48)).astype(np.float32)
    new_ids = None if fmt == "npy" else np.array([f"cell{i:05d}" for i in range(3000)])
    return path, path.read_bytes(), new, new_ids


def _child_env():
    """Environment for a child Python that imports this same diffbio_sc source tree."""
    import os
    from pathlib import Path

    src = str(Path(dfm.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _only_target(tmp_path, path):
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [path.name], names


KILL_FORMATS = [
    "npz",
    "csv",
    *(pytest.param(f, marks=pytest.mark.slow) for f in ("npy", "tsv", "parquet", "safetensors")),
    pytest.param("h5ad", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("fmt", KILL_FORMATS)
def test_write_killed_mid_write_keeps_previous_file(tmp_path, fmt):
    """RLIMIT_FSIZE at half the new file's size kills the writer (SIGXFSZ) part-way."""
    path, before, new, new_ids = _old_file(tmp_path, fmt)
    ref = tmp_path / "ref"
    ref.mkdir()
    size = dfm.io.write_embeddings(ref / path.name, new, new_ids).stat().st_size
    assert size > 4 * len(before)
    np.save(ref / "new.npy", new)
    if new_ids is not None:
        np.save(ref / "ids.npy", new_ids)
    code = f"""
import resource, signal
import numpy as np
from diffbio_sc.io._embeddings import write_embeddings
new = np.load({str(ref / "new.npy")!r})
ids = np.load({str(ref / "ids.npy")!r}) if {new_ids is not None} else None
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))
write_embeddings({str(path)!r}, new, ids)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=ref, env=_child_env()
    )
    assert proc.returncode != 0, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    # the killed child could not clean up: a hidden temporary may remain, never the target
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (path.name, "ref")]
    assert all(n.startswith(".") for n in leftovers), leftovers
    ids_back = dfm.io.read_embeddings(path, allow_positional=fmt == "npy")
    assert ids_back.n_rows == 5


@pytest.mark.parametrize("fmt", ATOMIC_FORMATS)
def test_write_full_disk_keeps_previous_file(tmp_path, fmt, monkeypatch):
    """ENOSPC surfacing at fsync (where delayed allocation reports it) leaves the old file."""
    import errno
    import os as _os

    path, before, new, new_ids = _old_file(tmp_path, fmt)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        dfm.io.write_embeddings(path, new, new_ids)
    monkeypatch.undo()
    assert path.read_bytes() == before
    _only_target(tmp_path, path)


@pytest.mark.parametrize("fmt", ATOMIC_FORMATS)
def test_write_error_mid_write_keeps_previous_file(tmp_path, fmt, monkeypatch):
    """The real writer writes, then fails part-way: nothing partial under the target name."""
    from dataclasses import replace

    from diffbio_sc.io._embeddings import _api

    path, before, new, new_ids = _old_file(tmp_path, fmt)
    handler = _api.FORMAT_TABLE[fmt]

    def half_then_fail(tmp, emb, req):
        handler.write(tmp, emb, req)
        with open(tmp, "r+b") as fh:
            fh.truncate(tmp.stat().st_size // 2)
        raise RuntimeError("writer crashed half-way")

    monkeypatch.setitem(_api.FORMAT_TABLE, fmt, replace(handler, write=half_then_fail))
    with pytest.raises(RuntimeError, match="half-way"):
        dfm.io.write_embeddings(path, new, new_ids)
    assert path.read_bytes() == before
    _only_target(tmp_path, path)


def test_write_output_location_errors(tmp_path, emb_ids):
    emb, ids = emb_ids
    (tmp_path / "adir.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="adir.npz.*a directory is there"):
        dfm.io.write_embeddings(tmp_path / "adir.npz", emb, ids)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="afile.*is a file, not a directory"):
        dfm.io.write_embeddings(tmp_path / "afile" / "e.npz", emb, ids)
    # missing parent folders are created, as documented
    out = dfm.io.write_embeddings(tmp_path / "new" / "deeper" / "e.npz", emb, ids)
    assert dfm.io.read_embeddings(out).n_rows == 12


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root ignores directory permissions",
)
def test_write_read_only_directory_is_our_error(tmp_path, emb_ids):
    emb, ids = emb_ids
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            dfm.io.write_embeddings(ro / "e.npz", emb, ids)
    finally:
        ro.chmod(0o700)
