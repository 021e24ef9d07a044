"""Bad inputs across io/scoring/baselines/plots get our own clear error, raised by our code.

Each case names a public call and a bad argument; the test checks the error type, that
the message names the problem, that the exception was raised inside diffbio_sc (not a
raw numpy/scipy/pandas error surfacing from deep inside a library), and that the
AnnData passed in is unchanged.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

OUR_ERRORS = (
    DfmInputError,
    TypeError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
PKG = str(Path(dfm.__file__).resolve().parent)
N = 120


def _adata():
    a = dfm.datasets.synthetic_counts(N, 40, n_cell_types=3, n_batches=2, seed=0)
    rng = np.random.default_rng(0)
    a.obsm["X_emb"] = rng.normal(size=(N, 4)).astype(np.float32)
    a.obsm["X_obj"] = a.obsm["X_emb"].astype(object)
    nan = a.obsm["X_emb"].copy()
    nan[3, 1] = np.nan
    a.obsm["X_nan"] = nan
    a.obs["with_na"] = pd.Series(["x"] * (N - 1) + [None], index=a.obs_names, dtype=object)
    return a


def _results():
    rows = [
        (e, m, g, v, np.nan)
        for e, v in (("X_a", 0.8), ("X_b", 0.4))
        for m, g in (("kmeans_nmi", "bio"), ("ilisi", "batch"), ("total", "aggregate"))
    ]
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "adir.csv").mkdir()
    (tmp / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (tmp / "text.npz").write_text("not a zip")
    (tmp / "text.h5ad").write_text("not hdf5")
    (tmp / "trunc.npy").write_bytes(b"\x93NUMPY\x01\x00")
    (tmp / "bad.json").write_text("{not json")
    (tmp / "binary.json").write_bytes(b"\xff\xfe\x00\x01" * 20)
    (tmp / "afile").write_text("x")
    np.savez(tmp / "ok.npz", embeddings=np.ones((N, 3)), cell_ids=np.arange(N).astype(str))
    return {p.name: p for p in tmp.iterdir()}


A = "adata"  # placeholder for the AnnData in the cases below
R = "results"
F = "files"


def _case(fn, *args, match, **kwargs):
    return (fn, args, kwargs, match)


TL, IO, PL = dfm.tl, dfm.io, dfm.pl
CASES = {
    # score_annotation
    "ann_missing_rep": _case("tl.score_annotation", A, "X_none", "cell_type", match="X_none"),
    "ann_rep_not_str": _case("tl.score_annotation", A, 5, "cell_type", match="use_rep"),
    "ann_object_rep": _case("tl.score_annotation", A, "X_obj", "cell_type", match="dtype"),
    "ann_nan_rep": _case("tl.score_annotation", A, "X_nan", "cell_type", match="NaN"),
    "ann_missing_label": _case("tl.score_annotation", A, "X_emb", "nope", match="nope"),
    "ann_label_na": _case("tl.score_annotation", A, "X_emb", "with_na", match="missing"),
    "ann_method": _case("tl.score_annotation", A, "X_emb", "cell_type", method="svm", match="svm"),
    "ann_method_int": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", method=5, match="method"
    ),
    "ann_splits_1": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", n_splits=1, match="n_splits"
    ),
    "ann_splits_float": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", n_splits=2.5, match="n_splits"
    ),
    "ann_splits_str": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", n_splits="5", match="n_splits"
    ),
    "ann_seed_neg": _case("tl.score_annotation", A, "X_emb", "cell_type", seed=-1, match="seed"),
    "ann_seed_float": _case("tl.score_annotation", A, "X_emb", "cell_type", seed=0.7, match="seed"),
    "ann_seed_huge": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", seed=2**64, match="seed"
    ),
    "ann_nn_0": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", n_neighbors=0, match="n_neighbors"
    ),
    "ann_nn_bool": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", n_neighbors=True, match="n_neighbors"
    ),
    "ann_max_iter": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", max_iter=0, match="max_iter"
    ),
    "ann_C_zero": _case("tl.score_annotation", A, "X_emb", "cell_type", C=0.0, match="C must be"),
    "ann_C_nan": _case(
        "tl.score_annotation", A, "X_emb", "cell_type", C=float("nan"), match="finite"
    ),
    "ann_not_adata": _case("tl.score_annotation", np.ones((3, 3)), "X", "y", match="AnnData"),
    # score_integration
    "int_metric": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", metrics=["nope"], match="nope"
    ),
    "int_metrics_empty": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", metrics=[], match="empty"
    ),
    "int_metrics_int": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", metrics=5, match="metrics"
    ),
    "int_knn": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        knn_method="ball",
        match="knn_method",
    ),
    "int_knn_none": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        knn_method=None,
        match="knn_method",
    ),
    "int_knn_list": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        knn_method=["exact"],
        match="knn_method",
    ),
    "int_jobs_0": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", n_jobs=0, match="n_jobs"
    ),
    "int_jobs_float": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", n_jobs=1.5, match="n_jobs"
    ),
    "int_chunk_0": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", chunk_size=0, match="chunk_size"
    ),
    "int_seed_str": _case(
        "tl.score_integration", A, "X_emb", "batch", "cell_type", seed="1", match="seed"
    ),
    "int_batch_missing": _case(
        "tl.score_integration", A, "X_emb", "nope", "cell_type", match="nope"
    ),
    "int_batch_is_label": _case(
        "tl.score_integration", A, "X_emb", "cell_type", "cell_type", match="both 'cell_type'"
    ),
    "int_pre_shape": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        pre_integrated=np.ones((3, 2)),
        match="pre_integrated",
    ),
    "int_pre_key": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        pre_integrated="X_none",
        match="X_none",
    ),
    "int_neighbors_type": _case(
        "tl.score_integration",
        A,
        "X_emb",
        "batch",
        "cell_type",
        neighbors=np.ones(3),
        match="NeighborsResults",
    ),
    # benchmark
    "bench_name_slash": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", name="a/b", match="'/'"
    ),
    "bench_name_empty": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", name="", match="name"
    ),
    "bench_name_none": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", name=None, match="name"
    ),
    "bench_reps_dup": _case(
        "tl.benchmark", A, ["X_emb", "X_emb"], "batch", "cell_type", match="duplicates"
    ),
    "bench_reps_int": _case("tl.benchmark", A, 5, "batch", "cell_type", match="use_reps"),
    "bench_baseline": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", baselines=["umap"], match="umap"
    ),
    "bench_baseline_int": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", baselines=5, match="baselines"
    ),
    "bench_annotation_str": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", annotation="yes", match="annotation"
    ),
    "bench_ncomps_0": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", n_comps=0, match="n_comps"
    ),
    "bench_ncomps_float": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", n_comps=2.5, match="n_comps"
    ),
    "bench_hvg_1": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", n_top_genes=1, match="n_top_genes"
    ),
    "bench_bka_str": _case(
        "tl.benchmark",
        A,
        "X_emb",
        "batch",
        "cell_type",
        baseline_key_added="x",
        match="baseline_key_added",
    ),
    "bench_bka_slash": _case(
        "tl.benchmark",
        A,
        "X_emb",
        "batch",
        "cell_type",
        baseline_key_added={"pca": "a/b"},
        match="'/'",
    ),
    "bench_dataset_int": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", dataset=3, match="dataset"
    ),
    "bench_knn": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", knn_method="x", match="knn_method"
    ),
    "bench_probe_nn": _case(
        "tl.benchmark", A, "X_emb", "batch", "cell_type", probe_neighbors=0, match="probe_neighbors"
    ),
    "bench_object_rep": _case("tl.benchmark", A, "X_obj", "batch", "cell_type", match="dtype"),
    # baselines
    "pca_ncomps_0": _case("tl.pca_baseline", A, n_comps=0, match="n_comps"),
    "pca_ncomps_float": _case("tl.pca_baseline", A, n_comps=2.5, match="n_comps"),
    "pca_hvg_str": _case("tl.pca_baseline", A, n_top_genes="10", match="n_top_genes"),
    "pca_seed_neg": _case("tl.pca_baseline", A, seed=-1, match="seed"),
    "pca_layer": _case("tl.pca_baseline", A, layer="counts", match="counts"),
    "pca_scale_str": _case("tl.pca_baseline", A, scale="yes", match="scale"),
    "harmony_batch": _case("tl.harmony_baseline", A, "nope", match="nope"),
    "harmony_iter": _case(
        "tl.harmony_baseline", A, "batch", max_iter_harmony=0, match="max_iter_harmony"
    ),
    # regression guard
    "save_dir": _case("tl.save_baseline", R, F + ":adir.csv", match="directory"),
    "save_parent_file": _case("tl.save_baseline", R, F + ":afile/b.json", match="not a directory"),
    "save_results_type": _case("tl.save_baseline", [1, 2], F + ":x.json", match="DataFrame"),
    "save_path_int": _case("tl.save_baseline", R, 5, match="path"),
    "cmp_dir": _case("tl.compare_to_baseline", R, F + ":adir.csv", match="directory"),
    "cmp_bad_json": _case("tl.compare_to_baseline", R, F + ":bad.json", match="JSON"),
    "cmp_binary": _case("tl.compare_to_baseline", R, F + ":binary.json", match="JSON"),
    "cmp_missing": _case("tl.compare_to_baseline", R, F + ":none.json", match="fails closed"),
    "cmp_tol_neg": _case(
        "tl.compare_to_baseline", R, F + ":none.json", tolerance=-1, match="tolerance"
    ),
    "cmp_tol_str": _case(
        "tl.compare_to_baseline", R, F + ":none.json", tolerance="0.1", match="tolerance"
    ),
    "cmp_tol_nan": _case(
        "tl.compare_to_baseline", R, F + ":none.json", tolerance=float("nan"), match="tolerance"
    ),
    "cmp_bootstrap_str": _case(
        "tl.compare_to_baseline", R, F + ":none.json", bootstrap="yes", match="bootstrap"
    ),
    "cmp_path_none": _case("tl.compare_to_baseline", R, None, match="baseline_path"),
    # read_embeddings
    "read_dir": _case("io.read_embeddings", F + ":adir.csv", match="directory"),
    "read_missing": _case("io.read_embeddings", F + ":none.npz", match="not found"),
    "read_binary_csv": _case("io.read_embeddings", F + ":binary.csv", match="binary"),
    "read_text_npz": _case("io.read_embeddings", F + ":text.npz", match="not a valid .npz"),
    "read_text_h5ad": _case("io.read_embeddings", F + ":text.h5ad", match="Cannot open"),
    "read_trunc_npy": _case(
        "io.read_embeddings", F + ":trunc.npy", allow_positional=True, match="not a valid .npy"
    ),
    "read_dtype_int": _case("io.read_embeddings", F + ":ok.npz", dtype=np.int32, match="floating"),
    "read_dtype_junk": _case("io.read_embeddings", F + ":ok.npz", dtype="junk", match="floating"),
    "read_max_dims_0": _case("io.read_embeddings", F + ":ok.npz", max_dims=0, match="max_dims"),
    "read_max_dims_float": _case(
        "io.read_embeddings", F + ":ok.npz", max_dims=2.5, match="max_dims"
    ),
    "read_positional_str": _case(
        "io.read_embeddings", F + ":ok.npz", allow_positional="yes", match="allow_positional"
    ),
    "read_format": _case("io.read_embeddings", F + ":ok.npz", format="xls", match="xls"),
    # write_embeddings
    "write_object": _case(
        "io.write_embeddings", F + ":o.npz", np.ones((2, 2), object), ["a", "b"], match="object"
    ),
    "write_1d": _case(
        "io.write_embeddings", F + ":o.npz", np.ones(3), ["a", "b", "c"], match="1-D"
    ),
    "write_ids_len": _case(
        "io.write_embeddings", F + ":o.npz", np.ones((3, 2)), ["a"], match="1 ids for 3"
    ),
    "write_ids_dup": _case(
        "io.write_embeddings", F + ":o.npz", np.ones((2, 2)), ["a", "a"], match="duplicate"
    ),
    "write_id_key_slash": _case(
        "io.write_embeddings",
        F + ":o.h5ad",
        np.ones((2, 2)),
        ["a", "b"],
        obsm_key="a/b",
        match="'/'",
    ),
    "write_compress_str": _case(
        "io.write_embeddings",
        F + ":o.npz",
        np.ones((2, 2)),
        ["a", "b"],
        compress="yes",
        match="compress",
    ),
    "write_dir": _case(
        "io.write_embeddings", F + ":adir.csv", np.ones((2, 2)), ["a", "b"], match="directory"
    ),
    "write_parent_file": _case(
        "io.write_embeddings",
        F + ":afile/o.npz",
        np.ones((2, 2)),
        ["a", "b"],
        match="not a directory",
    ),
    "write_format": _case(
        "io.write_embeddings", F + ":o.xls", np.ones((2, 2)), ["a", "b"], match="format"
    ),
    "write_labels_type": _case(
        "io.write_embeddings",
        F + ":o.csv",
        np.ones((2, 2)),
        ["a", "b"],
        labels=[1, 2],
        match="labels",
    ),
    # load_embeddings
    "load_key_slash": _case("tl.load_embeddings", A, F + ":ok.npz", key_added="a/b", match="'/'"),
    "load_key_int": _case("tl.load_embeddings", A, F + ":ok.npz", key_added=5, match="key_added"),
    "load_copy_str": _case("tl.load_embeddings", A, F + ":ok.npz", copy="yes", match="copy"),
    "load_subset_int": _case(
        "tl.load_embeddings", A, F + ":ok.npz", allow_subset=1, match="allow_subset"
    ),
    "load_path_int": _case("tl.load_embeddings", A, 5, match="path"),
    "load_artifact_int": _case(
        "tl.load_embeddings", A, F + ":ok.npz", artifact_id=5, match="artifact_id"
    ),
    "load_dir": _case("tl.load_embeddings", A, F + ":adir.csv", match="directory"),
    "load_source_int": _case("tl.load_embeddings", A, F + ":ok.npz", source=5, match="source"),
    # plots
    "pl_kind": _case("pl.benchmark", R, kind="pie", match="kind"),
    "pl_dpi": _case("pl.benchmark", R, dpi=0, match="dpi"),
    "pl_results_int": _case("pl.benchmark", 5, match="DataFrame"),
    "pl_title_int": _case("pl.benchmark", R, title=5, match="title"),
    "pl_save_dir": _case("pl.benchmark", R, save=F + ":adir.csv", match="directory"),
    "pl_emb_nn": _case(
        "pl.embedding", A, "X_emb", color="batch", n_neighbors=0, match="n_neighbors"
    ),
    "pl_emb_seed": _case("pl.embedding", A, "X_emb", color="batch", seed=-1, match="seed"),
    "pl_emb_key": _case("pl.embedding", A, "X_emb", color="batch", key_added="a/b", match="'/'"),
    "pl_emb_basis": _case("pl.embedding", A, "X_none", color="batch", match="X_none"),
}


def _resolve(value, adata, results, files):
    if isinstance(value, str) and value == A:
        return adata
    if isinstance(value, str) and value == R:
        return results
    if isinstance(value, str) and value.startswith(F + ":"):
        return files["_root"] / value[len(F) + 1 :]
    return value


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    files = _files(tmp)
    files["_root"] = tmp
    return _adata(), _results(), files


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_our_clear_error(env, case):
    adata, results, files = env
    fn_name, args, kwargs, match = CASES[case]
    mod, name = fn_name.split(".")
    fn = getattr(getattr(dfm, mod), name)
    args = [_resolve(a, adata, results, files) for a in args]
    kwargs = {k: _resolve(v, adata, results, files) for k, v in kwargs.items()}
    before = adata.copy()
    with pytest.raises(OUR_ERRORS, match=match) as info:
        fn(*args, **kwargs)
    # raised by diffbio_sc itself, with our message, not a library's error passing through
    frame = traceback.extract_tb(info.tb)[-1]
    assert frame.filename.startswith(PKG), (frame.filename, str(info.value))
    assert set(adata.obsm) == set(before.obsm) and set(adata.uns) == set(before.uns)
    assert set(adata.obs.columns) == set(before.obs.columns)


def test_float16_and_integer_embeddings_are_scored_like_float32():
    a = _adata()
    a.obsm["X_16"] = a.obsm["X_emb"].astype(np.float16)
    a.obsm["X_32"] = a.obsm["X_16"].astype(np.float32)
    a.obsm["X_int"] = np.round(a.obsm["X_emb"] * 10).astype(np.int16)
    a.obsm["X_int32"] = a.obsm["X_int"].astype(np.float32)
    r16 = dfm.tl.score_annotation(a, "X_16", "cell_type")
    r32 = dfm.tl.score_annotation(a, "X_32", "cell_type")
    assert _same(r16, r32)
    ri = dfm.tl.score_annotation(a, "X_int", "cell_type")
    rf = dfm.tl.score_annotation(a, "X_int32", "cell_type")
    assert _same(ri, rf)
    m16 = dfm.tl.score_integration(a, "X_16", "batch", "cell_type", metrics=["silhouette_label"])
    m32 = dfm.tl.score_integration(a, "X_32", "batch", "cell_type", metrics=["silhouette_label"])
    assert m16["metrics"] == m32["metrics"]


def _same(r1, r2) -> bool:
    s1, s2 = r1["scores"]["knn"], r2["scores"]["knn"]
    return all(np.array_equal(s1[k]["folds"], s2[k]["folds"]) for k in s1)


def test_float16_counts_give_the_same_pca_baseline():
    a = _adata()
    b = a.copy()
    b.X = a.X.toarray().astype(np.float16)  # scipy.sparse cannot hold float16
    np.testing.assert_allclose(dfm.tl.pca_baseline(b), dfm.tl.pca_baseline(a), atol=1e-4)


def test_object_counts_get_our_error():
    a = _adata()
    a.X = a.X.toarray().astype(object)
    with pytest.raises(DfmInputError, match="dtype object"):
        dfm.tl.pca_baseline(a)
