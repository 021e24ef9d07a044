"""Tests of dfm.tl.benchmark and the regression guard (save_baseline, compare_to_baseline)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.tl._baselines import harmony_baseline, pca_baseline
from diffbio_sc.tl._scoring import BaselineRegressionError, results_frame

# Same shapes as tests/tl/test_scoring.py (300 cells; 3- and 10-dim embeddings), so
# the JAX kernels compiled there are reused when both files run in one session.
N_CELLS = 300
# A fast metric set for most tests (no kBET / LISI / graph metrics); the full
# default set runs once in the module fixture.
FAST_METRICS = ["kmeans_nmi", "kmeans_ari", "silhouette_label", "pcr_comparison"]


def _make_adata(n_cells: int = N_CELLS, seed: int = 0):
    adata = dfm.datasets.synthetic_counts(n_cells, 300, n_cell_types=3, n_batches=2, seed=seed)
    rng = np.random.default_rng(seed)
    lab = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm["X_good"] = (np.eye(3)[lab] * 5 + rng.normal(size=(n_cells, 3)) * 0.3).astype(
        np.float32
    )
    adata.obsm["X_rand"] = rng.normal(size=(n_cells, 10)).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def bench():
    """One full benchmark (default metrics, both probes, PCA and Harmony baselines)."""
    adata = _make_adata()
    before = adata.copy()
    df = dfm.tl.benchmark(
        adata, ["X_good", "X_rand"], "batch", "cell_type", baselines=("pca", "harmony")
    )
    return adata, before, df


def _fast(adata, **kwargs):
    kw = {"baselines": (), "metrics": FAST_METRICS, "annotation_methods": "knn"}
    kw.update(kwargs)
    return dfm.tl.benchmark(adata, ["X_good", "X_rand"], "batch", "cell_type", **kw)


# --------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------


@pytest.mark.slow  # 6-22 s: CI's slow step runs it (fast suite budget: 5 min)
def test_pca_baseline_matches_scanpy_recipe_and_leaves_input():
    import scanpy as sc

    adata = _make_adata()
    X_before = adata.X.copy()
    pca = pca_baseline(adata, n_comps=20, n_top_genes=100, seed=0)
    ref = adata.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=100, flavor="seurat")
    ref = ref[:, ref.var["highly_variable"]].copy()
    sc.pp.pca(ref, n_comps=20, svd_solver="arpack", random_state=0)
    # PCs are defined up to sign
    signs = np.sign((pca * ref.obsm["X_pca"]).sum(0))
    np.testing.assert_allclose(pca * signs, ref.obsm["X_pca"], atol=1e-3)
    assert pca.shape == (N_CELLS, 20) and pca.dtype == np.float32
    assert (adata.X != X_before).nnz == 0
    assert "highly_variable" not in adata.var and "pca" not in adata.uns
    # fewer genes than n_top_genes: all genes are used
    assert pca_baseline(adata, n_comps=10, n_top_genes=5000).shape == (N_CELLS, 10)


def test_pca_baseline_rejects_negative_values_and_warns_on_non_counts():
    adata = _make_adata()
    adata.layers["logged"] = adata.X.toarray().astype(np.float32) - 1.0
    with pytest.raises(DfmInputError, match="negative"):
        pca_baseline(adata, layer="logged")
    adata.layers["logged"] = np.log1p(adata.X.toarray()).astype(np.float32)
    with pytest.warns(UserWarning, match="raw counts"):
        pca_baseline(adata, layer="logged", n_comps=5)


def test_pca_baseline_of_backed_anndata(tmp_path):
    import anndata

    adata = _make_adata(120)
    adata.write_h5ad(tmp_path / "b.h5ad")
    backed = anndata.read_h5ad(tmp_path / "b.h5ad", backed="r")
    np.testing.assert_allclose(
        pca_baseline(backed, n_comps=5), pca_baseline(adata, n_comps=5), atol=1e-4
    )
    backed.file.close()


def test_harmony_missing_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "harmonypy", None)  # makes `import harmonypy` fail
    adata = _make_adata()
    before = adata.copy()
    with pytest.raises(ImportError, match=r"pip install diffbio_sc\[harmony\]"):
        harmony_baseline(adata, "batch")
    with pytest.raises(ImportError, match=r"pip install diffbio_sc\[harmony\]"):
        dfm.tl.benchmark(adata, ["X_good"], "batch", "cell_type", baselines=("harmony",))
    assert set(adata.obsm) == set(before.obsm) and "dfm" not in adata.uns


@pytest.mark.slow  # 20 s: Harmony on the demo data; runs in CI's slow step
def test_harmony_baseline_mixes_batches():
    from diffbio_sc.tl._scoring import pcr_score

    adata = _make_adata()
    pca = pca_baseline(adata, n_comps=20, seed=0)
    harm = harmony_baseline(adata, "batch", pca=pca, seed=0)
    assert harm.shape == pca.shape
    batch = adata.obs["batch"].cat.codes.to_numpy()
    # Harmony removes most of the variance explained by the batch
    assert pcr_score(harm, batch) < 0.5 * pcr_score(pca, batch)
    np.testing.assert_array_equal(harm, harmony_baseline(adata, "batch", pca=pca, seed=0))


# --------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_table_shape(bench):
    _, _, df = bench
    assert list(df.columns) == ["embedding", "metric", "group", "value", "sd"]
    embs = ["X_good", "X_rand", "X_pca_baseline", "X_harmony_baseline"]
    assert list(dict.fromkeys(df["embedding"])) == embs
    assert not df.duplicated(["embedding", "metric"]).any()
    n_ann = 2 * 3  # two probes x three scores
    n_int = len(dfm.tl._scoring.DEFAULT_METRICS)
    n_agg = 5
    assert (df.groupby("embedding").size() == n_ann + n_int + n_agg).all()
    assert set(df["group"]) == {"annotation", "bio", "batch", "aggregate"}
    ann = df[df.group == "annotation"]
    assert np.isfinite(ann["sd"]).all() and df[df.group != "annotation"]["sd"].isna().all()
    assert set(ann["metric"]) == {
        f"{p}_{s}" for p in ("knn", "logreg") for s in ("accuracy", "balanced_accuracy", "macro_f1")
    }


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_ranks_good_first_random_last(bench):
    _, _, df = bench
    total = df[df.metric == "total"].set_index("embedding")["value"]
    bio = df[df.metric == "bio_conservation"].set_index("embedding")["value"]
    assert total.idxmax() == "X_good" and total["X_good"] > 0.85
    assert bio.idxmin() == "X_rand" and bio["X_rand"] < 0.35
    acc = df[df.metric == "knn_accuracy"].set_index("embedding")["value"]
    assert acc["X_good"] > 0.97 and acc["X_rand"] < 0.5
    # Harmony corrects the batch effect of the unintegrated PCA
    batch = df[df.metric == "batch_correction"].set_index("embedding")["value"]
    assert batch["X_harmony_baseline"] > batch["X_pca_baseline"]


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_scores_equal_the_single_scorers(bench):
    adata, _, df = bench
    direct = dfm.tl.score_integration(
        adata,
        "X_rand",
        "batch",
        "cell_type",
        metrics=[
            "kmeans_nmi",
            "silhouette_label",
            "clisi",
            "ilisi",
            "graph_connectivity",
            "pcr_comparison",
        ],
    )
    sub = df[df.embedding == "X_rand"].set_index("metric")["value"]
    for m, v in direct["metrics"].items():
        assert sub[m] == pytest.approx(v, abs=1e-6), m
    ann = dfm.tl.score_annotation(adata, "X_rand", "cell_type", method=["knn", "logreg"])
    assert sub["logreg_macro_f1"] == pytest.approx(ann["scores"]["logreg"]["macro_f1"]["mean"])
    row = df[(df.embedding == "X_rand") & (df.metric == "knn_accuracy")].iloc[0]
    assert row["sd"] == pytest.approx(ann["scores"]["knn"]["accuracy"]["sd"])


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_pca_baseline_is_the_pcr_reference(bench):
    adata, _, df = bench
    pcr = df[df.metric == "pcr_comparison"].set_index("embedding")["value"]
    assert pcr["X_pca_baseline"] == pytest.approx(0.0, abs=1e-6)
    # the baseline scored is pca_baseline(adata) itself
    ad = adata.copy()
    ad.obsm["X_ref"] = pca_baseline(adata)
    res = dfm.tl.score_integration(ad, "X_ref", "batch", "cell_type", metrics=["silhouette_label"])
    sil = df[(df.embedding == "X_pca_baseline") & (df.metric == "silhouette_label")]
    assert sil["value"].iloc[0] == pytest.approx(res["metrics"]["silhouette_label"], abs=1e-6)


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_report_contents(bench):
    import scib_metrics

    adata, before, df = bench
    rep = adata.uns["dfm"]["benchmarks"]["default"]
    assert rep["versions"]["scib-metrics"] == scib_metrics.__version__
    # the stored scores are the returned table
    pd.testing.assert_frame_equal(results_frame(rep), df)
    # per embedding, each group mean is the mean of exactly the finite metrics it lists
    for emb in dict.fromkeys(df["embedding"]):
        sub = df[df.embedding == emb].set_index("metric")["value"]
        inputs = rep["aggregate_inputs"][emb]
        for agg in ("bio_conservation", "batch_correction"):
            group = "bio" if agg == "bio_conservation" else "batch"
            finite = [
                m
                for m in df[(df.embedding == emb) & (df.group == group)]["metric"]
                if m != "silhouette_batch" and np.isfinite(sub[m])
            ]
            assert list(inputs[agg]) == finite, (emb, agg)
            assert sub[agg] == pytest.approx(np.mean([sub[m] for m in finite]))
    # only the report was added; baselines are not written unless asked, and the
    # data scored are left bit-identical
    assert set(adata.obsm.keys()) == set(before.obsm.keys())
    for k in before.obsm:
        np.testing.assert_array_equal(adata.obsm[k], before.obsm[k])
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert list(adata.uns.keys()) == ["dfm"] and list(before.uns.keys()) == []


@pytest.mark.slow  # 20 s: every scib metric on 3 embeddings; runs in CI's slow step
def test_benchmark_aggregate_inputs_are_per_embedding(monkeypatch):
    """A metric that is NaN for one embedding only changes that embedding's aggregates."""
    from diffbio_sc.ops import _scoring as _kernels

    steps = list(_kernels.METRIC_STEPS)
    i = next(i for i, (name, _, _) in enumerate(steps) if name.startswith("silhouette_label"))
    name, provides, real = steps[i]

    def isolated_nan_for_wide(d):
        out = real(d)
        if d.X.shape[1] == 10:  # X_rand
            out["isolated_labels"] = float("nan")
        return out

    steps[i] = (name, provides, isolated_nan_for_wide)
    monkeypatch.setattr(_kernels, "METRIC_STEPS", tuple(steps))
    adata = _make_adata()
    df = _fast(adata, metrics=["isolated_labels", "silhouette_label", "pcr_comparison"])
    rep = adata.uns["dfm"]["benchmarks"]["default"]["aggregate_inputs"]
    assert list(rep["X_good"]["bio_conservation"]) == ["isolated_labels", "silhouette_label"]
    assert list(rep["X_rand"]["bio_conservation"]) == ["silhouette_label"]
    rand = df[df.embedding == "X_rand"].set_index("metric")["value"]
    assert rand["bio_conservation"] == pytest.approx(rand["silhouette_label"])
    good = df[df.embedding == "X_good"].set_index("metric")["value"]
    assert good["bio_conservation"] == pytest.approx(
        np.mean([good["isolated_labels"], good["silhouette_label"]])
    )


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_benchmark_report_survives_h5ad(bench, tmp_path):
    import anndata

    adata, _, df = bench
    path = tmp_path / "bench.h5ad"
    adata.write_h5ad(path)
    back = anndata.read_h5ad(path)
    rep = back.uns["dfm"]["benchmarks"]["default"]
    pd.testing.assert_frame_equal(results_frame(back), results_frame(df))
    _assert_same_tree(rep, adata.uns["dfm"]["benchmarks"]["default"])
    for emb in dict.fromkeys(df["embedding"]):
        assert list(rep["aggregate_inputs"][emb]["total"]) == [
            "bio_conservation",
            "batch_correction",
        ]
    assert set(rep["timings"]) == set(dict.fromkeys(df["embedding"]))


def _assert_same_tree(a, b, where="report"):
    """Recursive equality of two .uns trees (lists and arrays compare by value)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), where
        for k in b:
            _assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(b, (list, tuple, np.ndarray)):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        assert a_arr.shape == b_arr.shape, where
        if b_arr.dtype.kind == "f":
            np.testing.assert_array_equal(a_arr, b_arr, err_msg=where)
        else:
            assert a_arr.astype(str).tolist() == b_arr.astype(str).tolist(), where
    else:
        assert a == b or (a != a and b != b), where


def test_benchmark_baseline_key_added():
    adata = _make_adata()
    _fast(adata, baselines=("pca",), baseline_key_added=True, integration=False)
    np.testing.assert_allclose(adata.obsm["X_pca_baseline"], pca_baseline(adata))
    assert adata.uns["dfm"]["benchmarks"]["default"]["inputs"]["baseline_obsm_keys"] == {
        "pca": "X_pca_baseline"
    }
    _fast(
        adata,
        baselines=("pca",),
        baseline_key_added={"pca": "X_hvg_pca"},
        integration=False,
        name="other",
    )
    assert "X_hvg_pca" in adata.obsm
    assert set(adata.uns["dfm"]["benchmarks"]) == {"default", "other"}
    rep = adata.uns["dfm"]["benchmarks"]["other"]
    assert "integration" in rep["not_evaluated"]
    assert not (results_frame(adata, name="other")["group"].isin(["bio", "batch"])).any()


@pytest.mark.slow  # 6-22 s: CI's slow step runs it (fast suite budget: 5 min)
def test_benchmark_precomputed_reference_and_single_batch_bio_only():
    adata = _make_adata()
    adata.obsm["X_pre"] = pca_baseline(adata, n_comps=10)
    df = _fast(adata, pre_integrated="X_pre")
    rep = adata.uns["dfm"]["benchmarks"]["default"]
    assert rep["inputs"]["pre_integrated"] == "obsm:X_pre"
    assert np.isfinite(df["value"]).all()
    adata.obs["one_batch"] = "b"
    df1 = dfm.tl.benchmark(
        adata,
        "X_good",
        "one_batch",
        "cell_type",
        baselines=(),
        annotation=False,
        metrics=["kmeans_nmi", "silhouette_label"],
        name="bio",
    )
    assert set(df1[df1.group == "aggregate"]["metric"]) == {"bio_conservation"}


def test_benchmark_reports_rare_classes_and_embedding_sources():
    adata = _make_adata()
    ct = adata.obs["cell_type"].astype(str).to_numpy().copy()
    ct[:2] = "rare"
    adata.obs["ct"] = pd.Categorical(ct)
    adata.uns["dfm"] = {"embeddings": {"X_good": {"source": "geneformer", "n_dims": 3}}}
    with pytest.warns(UserWarning, match="rare"):
        df = dfm.tl.benchmark(
            adata, ["X_good", "X_rand"], "batch", "ct", baselines=(), integration=False
        )
    rep = adata.uns["dfm"]["benchmarks"]["default"]
    assert list(rep["excluded_classes"]) == ["rare"]
    assert rep["inputs"]["embedding_sources"] == {"X_good": {"source": "geneformer"}}
    assert set(df["group"]) == {"annotation"}
    # the embeddings section written by other tools is kept
    assert adata.uns["dfm"]["embeddings"]["X_good"]["n_dims"] == 3


def _snapshot(adata):
    return (
        set(adata.obsm.keys()),
        repr(adata.uns),
        adata.obs.copy(),
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("X_missing", "batch", "cell_type"), {}, DfmInputError, "X_missing"),
        (("X_good", "nope", "cell_type"), {}, DfmInputError, "nope"),
        (("X_good", "one", "cell_type"), {}, DfmInputError, "single batch"),
        (("X_good", "batch", "one"), {}, DfmInputError, "single label"),
        (("X_nan", "batch", "cell_type"), {}, DfmInputError, "NaN"),
        (("X_good", "batch", "cell_type"), {"baselines": ("umap",)}, DfmInputError, "umap"),
        ((["X_good", "X_good"], "batch", "cell_type"), {}, DfmInputError, "duplicates"),
        (([], "batch", "cell_type"), {"baselines": ()}, DfmInputError, "Nothing to score"),
        (
            ("X_good", "batch", "cell_type"),
            {"annotation": False, "integration": False},
            DfmInputError,
            "Nothing to do",
        ),
        (
            ("X_good", "batch", "cell_type"),
            {"baseline_key_added": {"harmony": "X_h"}},
            DfmInputError,
            "not computed",
        ),
        (("X_good", "batch", "cell_type"), {"layer": "missing"}, DfmInputError, "missing"),
        (
            ("X_good", "batch", "cell_type"),
            {"pre_integrated": "X_nope"},
            DfmInputError,
            "X_nope",
        ),
        (
            ("X_good", "batch", "cell_type"),
            {"probe_neighbors": 0},
            DfmInputError,
            "probe_neighbors",
        ),
        (("X_good", "batch", "batch"), {}, DfmInputError, "both 'batch'"),
        (("X_good", "batch", "cell_type"), {"kmeans_n_init": -1}, DfmInputError, "kmeans_n_init"),
    ],
)
def test_benchmark_errors_leave_adata_unchanged(args, kwargs, exc, match):
    adata = _make_adata()
    adata.obs["one"] = "x"
    X = adata.obsm["X_good"].copy()
    X[3] = np.nan
    adata.obsm["X_nan"] = X
    before = _snapshot(adata)
    kw = {"baselines": ("pca",), "metrics": FAST_METRICS, "baseline_key_added": True}
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        dfm.tl.benchmark(adata, *args, **kw)
    after = _snapshot(adata)
    assert after[0] == before[0] and after[1] == before[1]
    pd.testing.assert_frame_equal(after[2], before[2])


# --------------------------------------------------------------------------
# regression guard
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_df():
    """A results table in dfm.tl.benchmark's schema (the guard needs no real scores).

    Annotation rows carry a fold sd, one kBET value is NaN (written as null), and the
    guard tests copy the table before they change it.
    """
    rng = np.random.default_rng(3)
    rows = []
    for emb in ("X_good", "X_rand", "X_pca_baseline"):
        rows.append((emb, "knn_accuracy", "annotation", rng.uniform(0.5, 1), 0.03))
        for m in ("isolated_labels", "kmeans_nmi", "kmeans_ari", "silhouette_label"):
            rows.append((emb, m, "bio", rng.uniform(0.2, 0.9), np.nan))
        kbet = np.nan if emb == "X_rand" else rng.uniform(0.2, 0.9)
        rows.append((emb, "kbet", "batch", kbet, np.nan))
        rows.append((emb, "total", "aggregate", rng.uniform(0.3, 0.8), np.nan))
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])


def test_save_baseline_json(fast_df, tmp_path):
    path = dfm.tl.save_baseline(fast_df, tmp_path / "sub" / "base.json")
    payload = json.loads(path.read_text())
    assert payload["format"] == "diffbio_sc.benchmark_baseline"
    assert payload["higher_is_better"] is True
    assert len(payload["scores"]) == len(fast_df)
    first = payload["scores"][0]
    assert set(first) == {"embedding", "metric", "group", "value", "sd"}
    # NaN is written as JSON null, and the file reads back as the same table
    nan_rows = [r for r in payload["scores"] if r["metric"] == "kbet" and r["value"] is None]
    assert [r["embedding"] for r in nan_rows] == ["X_rand"]
    back = pd.DataFrame(payload["scores"]).astype({"value": float, "sd": float})
    pd.testing.assert_frame_equal(back, fast_df.reset_index(drop=True))


def test_compare_passes_on_same_scores(fast_df, tmp_path):
    path = dfm.tl.save_baseline(fast_df, tmp_path / "base.json")
    res = dfm.tl.compare_to_baseline(fast_df, path)
    assert res.attrs["passed"] and not res.attrs["bootstrapped"]
    assert set(res["status"]) == {"ok"}
    # a score that is NaN in both has nothing to compare and does not fail the review
    assert res["delta"].isna().sum() == 1
    np.testing.assert_allclose(res["delta"].dropna(), 0.0)


def test_compare_flags_worse_metric(fast_df, tmp_path):
    path = dfm.tl.save_baseline(fast_df, tmp_path / "base.json")
    cur = fast_df.copy()
    worse = (cur.embedding == "X_good") & (cur.metric == "silhouette_label")
    small = (cur.embedding == "X_good") & (cur.metric == "kmeans_nmi")
    better = (cur.embedding == "X_rand") & (cur.metric == "kmeans_nmi")
    cur.loc[worse, "value"] -= 0.05
    cur.loc[small, "value"] -= 0.01  # within the tolerance
    cur.loc[better, "value"] += 0.10
    res = dfm.tl.compare_to_baseline(cur, path, tolerance=0.02)
    status = res.set_index(["embedding", "metric"])["status"]
    assert status[("X_good", "silhouette_label")] == "worse"
    assert status[("X_good", "kmeans_nmi")] == "ok"
    assert status[("X_rand", "kmeans_nmi")] == "improved"
    assert not res.attrs["passed"]
    assert "X_good/silhouette_label" in res.attrs["reason"]
    # a looser tolerance lets it pass
    assert dfm.tl.compare_to_baseline(cur, path, tolerance=0.06).attrs["passed"]
    with pytest.raises(BaselineRegressionError, match="silhouette_label"):
        dfm.tl.compare_to_baseline(cur, path, raise_on_regression=True)


def test_compare_fails_when_a_metric_disappears(fast_df, tmp_path):
    path = dfm.tl.save_baseline(fast_df, tmp_path / "base.json")
    cur = fast_df[fast_df.metric != "kmeans_ari"]
    res = dfm.tl.compare_to_baseline(cur, path)
    assert not res.attrs["passed"]
    assert set(res[res.metric == "kmeans_ari"]["status"]) == {"missing"}
    # a new metric is reported but does not fail the review
    extra = pd.concat(
        [
            fast_df,
            pd.DataFrame(
                [
                    {
                        "embedding": "X_new",
                        "metric": "total",
                        "group": "aggregate",
                        "value": 0.5,
                        "sd": np.nan,
                    }
                ]
            ),
        ]
    )
    res2 = dfm.tl.compare_to_baseline(extra, path)
    assert res2.attrs["passed"] and "new" in set(res2["status"])


def test_compare_fails_closed_without_baseline(fast_df, tmp_path):
    path = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError, match="fails closed"):
        dfm.tl.compare_to_baseline(fast_df, path)
    assert not path.exists()


def test_compare_bootstrap_writes_baseline(fast_df, tmp_path):
    path = tmp_path / "boot.json"
    res = dfm.tl.compare_to_baseline(fast_df, path, bootstrap=True)
    pd.testing.assert_frame_equal(
        res[["embedding", "metric"]], fast_df[["embedding", "metric"]].reset_index(drop=True)
    )
    np.testing.assert_array_equal(res["baseline"], fast_df["value"])
    assert res.attrs["bootstrapped"] and res.attrs["passed"]
    assert "bootstrapped" in res.attrs["reason"] and set(res["status"]) == {"bootstrapped"}
    assert path.exists()
    # with a baseline present, bootstrap=True compares and does not overwrite
    cur = fast_df.copy()
    cur["value"] -= 0.1
    res2 = dfm.tl.compare_to_baseline(cur, path, bootstrap=True)
    assert not res2.attrs["bootstrapped"] and not res2.attrs["passed"]
    assert dfm.tl.compare_to_baseline(fast_df, path).attrs["passed"]


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_compare_accepts_report_and_anndata(bench, tmp_path):
    adata, _, df = bench
    path = dfm.tl.save_baseline(adata, tmp_path / "b.json")
    payload = json.loads(path.read_text())
    assert payload["versions"]["diffbio_sc"] == dfm.__version__
    rep = adata.uns["dfm"]["benchmarks"]["default"]
    assert dfm.tl.compare_to_baseline(rep, path).attrs["passed"]
    assert dfm.tl.compare_to_baseline(adata, path).attrs["passed"]
    assert len(dfm.tl.compare_to_baseline(df, path)) == len(df)
    # a bootstrapped baseline records the versions of the report too
    boot = tmp_path / "boot.json"
    dfm.tl.compare_to_baseline(adata, boot, bootstrap=True)
    assert json.loads(boot.read_text())["versions"]["diffbio_sc"] == dfm.__version__


def test_compare_rejects_bad_files_and_tolerance(fast_df, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DfmInputError, match="not a JSON text file"):
        dfm.tl.compare_to_baseline(fast_df, bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something"}))
    with pytest.raises(DfmInputError, match="not a diffbio_sc benchmark baseline"):
        dfm.tl.compare_to_baseline(fast_df, other)
    with pytest.raises(DfmInputError, match="tolerance"):
        dfm.tl.compare_to_baseline(fast_df, other, tolerance=-1)
    # an empty baseline would pass every review: it fails closed
    empty = tmp_path / "empty.json"
    empty.write_text(
        json.dumps({"format": "diffbio_sc.benchmark_baseline", "format_version": 1, "scores": []})
    )
    with pytest.raises(DfmInputError, match="no scores"):
        dfm.tl.compare_to_baseline(fast_df, empty)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "diffbio_sc.benchmark_baseline", "format_version": 99}))
    with pytest.raises(DfmInputError, match="format_version"):
        dfm.tl.compare_to_baseline(fast_df, future)
    path = dfm.tl.save_baseline(fast_df, tmp_path / "ok.json")
    with pytest.raises(DfmInputError, match="several scores"):
        dfm.tl.compare_to_baseline(pd.concat([fast_df, fast_df.iloc[:1]]), path)
    with pytest.raises(DfmInputError, match="No benchmark report"):
        results_frame(_make_adata(), name="nothing")


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_plot_real_benchmark_output(bench, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, df = bench
    try:
        fig = dfm.pl.benchmark(df, kind="table", save=tmp_path / "t.png")
        texts = fig.axes[0].texts
        names = [t for t in texts if t.get_text() in set(df["embedding"])]
        order = [t.get_text() for t in sorted(names, key=lambda t: t.get_position()[1])]
        total = df[df.metric == "total"].set_index("embedding")["value"]
        assert order == list(total.sort_values(ascending=False).index)
        assert "n/a" not in {t.get_text() for t in texts}  # every score is finite
        assert (tmp_path / "t.png").stat().st_size > 1000
        fig = dfm.pl.benchmark(df, kind="dots", groups="annotation")
        # one errorbar per embedding with the fold sd of the annotation scores
        assert len(fig.axes) == 1 and len(fig.axes[0].containers) == 4
    finally:
        plt.close("all")


def test_benchmark_shows_progress_per_embedding_and_score_group(capsys, monkeypatch):
    from diffbio_sc._settings import settings

    adata = _make_adata()
    monkeypatch.setattr(settings, "progress_bar", True)
    _fast(adata, metrics=["silhouette_label"])
    err = capsys.readouterr().err
    for emb in ("X_good", "X_rand"):
        assert f"{emb}: annotation probes" in err and f"{emb}: integration metrics" in err
    monkeypatch.setattr(settings, "progress_bar", False)
    _fast(adata, metrics=["silhouette_label"])
    assert "annotation probes" not in capsys.readouterr().err


# --------------------------------------------------------------------------
# atomic baseline writes
# --------------------------------------------------------------------------


def _big_results(n_emb: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [
        (f"X_{e}", m, "bio", float(rng.uniform()), np.nan)
        for e in range(n_emb)
        for m in ("kmeans_nmi", "kmeans_ari", "silhouette_label", "clisi")
    ]
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])


def _old_baseline(tmp_path):
    path = dfm.tl.save_baseline(_big_results(2), tmp_path / "baseline.json")
    return path, path.read_bytes()


def test_save_baseline_killed_mid_write_keeps_previous(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path, before = _old_baseline(tmp_path)
    ref = tmp_path / "ref"
    ref.mkdir()
    big = _big_results()
    size = dfm.tl.save_baseline(big, ref / "b.json").stat().st_size
    big.to_csv(ref / "big.csv", index=False)
    code = f"""
import resource, signal
import pandas as pd
from diffbio_sc.tl._scoring import save_baseline
big = pd.read_csv({str(ref / "big.csv")!r})
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))
save_baseline(big, {str(path)!r})
"""
    src = str(Path(dfm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ref, env=env)
    assert proc.returncode != 0, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    names = [p.name for p in tmp_path.iterdir() if p.name not in ("baseline.json", "ref")]
    assert all(n.startswith(".baseline.json.") for n in names), names


def test_save_baseline_full_disk_or_error_keeps_previous(tmp_path, monkeypatch):
    import errno
    import os

    path, before = _old_baseline(tmp_path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        dfm.tl.save_baseline(_big_results(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]

    from pathlib import Path

    real_write = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise RuntimeError("crashed mid-write")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(RuntimeError, match="mid-write"):
        dfm.tl.save_baseline(_big_results(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]
    # and the previous baseline still reads and compares
    out = dfm.tl.compare_to_baseline(_big_results(2), path)
    assert out.attrs["passed"]


# --------------------------------------------------------------------------
# overflowing input: a clear error up front, not scikit-learn's "Input contains NaN"
# --------------------------------------------------------------------------


def _huge_counts(adata):
    import scipy.sparse as sp

    X = adata.X.toarray().astype(np.float64)
    X[:2, :5] = 1e308  # finite, but no float32 (nor a sum of them) holds it
    adata.X = sp.csr_matrix(X)
    return adata


@pytest.mark.parametrize("baseline", [pca_baseline, harmony_baseline])
def test_baselines_refuse_counts_near_float_max(baseline):
    adata = _huge_counts(dfm.datasets.synthetic_counts(60, 40, n_batches=2, seed=0))
    args = ("batch",) if baseline is harmony_baseline else ()
    with pytest.raises(DfmInputError, match=r"2 cells in adata\.X sum to more than float32"):
        baseline(adata, *args)
    if baseline is harmony_baseline:  # a given PCA that large
        pca = np.ones((60, 5))
        pca[7, 2] = 1e308
        with pytest.raises(DfmInputError, match=r"pca holds values up to 1e\+308 in 1 cells"):
            baseline(dfm.datasets.synthetic_counts(60, 40, n_batches=2, seed=0), "batch", pca=pca)


def test_benchmark_refuses_overflowing_input_and_leaves_adata_unchanged():
    adata = _make_adata()
    huge = adata.obsm["X_good"].astype(np.float64)
    huge[5, 0] = 1e308
    adata.obsm["X_huge"] = huge
    # large enough that float32 squared distances overflow, though float32 holds the value
    adata.obsm["X_big"] = np.where(np.arange(3) == 0, 1e30, adata.obsm["X_good"])
    kw = {"baselines": (), "metrics": FAST_METRICS, "annotation_methods": "knn"}
    cases = [
        ("X_huge", {}, r"'X_huge' holds values up to 1e\+308 in 1 cells"),
        ("X_big", {}, rf"'X_big' holds values up to 1e\+30 in {N_CELLS} cells.*rescale it"),
        ("X_good", {"pre_integrated": huge}, "pre_integrated holds values up to 1e"),
    ]
    for rep, extra, match in cases:
        before = _snapshot(adata)
        with pytest.raises(DfmInputError, match=match):
            dfm.tl.benchmark(adata, rep, "batch", "cell_type", **kw, **extra)
        after = _snapshot(adata)
        assert after[:2] == before[:2]
    adata = _huge_counts(_make_adata())
    before = _snapshot(adata)
    with pytest.raises(DfmInputError, match="sum to more than float32"):
        dfm.tl.benchmark(adata, "X_good", "batch", "cell_type", **{**kw, "baselines": ("pca",)})
    assert _snapshot(adata)[:2] == before[:2]


def test_scib_metrics_info_lines_hidden_unless_verbosity_asks(monkeypatch):
    """scib-metrics logs INFO lines (kBET's "... Skip.") through its own colour handler."""
    import logging

    from diffbio_sc.tl._scoring import _integration

    def kernel(X, labels, batch, *, metrics, **kw):  # stands in for the metrics, logs as kBET
        logging.getLogger("scib_metrics.metrics._kbet").info("0 consists of a single batch")
        return {m: 0.5 for m in metrics}, {m: 0.0 for m in metrics}

    monkeypatch.setattr(_integration, "integration_kernel", kernel)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    scib = logging.getLogger("scib_metrics")
    scib.addHandler(handler)
    old = dfm.settings.verbosity
    adata = _make_adata(60)
    try:
        dfm.tl.score_integration(
            adata, "X_good", "batch", "cell_type", metrics=["silhouette_label"]
        )
        assert records == []  # hidden by default
        assert scib.isEnabledFor(logging.INFO)  # the library's own level is restored
        dfm.settings.verbosity = "info"
        dfm.tl.score_integration(
            adata, "X_good", "batch", "cell_type", metrics=["silhouette_label"]
        )
        assert [r.getMessage() for r in records] == ["0 consists of a single batch"]
    finally:
        dfm.settings.verbosity = old
        scib.removeHandler(handler)


# --------------------------------------------------------------------------
# the verdict (a pure function of the results table; used by the CLI and the plot)
# --------------------------------------------------------------------------


def _verdict_table() -> pd.DataFrame:
    """Hand-made results: bio best X_dfm, batch best Harmony, total best X_dfm."""
    spec = {  # embedding: (bio_conservation, batch_correction)
        "X_pca_baseline": (0.50, 0.30),
        "X_dfm": (0.70, 0.40),
        "X_harmony_baseline": (0.55, 0.60),
    }
    rows = []
    for emb, (bio, batch) in spec.items():
        rows += [
            (emb, "knn_macro_f1", "annotation", bio + 0.2, 0.01),
            (emb, "isolated_labels", "bio", bio, np.nan),
            (emb, "kmeans_nmi", "bio", bio, np.nan),
            (emb, "ilisi", "batch", batch, np.nan),
            (emb, "silhouette_batch", "batch", 0.9, np.nan),
            (emb, "pcr_comparison", "batch", 0.0, np.nan),
            (emb, "bio_conservation", "aggregate", bio, np.nan),
            (emb, "batch_correction", "aggregate", batch, np.nan),
            (emb, "total", "aggregate", 0.6 * bio + 0.4 * batch, np.nan),
            (emb, "avg_batch", "aggregate", 0.88, np.nan),
        ]
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])


def test_verdict_names_the_best_and_its_margin_over_pca():
    from diffbio_sc.tl._scoring._verdict import verdict

    v = verdict(_verdict_table())
    leads = {lead.category: lead for lead in v.leads}
    assert list(leads) == ["bio_conservation", "batch_correction", "total"]
    bio, batch, total = leads["bio_conservation"], leads["batch_correction"], leads["total"]
    assert (bio.best, bio.value) == ("X_dfm", 0.70)
    assert bio.over_reference == pytest.approx(0.20)  # 0.70 - PCA's 0.50
    assert (bio.runner_up, bio.over_runner_up) == ("X_harmony_baseline", pytest.approx(0.15))
    assert (batch.best, batch.over_reference) == ("X_harmony_baseline", pytest.approx(0.30))
    # total = 0.6 bio + 0.4 batch: X_dfm 0.58, Harmony 0.57, PCA 0.42
    assert (total.best, total.over_reference) == ("X_dfm", pytest.approx(0.16))
    assert total.sentence() == (
        "Best on total: X_dfm (0.58): +0.16 over PCA (0.42); +0.01 over the next, Harmony (0.57)"
    )
    # PCR comparison is 0 for every method and says why; silhouette batch constant too
    assert set(v.constant) == {"pcr_comparison", "silhouette_batch"}
    assert v.constant["pcr_comparison"][0] == 0.0
    text = "\n".join(v.lines())
    assert "PCR comparison is 0.00 for every embedding" in text and "unintegrated PCA" in text
    # the two kinds of batch aggregate are explained whenever both are present
    assert any("avg_batch" in n and "not comparable" in n for n in v.notes)


def test_verdict_when_pca_wins_ties_and_without_integration():
    from diffbio_sc.tl._scoring._verdict import verdict

    df = _verdict_table()
    df.loc[(df.embedding == "X_pca_baseline") & (df.metric == "total"), "value"] = 0.9
    df.loc[(df.embedding == "X_harmony_baseline") & (df.metric == "bio_conservation"), "value"] = (
        0.698  # within rounding of X_dfm's 0.70: a tie
    )
    leads = {lead.category: lead for lead in verdict(df).leads}
    total = leads["total"]
    assert total.best == "X_pca_baseline" and total.reference is None  # no margin over itself
    assert total.sentence().startswith("Best on total: PCA (0.90): +0.32 over the next, X_dfm")
    assert leads["bio_conservation"].tied == ("X_harmony_baseline",)
    assert "tied with Harmony" in leads["bio_conservation"].sentence()
    # annotation-only results (genomics_tasks): best by mean macro F1, no PCA to compare to
    ann = pd.DataFrame(
        [
            ("kmer_logreg", "promoters_ecoli_macro_f1", "annotation", 0.9, np.nan),
            ("kmer_logreg", "promoters_ecoli_mcc", "annotation", 0.8, np.nan),
            ("frozen_probe", "promoters_ecoli_macro_f1", "annotation", 0.7, np.nan),
            ("frozen_probe", "promoters_ecoli_mcc", "annotation", 0.99, np.nan),
        ],
        columns=["embedding", "metric", "group", "value", "sd"],
    )
    (lead,) = verdict(ann).leads
    assert (lead.category, lead.best, lead.runner_up) == ("classification", "kmer_logreg",
                                                          "frozen_probe")  # fmt: skip
    assert lead.over_runner_up == pytest.approx(0.2) and lead.reference is None


def test_format_results_leads_with_the_verdict_and_groups_metrics():
    from diffbio_sc.tl._scoring._verdict import format_results

    text = format_results(_verdict_table(), title="cell lines")
    lines = text.splitlines()
    assert lines[0] == "cell lines"
    assert lines[2].startswith("  Best on bio conservation: X_dfm (0.70)")
    names = [ln.strip().split("  ")[0] for ln in lines]
    # each metric sits under its aggregate; silhouette batch under avg_batch, not batch
    order = ["Bio conservation", "Isolated labels", "KMeans NMI", "Batch correction",
             "iLISI", "PCR comparison", "Total"]  # fmt: skip
    assert [n for n in names if n in order] == order
    assert names.index("Silhouette batch (in avg_batch only)") > names.index("avg_batch")
    header = next(ln for ln in lines if ln.startswith("Scores"))
    assert header.split()[1:] == ["X_dfm", "Harmony", "PCA"]  # best in total first
    assert "Notes:" in lines and "PCR comparison is 0.00 for every embedding" in text
