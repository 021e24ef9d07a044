"""Tests of dfm.tl.score_annotation and dfm.tl.score_integration."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

N_CELLS = 300
RAND_METRICS = [
    "isolated_labels",
    "kmeans_nmi",
    "kmeans_ari",
    "silhouette_label",
    "clisi",
    "ilisi",
    "graph_connectivity",
    "pcr_comparison",
]


def _make_adata(n_cells: int = N_CELLS, seed: int = 0):
    adata = dfm.datasets.synthetic_counts(n_cells, 400, n_cell_types=3, n_batches=2, seed=seed)
    rng = np.random.default_rng(seed)
    lab = adata.obs["cell_type"].cat.codes.to_numpy()
    bat = adata.obs["batch"].cat.codes.to_numpy()
    # Labels plus small noise: well separated cell types, batches mixed.
    adata.obsm["X_good"] = (np.eye(3)[lab] * 5 + rng.normal(size=(n_cells, 3)) * 0.3).astype(
        np.float32
    )
    adata.obsm["X_rand"] = rng.normal(size=(n_cells, 10)).astype(np.float32)
    # Batch only: batches separated, labels mixed.
    adata.obsm["X_batch"] = (np.eye(2)[bat] * 5 + rng.normal(size=(n_cells, 2)) * 0.3).astype(
        np.float32
    )
    adata.obsm["X_pre"] = (
        np.hstack([np.eye(3)[lab] * 3, np.eye(2)[bat] * 6]) + rng.normal(size=(n_cells, 5))
    ).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def adata():
    return _make_adata()


@pytest.fixture(scope="module")
def neighbors(adata):
    from scib_metrics.nearest_neighbors import pynndescent

    return {
        k: pynndescent(adata.obsm[k], n_neighbors=90, random_state=0) for k in ("X_good", "X_rand")
    }


@pytest.fixture(scope="module")
def integration_good(adata, neighbors):
    return dfm.tl.score_integration(
        adata,
        "X_good",
        "batch",
        "cell_type",
        pre_integrated="X_pre",
        neighbors=neighbors["X_good"],
    )


@pytest.fixture(scope="module")
def integration_rand(adata, neighbors):
    # The within-label batch metrics (BRAS, silhouette batch, kBET) recompile their
    # JAX kernels for every label subset; the good embedding covers them.
    return dfm.tl.score_integration(
        adata,
        "X_rand",
        "batch",
        "cell_type",
        pre_integrated="X_pre",
        neighbors=neighbors["X_rand"],
        metrics=RAND_METRICS,
    )


# --------------------------------------------------------------------------
# score_annotation
# --------------------------------------------------------------------------


def test_annotation_good_near_top_random_near_chance(adata):
    good = dfm.tl.score_annotation(adata, "X_good", "cell_type", method=["knn", "logreg"])
    rand = dfm.tl.score_annotation(adata, "X_rand", "cell_type", method=["knn", "logreg"])
    for m in ("knn", "logreg"):
        for k in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert good["scores"][m][k]["mean"] > 0.97
            # three balanced classes: chance is 1/3
            assert rand["scores"][m][k]["mean"] < 0.5
    assert good["n_classes"] == 3 and good["excluded_classes"] == []


def test_annotation_matches_plain_cross_validation(adata):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    res = dfm.tl.score_annotation(
        adata, "X_rand", "cell_type", method=["knn", "logreg"], n_splits=4, seed=3
    )
    X = adata.obsm["X_rand"].astype(np.float64)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    accs, baccs, lr_accs = [], [], []
    for tr, te in StratifiedKFold(4, shuffle=True, random_state=3).split(X, y):
        pred = KNeighborsClassifier(15).fit(X[tr], y[tr]).predict(X[te])
        accs.append(np.mean(pred == y[te]))
        recalls = [np.mean(pred[y[te] == c] == c) for c in np.unique(y)]
        baccs.append(np.mean(recalls))
        # standardise with the training fold's mean and sd only
        mu, sd = X[tr].mean(0), X[tr].std(0)
        lr = LogisticRegression(max_iter=1000).fit((X[tr] - mu) / sd, y[tr])
        lr_accs.append(np.mean(lr.predict((X[te] - mu) / sd) == y[te]))
    sc = res["scores"]["knn"]
    np.testing.assert_allclose(sc["accuracy"]["folds"], accs)
    np.testing.assert_allclose(sc["balanced_accuracy"]["folds"], baccs)
    assert sc["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert sc["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    np.testing.assert_allclose(res["scores"]["logreg"]["accuracy"]["folds"], lr_accs)
    assert list(res["scores"]) == ["knn", "logreg"]
    assert res["params"]["n_splits"] == 4 and res["n_cells"] == adata.n_obs


def test_annotation_label_dtype_does_not_matter(adata):
    ad = adata.copy()
    codes = ad.obs["cell_type"].cat.codes.to_numpy()
    ad.obs["as_int"] = codes
    ad.obs["as_str"] = codes.astype(str)
    a = dfm.tl.score_annotation(ad, "X_rand", "as_int")
    b = dfm.tl.score_annotation(ad, "X_rand", "as_str")
    np.testing.assert_array_equal(
        a["scores"]["knn"]["macro_f1"]["folds"], b["scores"]["knn"]["macro_f1"]["folds"]
    )


def test_annotation_macro_f1_hand_case():
    from anndata import AnnData
    from sklearn.model_selection import StratifiedKFold

    # Two classes on a line and one stray "a" cell far beyond the "b" cluster: with
    # k=1 the stray cell is always called "b" and every other cell is right.
    x = np.r_[np.arange(10.0), 100 + np.arange(10.0), [150.0]][:, None]
    lab = np.array(["a"] * 10 + ["b"] * 10 + ["a"])
    ad = AnnData(
        X=np.ones((21, 1), dtype=np.float32),
        obs=pd.DataFrame({"l": lab}, index=[f"c{i}" for i in range(21)]),
        obsm={"e": x},
    )
    res = dfm.tl.score_annotation(ad, "e", "l", method="knn", n_neighbors=1, n_splits=2)
    sc = res["scores"]["knn"]
    expected_acc, expected_f1, expected_bacc = [], [], []
    for _, te in StratifiedKFold(2, shuffle=True, random_state=0).split(x, lab):
        if 20 not in te:
            expected_acc.append(1.0)
            expected_f1.append(1.0)
            expected_bacc.append(1.0)
            continue
        n_a = int((lab[te] == "a").sum())
        n_b = int((lab[te] == "b").sum())
        f1_a = 2 * (n_a - 1) / (2 * (n_a - 1) + 1)  # TP = n_a - 1, FN = 1, FP = 0
        f1_b = 2 * n_b / (2 * n_b + 1)  # TP = n_b, FP = 1, FN = 0
        expected_acc.append((te.size - 1) / te.size)
        expected_f1.append((f1_a + f1_b) / 2)
        expected_bacc.append(((n_a - 1) / n_a + 1.0) / 2)
    np.testing.assert_allclose(sc["accuracy"]["folds"], expected_acc)
    np.testing.assert_allclose(sc["macro_f1"]["folds"], expected_f1)
    np.testing.assert_allclose(sc["balanced_accuracy"]["folds"], expected_bacc)


def test_annotation_logreg_is_scale_invariant_knn_is_not(adata):
    ad = adata.copy()
    X = ad.obsm["X_rand"].copy()
    X[:, 0] *= 1e4
    ad.obsm["X_scaled"] = X
    a = dfm.tl.score_annotation(adata, "X_rand", "cell_type", method=["knn", "logreg"])
    b = dfm.tl.score_annotation(ad, "X_scaled", "cell_type", method=["knn", "logreg"])
    # the scaler is fitted inside each fold, so logistic regression sees the same data
    np.testing.assert_allclose(
        a["scores"]["logreg"]["accuracy"]["folds"], b["scores"]["logreg"]["accuracy"]["folds"]
    )
    assert not np.allclose(
        a["scores"]["knn"]["accuracy"]["folds"], b["scores"]["knn"]["accuracy"]["folds"]
    )


def test_annotation_seeded(adata):
    a = dfm.tl.score_annotation(adata, "X_rand", "cell_type", seed=1)
    b = dfm.tl.score_annotation(adata, "X_rand", "cell_type", seed=1)
    c = dfm.tl.score_annotation(adata, "X_rand", "cell_type", seed=2)
    np.testing.assert_array_equal(
        a["scores"]["knn"]["macro_f1"]["folds"], b["scores"]["knn"]["macro_f1"]["folds"]
    )
    assert not np.array_equal(
        a["scores"]["knn"]["macro_f1"]["folds"], c["scores"]["knn"]["macro_f1"]["folds"]
    )


def test_annotation_rare_class_excluded_and_reported(adata):
    ad = adata.copy()
    ct = ad.obs["cell_type"].astype(str).to_numpy().copy()
    ct[:3] = "rare"
    ad.obs["ct_rare"] = pd.Categorical(ct)
    with pytest.warns(UserWarning, match="rare"):
        res = dfm.tl.score_annotation(ad, "X_good", "ct_rare", n_splits=5)
    assert res["excluded_classes"] == ["rare"]
    assert res["n_excluded_cells"] == 3
    assert res["n_cells"] == ad.n_obs - 3
    assert res["n_classes"] == 3
    # with 3 folds the rare class (3 cells) is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res3 = dfm.tl.score_annotation(ad, "X_good", "ct_rare", n_splits=3)
    assert res3["excluded_classes"] == [] and res3["n_classes"] == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"use_rep": "X_missing"}, "X_missing"),
        ({"label_key": "nope"}, "nope"),
        ({"label_key": "one"}, "single label"),
        ({"use_rep": "X_nan"}, "NaN"),
        ({"method": "svm"}, "svm"),
        ({"n_splits": 1}, "n_splits"),
        ({"n_neighbors": 0}, "n_neighbors"),
    ],
)
def test_annotation_errors(adata, kwargs, match):
    ad = adata.copy()
    ad.obs["one"] = "x"
    X = ad.obsm["X_good"].copy()
    X[5, 0] = np.nan
    ad.obsm["X_nan"] = X
    before_obsm = set(ad.obsm.keys())
    args = {"use_rep": "X_good", "label_key": "cell_type", **kwargs}
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.score_annotation(ad, args.pop("use_rep"), args.pop("label_key"), **args)
    assert set(ad.obsm.keys()) == before_obsm and "dfm" not in ad.uns


# --------------------------------------------------------------------------
# score_integration
# --------------------------------------------------------------------------


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_integration_equals_direct_scib_calls(adata, neighbors, integration_good):
    import scib_metrics

    X = adata.obsm["X_good"]
    labels = np.asarray(adata.obs["cell_type"].values)
    batch = np.asarray(adata.obs["batch"].values)
    nn = neighbors["X_good"]
    expected = {
        "isolated_labels": scib_metrics.isolated_labels(X, labels, batch),
        "silhouette_label": scib_metrics.silhouette_label(X, labels),
        "clisi": scib_metrics.clisi_knn(nn.subset_neighbors(90), labels),
        "bras": scib_metrics.bras(X, labels, batch),
        "silhouette_batch": scib_metrics.silhouette_batch(X, labels, batch),
        "ilisi": scib_metrics.ilisi_knn(nn.subset_neighbors(90), batch),
        "graph_connectivity": scib_metrics.graph_connectivity(nn.subset_neighbors(15), labels),
        "pcr_comparison": scib_metrics.pcr_comparison(
            adata.obsm["X_pre"], X, batch, categorical=True
        ),
    }
    # (scib-metrics' KMeans shifts its input in place: give it a copy)
    nmi_ari = scib_metrics.nmi_ari_cluster_labels_kmeans(X.copy(), labels)
    expected["kmeans_nmi"] = nmi_ari["nmi"]
    expected["kmeans_ari"] = nmi_ari["ari"]
    got = integration_good["metrics"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(float(value), abs=1e-5), name
    # kBET's diffusion map calls ARPACK without a start vector, so two calls may differ:
    # its value is checked for range here and its wiring exactly in the next test.
    assert 0.0 <= got["kbet"] <= 1.0
    assert set(got) == set(dfm.tl._scoring.DEFAULT_METRICS)


def test_kbet_step_passes_50_neighbours_batches_and_labels(adata, monkeypatch):
    """Deterministic check of the kBET step: what it hands scib-metrics and what it returns."""
    import scib_metrics

    from diffbio_sc.ops import _scoring as _kernels

    seen = {}

    def fake_kbet(nn, batches, labels):
        seen.update(idx=np.asarray(nn.indices), batch=np.asarray(batches), labels=labels)
        return 0.4321

    monkeypatch.setattr(scib_metrics, "kbet_per_label", fake_kbet)
    labels = np.asarray(adata.obs["cell_type"].cat.codes, dtype=np.int64)
    batch = np.asarray(adata.obs["batch"].cat.codes, dtype=np.int64)
    nn = _kernels.compute_neighbors(adata.obsm["X_good"], 60, method="exact")
    values, _ = _kernels.integration_kernel(
        adata.obsm["X_good"], labels, batch, metrics=["kbet"], neighbors=nn
    )
    assert values == {"kbet": 0.4321}
    np.testing.assert_array_equal(seen["idx"], nn.subset_neighbors(50).indices)
    np.testing.assert_array_equal(seen["batch"], batch)
    np.testing.assert_array_equal(seen["labels"], labels)


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_integration_aggregates_by_hand(integration_good):
    m = integration_good["metrics"]
    bio = np.mean(
        [m[k] for k in ("isolated_labels", "kmeans_nmi", "kmeans_ari", "silhouette_label", "clisi")]
    )
    batch = np.mean(
        [m[k] for k in ("bras", "ilisi", "kbet", "graph_connectivity", "pcr_comparison")]
    )
    agg = integration_good["aggregate"]
    assert agg["bio_conservation"] == pytest.approx(bio)
    assert agg["batch_correction"] == pytest.approx(batch)
    assert agg["total"] == pytest.approx(0.6 * bio + 0.4 * batch)
    assert agg["avg_bio"] == pytest.approx(
        (m["kmeans_nmi"] + m["kmeans_ari"] + m["silhouette_label"]) / 3
    )
    assert agg["avg_batch"] == pytest.approx((m["silhouette_batch"] + m["graph_connectivity"]) / 2)
    assert integration_good["groups"]["clisi"] == "bio"
    assert integration_good["groups"]["kbet"] == "batch"


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_integration_good_top_random_bottom(integration_good, integration_rand, adata):
    g, r = integration_good["aggregate"], integration_rand["aggregate"]
    assert g["bio_conservation"] > 0.9 and g["total"] > 0.85 and g["avg_bio"] > 0.9
    assert r["bio_conservation"] < 0.35 and r["avg_bio"] < 0.35
    assert g["total"] > r["total"] + 0.3
    # an embedding of batches only: batch correction near the bottom
    bat = dfm.tl.score_integration(
        adata,
        "X_batch",
        "batch",
        "cell_type",
        pre_integrated="X_pre",
        metrics=["ilisi", "bras", "pcr_comparison"],
    )
    assert bat["aggregate"]["batch_correction"] < 0.35
    assert bat["aggregate"]["batch_correction"] < g["batch_correction"] - 0.4
    assert "total" not in bat["aggregate"]  # no bio metric was computed


def test_aggregates_skip_nan_like_the_benchmarker():
    from diffbio_sc.tl._scoring import aggregate_scores

    values = {
        "isolated_labels": 0.5,
        "kmeans_nmi": 0.6,
        "kmeans_ari": 0.4,
        "silhouette_label": 0.8,
        "bras": np.nan,
        "silhouette_batch": np.nan,
        "ilisi": 0.3,
        "kbet": np.nan,
        "graph_connectivity": 0.9,
    }
    agg, inputs = aggregate_scores(values)
    assert agg["bio_conservation"] == pytest.approx((0.5 + 0.6 + 0.4 + 0.8) / 4)
    # the Benchmarker's pandas mean skips NaN metrics
    assert agg["batch_correction"] == pytest.approx((0.3 + 0.9) / 2)
    assert inputs["batch_correction"] == ["ilisi", "graph_connectivity"]
    assert agg["total"] == pytest.approx(0.6 * 0.575 + 0.4 * 0.6)
    assert agg["avg_bio"] == pytest.approx((0.6 + 0.4 + 0.8) / 3)
    assert np.isnan(agg["avg_batch"])  # fixed formula: NaN in, NaN out
    agg2, _ = aggregate_scores({"kbet": np.nan, "kmeans_nmi": 0.2})
    assert np.isnan(agg2["batch_correction"]) and np.isnan(agg2["total"])
    assert "avg_bio" not in agg2 and "avg_batch" not in agg2


def test_integration_labels_nested_in_batches():
    # Every label lies in one batch, except "m", whose two cells lie in two batches
    # (scib-metrics' silhouette batch skips such a label too): the within-label
    # batch metrics are undefined (NaN) and the other metrics still run.
    from anndata import AnnData

    rng = np.random.default_rng(1)
    lab = np.array(["a"] * 20 + ["b"] * 20 + ["m"] * 2)
    bat = np.array(["b1"] * 20 + ["b2"] * 20 + ["b1", "b2"])
    X = rng.normal(size=(42, 4)).astype(np.float32)
    ad = AnnData(
        X=np.ones((42, 1), np.float32),
        obs=pd.DataFrame({"l": lab, "b": bat}, index=[f"c{i}" for i in range(42)]),
        obsm={"e": X},
    )
    res = dfm.tl.score_integration(
        ad, "e", "b", "l", metrics=["bras", "silhouette_batch", "kmeans_nmi"]
    )
    assert np.isnan(res["metrics"]["bras"]) and np.isnan(res["metrics"]["silhouette_batch"])
    assert np.isnan(res["aggregate"]["batch_correction"])
    assert np.isfinite(res["aggregate"]["bio_conservation"])


def _one_bad_start_case():
    """Three labels whose k-means optimum is the labels, and a start that misses it.

    A 120-cell line of length 2.4 and two 10-cell clumps 4 apart, 12 away from it.
    Splitting the line saves less inertia (7.5 L^2 = 43) than merging the clumps
    costs (5 d^2 = 80), so the labels are the best 3-means partition. But
    k-means++ seeds its third centre on the line more often than in the second
    clump (D^2 mass ~2 x 120 against 16 x 10), and Lloyd's steps never leave that
    partition (inertia ~100 against ~64): scoring seed 3 starts there.
    """
    from anndata import AnnData

    rng = np.random.default_rng(0)
    line = np.c_[np.linspace(-1.2, 1.2, 120), 0.2 * rng.normal(size=120)]
    a = np.array([0.0, 12.0]) + 0.2 * rng.normal(size=(10, 2))
    b = np.array([4.0, 12.0]) + 0.2 * rng.normal(size=(10, 2))
    X = np.concatenate([line, a, b]).astype(np.float32)
    labels = np.repeat(["line", "a", "b"], [120, 10, 10])
    obs = pd.DataFrame(
        {"l": labels, "b": np.tile(["b1", "b2"], 70)}, index=[f"c{i}" for i in range(140)]
    )
    return AnnData(X=np.ones((140, 1), np.float32), obs=obs, obsm={"e": X})


@pytest.mark.slow  # JAX compiles scib-metrics' KMeans per instance (~10-20 s for the two)
def test_integration_kmeans_n_init_keeps_the_best_start():
    ad = _one_bad_start_case()
    kw = {"metrics": ["kmeans_nmi", "kmeans_ari"], "seed": 3}
    one = dfm.tl.score_integration(ad, "e", "b", "l", **kw)
    ten = dfm.tl.score_integration(ad, "e", "b", "l", kmeans_n_init=10, **kw)
    # One start (scib-metrics' default) lands in the merged-clumps optimum: the line
    # split in two and a + b as one cluster, ARI ~0.3 against the labels.
    assert one["metrics"]["kmeans_ari"] < 0.5
    assert one["params"]["kmeans_n_init"] == 1
    # The best of ten starts is the labels themselves.
    assert ten["metrics"]["kmeans_ari"] == pytest.approx(1.0)
    assert ten["metrics"]["kmeans_nmi"] == pytest.approx(1.0)
    assert ten["params"]["kmeans_n_init"] == 10
    with pytest.raises(TypeError, match="kmeans_n_init"):
        dfm.tl.score_integration(ad, "e", "b", "l", kmeans_n_init=2.0, **kw)


def test_integration_leaves_embedding_bit_identical(adata):
    # scib-metrics' KMeans centres its input in place; float32 round-off would leak
    # into the user's array if it were handed the stored embedding itself.
    ad = adata.copy()
    rng = np.random.default_rng(0)
    X = (rng.lognormal(size=(ad.n_obs, 3)) * np.array([1.0, 100.0, 0.01])).astype(np.float32)
    X[:5] += 1e4
    ad.obsm["X_skew"] = X
    before = X.copy()
    dfm.tl.score_integration(ad, "X_skew", "batch", "cell_type", metrics=["kmeans_nmi"])
    np.testing.assert_array_equal(ad.obsm["X_skew"], before)
    assert ad.obsm["X_skew"] is X and "dfm" not in ad.uns


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_integration_use_rep_x_of_backed_anndata(adata, integration_good, tmp_path):
    import anndata
    import scipy.sparse as sp

    ad = adata[:, :3].copy()
    ad.X = sp.csr_matrix(ad.obsm["X_good"])  # a backed sparse X is an on-disk dataset
    ad.write_h5ad(tmp_path / "b.h5ad")
    backed = anndata.read_h5ad(tmp_path / "b.h5ad", backed="r")
    res = dfm.tl.score_integration(
        backed, "X", "batch", "cell_type", metrics=["silhouette_label", "kmeans_nmi"]
    )
    # neither metric uses the neighbour graph: equal to the in-memory scores
    for m in ("silhouette_label", "kmeans_nmi"):
        assert res["metrics"][m] == pytest.approx(integration_good["metrics"][m], abs=1e-6)
    ann = dfm.tl.score_annotation(backed, "X", "cell_type")
    assert ann["scores"]["knn"]["accuracy"]["mean"] > 0.97
    backed.file.close()


@pytest.mark.slow  # shares a full-metric fixture (JAX/numba compile)
def test_integration_records_the_reference_pcr_and_version(adata, integration_good):
    import scib_metrics
    from scib_metrics.utils import principal_component_regression

    assert integration_good["scib_metrics_version"] == scib_metrics.__version__
    batch = np.asarray(adata.obs["batch"].astype(str))
    expected = principal_component_regression(adata.obsm["X_pre"], batch, categorical=True)
    assert integration_good["params"]["pcr_pre"] == pytest.approx(float(expected), rel=1e-5)
    # pcr_comparison is the clipped relative drop from that reference
    post = principal_component_regression(adata.obsm["X_good"], batch, categorical=True)
    drop = max(0.0, (float(expected) - float(post)) / float(expected))
    assert integration_good["metrics"]["pcr_comparison"] == pytest.approx(drop, abs=1e-5)


def test_exact_neighbors_match_brute_force(adata):
    from diffbio_sc.tl._scoring import compute_neighbors

    X = adata.obsm["X_rand"]
    nn = compute_neighbors(X, 20, method="exact")
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    ref = np.sort(D, axis=1)[:, :20]
    np.testing.assert_allclose(nn.distances, ref, atol=1e-4)
    assert (nn.indices[:, 0] == np.arange(X.shape[0])).all()  # self first
    # 'auto' is exact at this size
    np.testing.assert_array_equal(compute_neighbors(X, 20, method="auto").indices, nn.indices)


@pytest.mark.slow  # numba compiles pynndescent (~20 s)
def test_pynndescent_neighbors_are_scib_metrics_seeded_search(adata):
    from scib_metrics.nearest_neighbors import pynndescent

    from diffbio_sc.tl._scoring import compute_neighbors

    X = adata.obsm["X_rand"]

    approx = compute_neighbors(X, 20, method="pynndescent", seed=4)
    np.testing.assert_array_equal(approx.indices, pynndescent(X, 20, random_state=4).indices)


@pytest.mark.slow  # Leiden's resolution sweep (~25 s)
def test_integration_bio_only_with_single_batch_and_leiden(adata):
    ad = adata.copy()
    ad.obs["one_batch"] = "b0"
    res = dfm.tl.score_integration(
        ad,
        "X_good",
        "one_batch",
        "cell_type",
        metrics=["kmeans_nmi", "kmeans_ari", "leiden_nmi", "leiden_ari", "silhouette_label"],
    )
    assert res["metrics"]["leiden_nmi"] > 0.9
    # avg_bio follows the scGPT convention and uses Leiden NMI/ARI when computed
    assert res["aggregate_inputs"]["avg_bio"] == ["leiden_nmi", "leiden_ari", "silhouette_label"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"use_rep": "X_missing"}, "X_missing"),
        ({"batch_key": "nope"}, "nope"),
        ({"batch_key": "one"}, "single batch"),
        ({"label_key": "one"}, "single label"),
        ({"use_rep": "X_nan"}, "NaN"),
        ({"metrics": ["asw"]}, "asw"),
        ({"knn_method": "annoy"}, "annoy"),
        ({"pre_integrated": np.zeros((3, 2))}, "pre_integrated"),
        ({"batch_key": "cell_type"}, "both 'cell_type'"),
        ({"neighbors": "graph"}, "NeighborsResults"),
        ({"neighbors": "short"}, "k=15"),
        ({"neighbors": "other_cells"}, "for 100 cells"),
        ({"kmeans_n_init": 0}, "kmeans_n_init must be >= 1.*best"),
    ],
)
def test_integration_errors(adata, kwargs, match):
    ad = adata.copy()
    ad.obs["one"] = "x"
    X = ad.obsm["X_good"].copy()
    X[7, 1] = np.inf
    ad.obsm["X_nan"] = X
    args = {"use_rep": "X_good", "batch_key": "batch", "label_key": "cell_type", **kwargs}
    if args.get("neighbors") in ("short", "other_cells"):
        from scib_metrics.nearest_neighbors import NeighborsResults

        n, k = (ad.n_obs, 15) if args["neighbors"] == "short" else (100, 90)
        idx = np.zeros((n, k), dtype=np.int64)
        args["neighbors"] = NeighborsResults(indices=idx, distances=idx.astype(np.float32))
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.score_integration(
            ad, args.pop("use_rep"), args.pop("batch_key"), args.pop("label_key"), **args
        )
    assert "dfm" not in ad.uns


def test_integration_too_few_cells():
    small = _make_adata(60)
    with pytest.raises(DfmInputError, match="90 neighbours"):
        dfm.tl.score_integration(small, "X_good", "batch", "cell_type", pre_integrated="X_pre")
