"""Scores for one embedding: cell-type annotation probes and scib-metrics integration.

* :func:`score_annotation`: kNN and logistic-regression probes with seeded,
  stratified k-fold cross-validation (scikit-learn).
* :func:`score_integration`: the scib-metrics (0.5.x) bio-conservation and
  batch-correction metrics computed on arrays, with one shared neighbour search,
  the ``Benchmarker`` aggregate (0.6 bio + 0.4 batch) and the avg_bio / avg_batch
  convention of the scGPT (Cui et al., 2024) and Kedzierska et al. (Genome
  Biology, 2025) evaluations.

Every score is "higher is better" and lies in [0, 1], except the adjusted Rand
index, which is about 0 (and may be slightly negative) for a random embedding.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._logging import timed
from .._validate import (
    DfmInputError,
    check_adata,
    check_obs_key,
    check_obsm_rep,
    is_backed,
    iter_row_chunks,
)

# --------------------------------------------------------------------------
# Metric registry
# --------------------------------------------------------------------------

#: Bio-conservation metrics, in display order.
BIO_METRICS = (
    "isolated_labels",
    "kmeans_nmi",
    "kmeans_ari",
    "leiden_nmi",
    "leiden_ari",
    "silhouette_label",
    "clisi",
)
#: Batch-correction metrics, in display order.
BATCH_METRICS = (
    "bras",
    "silhouette_batch",
    "ilisi",
    "kbet",
    "graph_connectivity",
    "pcr_comparison",
)
#: The metrics of scib-metrics 0.5.10's ``Benchmarker`` with its default settings.
BENCHMARKER_METRICS = (
    "isolated_labels",
    "kmeans_nmi",
    "kmeans_ari",
    "silhouette_label",
    "clisi",
    "bras",
    "ilisi",
    "kbet",
    "graph_connectivity",
    "pcr_comparison",
)
#: Default metric set: the Benchmarker defaults plus the scIB silhouette batch
#: (ASW_batch), which the avg_batch convention needs.
DEFAULT_METRICS = (*BENCHMARKER_METRICS[:6], "silhouette_batch", *BENCHMARKER_METRICS[6:])
#: Display names (the scib-metrics Benchmarker's column names where it has one).
METRIC_NAMES = {
    "isolated_labels": "Isolated labels",
    "kmeans_nmi": "KMeans NMI",
    "kmeans_ari": "KMeans ARI",
    "leiden_nmi": "Leiden NMI",
    "leiden_ari": "Leiden ARI",
    "silhouette_label": "Silhouette label",
    "clisi": "cLISI",
    "bras": "BRAS",
    "silhouette_batch": "Silhouette batch",
    "ilisi": "iLISI",
    "kbet": "KBET",
    "graph_connectivity": "Graph connectivity",
    "pcr_comparison": "PCR comparison",
    "bio_conservation": "Bio conservation",
    "batch_correction": "Batch correction",
    "total": "Total",
    "avg_bio": "avg_bio",
    "avg_batch": "avg_batch",
}
#: Neighbours each graph metric uses (the Benchmarker's 15 / 50 / 90).
_NEIGHBORS_NEEDED = {
    "clisi": 90,
    "ilisi": 90,
    "kbet": 50,
    "graph_connectivity": 15,
    "leiden_nmi": 15,
    "leiden_ari": 15,
}
_ANNOTATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
_ANNOTATION_METHODS = ("knn", "logreg")
_KNN_METHODS = ("auto", "exact", "pynndescent")
_EXACT_KNN_MAX_CELLS = 50_000


def _group_of(metric: str) -> str:
    return "bio" if metric in BIO_METRICS else "batch"


def _scib_version() -> str:
    from importlib.metadata import version

    return version("scib-metrics")


# --------------------------------------------------------------------------
# Annotation probes
# --------------------------------------------------------------------------


def _check_methods(method: str | Sequence[str]) -> list[str]:
    methods = [method] if isinstance(method, str) else list(method)
    if not methods:
        raise DfmInputError("method is empty; use 'knn', 'logreg' or ['knn', 'logreg'].")
    bad = [m for m in methods if m not in _ANNOTATION_METHODS]
    if bad:
        raise DfmInputError(
            f"Unknown annotation method(s) {bad}; use 'knn', 'logreg' or ['knn', 'logreg']."
        )
    return list(dict.fromkeys(methods))


def _annotation_kernel(
    X: np.ndarray,
    y: np.ndarray,
    *,
    methods: Sequence[str],
    n_splits: int,
    seed: int,
    n_neighbors: int,
    max_iter: int,
    C: float,
) -> dict[str, dict[str, np.ndarray]]:
    """Cross-validated probe scores on arrays; ``y`` holds integer class codes.

    Returns ``{method: {metric: per-fold scores}}``. Every class must have at
    least ``n_splits`` members.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X, y))
    # Every class has >= n_splits cells, so stratification puts it in every test fold;
    # macro-F1 averages over all of them (an unpredicted class counts as F1 = 0).
    classes = np.unique(y)
    out: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in _ANNOTATION_METRICS} for m in methods
    }
    for train, test in folds:
        for m in methods:
            if m == "knn":
                clf = KNeighborsClassifier(n_neighbors=min(n_neighbors, train.size))
            else:
                clf = make_pipeline(
                    StandardScaler(),
                    LogisticRegression(max_iter=max_iter, C=C, random_state=seed),
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                from sklearn.exceptions import ConvergenceWarning

                warnings.simplefilter("ignore", category=ConvergenceWarning)
                clf.fit(X[train], y[train])
                pred = clf.predict(X[test])
                scores = out[m]
                scores["accuracy"].append(accuracy_score(y[test], pred))
                scores["balanced_accuracy"].append(balanced_accuracy_score(y[test], pred))
                scores["macro_f1"].append(
                    f1_score(y[test], pred, labels=classes, average="macro", zero_division=0.0)
                )
    return {m: {k: np.asarray(v, dtype=float) for k, v in d.items()} for m, d in out.items()}


def prepare_annotation_labels(
    labels: np.ndarray, n_splits: int, label_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop (and warn about) classes with fewer than ``n_splits`` cells.

    Returns ``(mask of cells kept, integer classes of the kept cells, excluded
    class names, number of kept classes)``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size < 2:
        raise DfmInputError(
            f"adata.obs[{label_key!r}] has a single label ({classes[0]!r}); annotation "
            "scores need at least two cell labels."
        )
    small = classes[counts < n_splits]
    keep_classes = classes[counts >= n_splits]
    if keep_classes.size < 2:
        raise DfmInputError(
            f"Only {keep_classes.size} label(s) of adata.obs[{label_key!r}] have at least "
            f"n_splits={n_splits} cells; need two. Lower n_splits or merge rare labels."
        )
    if small.size:
        warnings.warn(
            f"{small.size} label(s) of adata.obs[{label_key!r}] have fewer than n_splits="
            f"{n_splits} cells and are excluded from the cross-validation: "
            f"{', '.join(map(repr, small.tolist()))}.",
            UserWarning,
            stacklevel=3,
        )
    mask = np.isin(labels, keep_classes)
    y = np.searchsorted(keep_classes, labels[mask])
    return mask, y, small, int(keep_classes.size)


def check_probe_neighbors(n_neighbors) -> int:
    """Return the kNN probe's ``n_neighbors`` as an int >= 1 or raise."""
    if (
        isinstance(n_neighbors, bool)
        or not isinstance(n_neighbors, (int, np.integer))
        or n_neighbors < 1
    ):
        raise DfmInputError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}.")
    return int(n_neighbors)


def check_n_splits(n_splits) -> int:
    """Return ``n_splits`` as an int >= 2 or raise."""
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise DfmInputError(f"n_splits must be an integer >= 2, got {n_splits!r}.")
    return int(n_splits)


def get_rep(adata, use_rep: str) -> np.ndarray:
    """``check_obsm_rep`` that also reads ``use_rep='X'`` of a backed AnnData (in chunks)."""
    if use_rep == "X" and is_backed(adata):
        import scipy.sparse as sp
        from anndata import AnnData

        X = sp.vstack([chunk for _, _, chunk in iter_row_chunks(adata)]).toarray()
        return check_obsm_rep(AnnData(X=X, obs=adata.obs[[]].copy()), "X")
    return check_obsm_rep(adata, use_rep)


def score_annotation(
    adata,
    use_rep: str,
    label_key: str,
    *,
    method: str | Sequence[str] = "knn",
    n_splits: int = 5,
    seed: int = 0,
    n_neighbors: int = 15,
    max_iter: int = 1000,
    C: float = 1.0,
) -> dict[str, Any]:
    """Score how well an embedding predicts cell labels with cross-validated probes.

    Two probes are available: a k-nearest-neighbour classifier on the embedding as
    it is (Euclidean distance, uniform weights) and a multinomial logistic
    regression on standardised features (the scaler is fitted inside each training
    fold, as a pipeline, so no test information leaks). Folds come from
    ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)``.

    Classes with fewer than ``n_splits`` cells cannot appear in every fold; they
    are excluded from the cross-validation, listed in the result under
    ``'excluded_classes'`` and reported with a :class:`UserWarning`.

    Parameters
    ----------
    adata
        AnnData with the embedding in ``.obsm[use_rep]`` (``'X'`` uses ``.X``) and
        labels in ``.obs[label_key]``. Not modified.
    use_rep
        Key of ``adata.obsm`` holding the embedding.
    label_key
        Column of ``adata.obs`` with the cell labels.
    method
        ``'knn'``, ``'logreg'`` or a list of both.
    n_splits
        Number of cross-validation folds (at least 2).
    seed
        Seed of the fold shuffling and of the logistic regression.
    n_neighbors
        Neighbours of the kNN probe (capped at the training-fold size).
    max_iter, C
        Iterations and inverse regularisation strength of the logistic regression.

    Returns
    -------
    dict
        ``'scores'``: ``{method: {metric: {'mean', 'sd', 'folds'}}}`` for the
        metrics ``'accuracy'``, ``'balanced_accuracy'`` and ``'macro_f1'``
        (``sd`` is the sample standard deviation over folds, ``ddof=1``);
        ``'excluded_classes'`` (list of str) and ``'n_excluded_cells'``;
        ``'n_cells'`` (cells scored), ``'n_classes'``; ``'params'``
        (``use_rep``, ``label_key``, ``methods``, ``n_splits``, ``seed``,
        ``n_neighbors``, ``max_iter``, ``C``). Nothing is written to ``adata``.
    """
    check_adata(adata, check_var_names=False)
    methods = _check_methods(method)
    n_splits = check_n_splits(n_splits)
    check_probe_neighbors(n_neighbors)
    X = get_rep(adata, use_rep).astype(np.float64, copy=False)
    labels = check_obs_key(adata, label_key).astype(str).to_numpy()
    mask, y, small, n_classes = prepare_annotation_labels(labels, n_splits, label_key)
    with timed(f"scoring annotation of {use_rep!r} ({', '.join(methods)})"):
        folds = _annotation_kernel(
            X[mask],
            y,
            methods=methods,
            n_splits=n_splits,
            seed=int(seed),
            n_neighbors=int(n_neighbors),
            max_iter=int(max_iter),
            C=float(C),
        )
    scores = {
        m: {
            k: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "folds": v}
            for k, v in d.items()
        }
        for m, d in folds.items()
    }
    return {
        "scores": scores,
        "excluded_classes": small.tolist(),
        "n_excluded_cells": int((~mask).sum()),
        "n_cells": int(mask.sum()),
        "n_classes": n_classes,
        "params": {
            "use_rep": use_rep,
            "label_key": label_key,
            "methods": methods,
            "n_splits": n_splits,
            "seed": int(seed),
            "n_neighbors": int(n_neighbors),
            "max_iter": int(max_iter),
            "C": float(C),
        },
    }


# --------------------------------------------------------------------------
# Integration metrics (scib-metrics)
# --------------------------------------------------------------------------


def _check_metrics(metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        metrics = DEFAULT_METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    known = set(BIO_METRICS) | set(BATCH_METRICS)
    bad = [m for m in metrics if m not in known]
    if bad:
        raise DfmInputError(
            f"Unknown metric(s) {bad}; choose from {list(BIO_METRICS) + list(BATCH_METRICS)}."
        )
    if not metrics:
        raise DfmInputError("metrics is empty; pass None for the default set.")
    if "bras" in metrics:
        import scib_metrics

        if not hasattr(scib_metrics, "bras"):
            raise ImportError(
                f"The 'bras' metric needs scib-metrics >= 0.5.6; {_scib_version()} is "
                "installed. Upgrade it (pip install 'scib-metrics>=0.5.6,<0.6') or pass "
                "metrics= without 'bras'."
            )
    order = list(BIO_METRICS) + list(BATCH_METRICS)
    return sorted(dict.fromkeys(metrics), key=order.index)


def _max_neighbors(metrics: Sequence[str]) -> int:
    return max((_NEIGHBORS_NEEDED.get(m, 0) for m in metrics), default=0)


def compute_neighbors(
    X: np.ndarray,
    n_neighbors: int,
    *,
    method: str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
):
    """k-nearest neighbours of every row of ``X`` (self included) for the graph metrics.

    ``'exact'`` is a brute-force Euclidean search (scikit-learn); ``'pynndescent'``
    is scib-metrics' approximate search with ``random_state=seed`` (what the
    ``Benchmarker`` uses); ``'auto'`` is exact up to 50,000 cells.

    Returns
    -------
    scib_metrics.nearest_neighbors.NeighborsResults
    """
    from scib_metrics.nearest_neighbors import NeighborsResults, pynndescent

    if method not in _KNN_METHODS:
        raise DfmInputError(f"Unknown knn_method {method!r}; use one of {list(_KNN_METHODS)}.")
    if method == "auto":
        method = "exact" if X.shape[0] <= _EXACT_KNN_MAX_CELLS else "pynndescent"
    if method == "pynndescent":
        return pynndescent(
            np.ascontiguousarray(X, dtype=np.float32),
            n_neighbors=n_neighbors,
            random_state=seed,
            n_jobs=n_jobs,
        )
    from sklearn.neighbors import NearestNeighbors

    Xf = np.ascontiguousarray(X, dtype=np.float32)
    nn = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute", n_jobs=n_jobs).fit(Xf)
    dist, idx = nn.kneighbors(Xf)
    return NeighborsResults(indices=idx.astype(np.int64), distances=dist.astype(np.float32))


def check_neighbors(neighbors, n_cells: int, k: int) -> None:
    """Raise unless ``neighbors`` is a NeighborsResults of ``n_cells`` rows with >= ``k`` columns."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    if not isinstance(neighbors, NeighborsResults):
        raise DfmInputError(
            "neighbors must be a scib_metrics.nearest_neighbors.NeighborsResults, got "
            f"{type(neighbors).__name__}; pass None to compute them."
        )
    if neighbors.n_samples != n_cells:
        raise DfmInputError(
            f"The neighbours passed are for {neighbors.n_samples} cells; the embedding has "
            f"{n_cells}. Compute them on the same cells, in the same order."
        )
    if neighbors.n_neighbors < k:
        raise DfmInputError(
            f"The neighbours passed have k={neighbors.n_neighbors}; the metrics need {k}."
        )


def _isolated_label_set(labels: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Labels present in no more batches than the least-spread label (scIB's rule)."""
    pairs = pd.DataFrame({"l": labels, "b": batch}).drop_duplicates()
    per_label = pairs.groupby("l")["b"].count()
    return per_label.index[per_label <= per_label.min()].to_numpy()


def pcr_score(X: np.ndarray, batch: np.ndarray) -> float:
    """Variance of ``X`` explained by the batch (scib-metrics' principal component regression)."""
    from scib_metrics.utils import principal_component_regression

    return float(principal_component_regression(np.asarray(X), np.asarray(batch), categorical=True))


def _integration_kernel(
    X: np.ndarray,
    labels: np.ndarray,
    batch: np.ndarray,
    *,
    metrics: Sequence[str],
    neighbors=None,
    pcr_pre: float | None = None,
    seed: int = 0,
    knn_method: str = "auto",
    n_jobs: int = 1,
    chunk_size: int = 256,
) -> tuple[dict[str, float], dict[str, float]]:
    """Compute ``metrics`` on arrays; labels and batches are integer codes.

    One neighbour search at the largest k needed is shared by every graph metric,
    and one silhouette pass serves both the silhouette label and isolated-label
    scores. Returns ``(values, seconds per step)``.
    """
    import scib_metrics
    from scib_metrics.utils import KMeans, silhouette_samples
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    values: dict[str, float] = {}
    timings: dict[str, float] = {}
    wanted = set(metrics)

    def tick(name: str, start: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    k_max = _max_neighbors(metrics)
    if k_max:
        t = time.perf_counter()
        if neighbors is None:
            neighbors = compute_neighbors(X, k_max, method=knn_method, seed=seed, n_jobs=n_jobs)
        else:
            check_neighbors(neighbors, X.shape[0], k_max)
        tick("neighbors", t)

    if wanted & {"silhouette_label", "isolated_labels"}:
        t = time.perf_counter()
        sil = (np.asarray(silhouette_samples(X, labels, chunk_size=chunk_size)) + 1.0) / 2.0
        if "silhouette_label" in wanted:
            values["silhouette_label"] = float(np.mean(sil))
        if "isolated_labels" in wanted:
            iso = _isolated_label_set(labels, batch)
            values["isolated_labels"] = float(np.mean([sil[labels == lab].mean() for lab in iso]))
        tick("silhouette_label+isolated_labels", t)

    if wanted & {"kmeans_nmi", "kmeans_ari"}:
        t = time.perf_counter()
        km = KMeans(int(np.unique(labels).size), seed=int(seed))
        # scib-metrics' KMeans.fit centres its input in place (X -= mean; X += mean),
        # which leaves float32 round-off in the caller's array: give it a copy.
        km.fit(np.array(X, dtype=np.float32, copy=True))
        pred = np.asarray(km.labels_)
        if "kmeans_nmi" in wanted:
            values["kmeans_nmi"] = float(
                normalized_mutual_info_score(labels, pred, average_method="arithmetic")
            )
        if "kmeans_ari" in wanted:
            values["kmeans_ari"] = float(adjusted_rand_score(labels, pred))
        tick("kmeans_nmi_ari", t)

    if wanted & {"leiden_nmi", "leiden_ari"}:
        t = time.perf_counter()
        res = scib_metrics.nmi_ari_cluster_labels_leiden(
            neighbors.subset_neighbors(15), labels, seed=int(seed)
        )
        if "leiden_nmi" in wanted:
            values["leiden_nmi"] = float(res["nmi"])
        if "leiden_ari" in wanted:
            values["leiden_ari"] = float(res["ari"])
        tick("leiden_nmi_ari", t)

    for name in ("clisi", "ilisi"):
        if name in wanted:
            t = time.perf_counter()
            fn = scib_metrics.clisi_knn if name == "clisi" else scib_metrics.ilisi_knn
            values[name] = float(
                fn(neighbors.subset_neighbors(90), labels if name == "clisi" else batch)
            )
            tick(name, t)

    if wanted & {"bras", "silhouette_batch"}:
        # scib-metrics' silhouette_batch skips a label whose cells lie in one batch, or
        # each in its own batch, and raises on an empty concat when it skips them all.
        per_label = (
            pd.DataFrame({"l": labels, "b": batch}).groupby("l")["b"].agg(["nunique", "size"])
        )
        mixable = bool(
            ((per_label["nunique"] > 1) & (per_label["nunique"] < per_label["size"])).any()
        )
        for name in ("bras", "silhouette_batch"):
            if name not in wanted:
                continue
            t = time.perf_counter()
            if not mixable:
                values[name] = float("nan")
            elif name == "bras":
                values[name] = float(scib_metrics.bras(X, labels, batch, chunk_size=chunk_size))
            else:
                values[name] = float(
                    scib_metrics.silhouette_batch(X, labels, batch, chunk_size=chunk_size)
                )
            tick(name, t)

    if "kbet" in wanted:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            values["kbet"] = float(
                scib_metrics.kbet_per_label(neighbors.subset_neighbors(50), batch, labels)
            )
        tick("kbet", t)

    if "graph_connectivity" in wanted:
        t = time.perf_counter()
        values["graph_connectivity"] = float(
            scib_metrics.graph_connectivity(neighbors.subset_neighbors(15), labels)
        )
        tick("graph_connectivity", t)

    if "pcr_comparison" in wanted:
        if pcr_pre is None:
            raise DfmInputError("pcr_comparison needs the PCR of the unintegrated reference.")
        t = time.perf_counter()
        post = pcr_score(X, batch)
        # scib-metrics' pcr_comparison(scale=True): relative drop, clipped at 0.
        values["pcr_comparison"] = (
            float(max(0.0, (pcr_pre - post) / pcr_pre)) if pcr_pre > 0 else 0.0
        )
        tick("pcr_comparison", t)
    return values, timings


def aggregate_scores(values: Mapping[str, float]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Aggregate integration metrics.

    * ``bio_conservation`` / ``batch_correction``: mean of the computed metrics of
      that group that the scib-metrics 0.5.10 ``Benchmarker`` knows (every metric
      here except ``silhouette_batch``, which it replaced by BRAS);
      ``total = 0.6 * bio_conservation + 0.4 * batch_correction``, as the
      ``Benchmarker``'s ``Total``. As in the ``Benchmarker`` (a pandas mean),
      NaN metrics (e.g. kBET when no label spans two batches) are skipped; a group
      with no finite metric is NaN.
    * ``avg_bio``: mean of NMI, ARI and silhouette label (the scGPT and
      Kedzierska et al. convention; Leiden NMI/ARI when computed, else KMeans);
      ``avg_batch``: mean of silhouette batch (scIB's ASW_batch) and graph
      connectivity. These fixed-formula scores are NaN when an input is NaN.

    An aggregate whose inputs were not computed at all is left out.

    Returns
    -------
    ``(aggregates, inputs)`` where ``inputs`` lists the metrics behind each
    aggregate (for the group means, only the finite ones that were averaged).
    """
    agg: dict[str, float] = {}
    inputs: dict[str, list[str]] = {}

    def finite(names: list[str]) -> list[str]:
        return [m for m in names if np.isfinite(values[m])]

    bio = [m for m in BIO_METRICS if m in values]
    batch = [m for m in BATCH_METRICS if m in values and m != "silhouette_batch"]
    for key, group in (("bio_conservation", bio), ("batch_correction", batch)):
        if group:
            used = finite(group)
            agg[key] = float(np.mean([values[m] for m in used])) if used else float("nan")
            inputs[key] = used
    if bio and batch:
        agg["total"] = 0.6 * agg["bio_conservation"] + 0.4 * agg["batch_correction"]
        inputs["total"] = ["bio_conservation", "batch_correction"]
    clu = "leiden" if {"leiden_nmi", "leiden_ari"} <= set(values) else "kmeans"
    for key, group in (
        ("avg_bio", [f"{clu}_nmi", f"{clu}_ari", "silhouette_label"]),
        ("avg_batch", ["silhouette_batch", "graph_connectivity"]),
    ):
        if all(m in values for m in group):
            agg[key] = float(np.mean([values[m] for m in group]))
            inputs[key] = group
    return agg, inputs


def _codes(col: pd.Series) -> np.ndarray:
    return np.asarray(pd.Categorical(col.astype(str)).codes, dtype=np.int64)


def _check_integration_inputs(
    adata, use_rep: str, batch_key: str, label_key: str, metrics: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and return ``(X, label codes, batch codes)``."""
    check_adata(adata, check_var_names=False)
    X = get_rep(adata, use_rep)
    labels = check_obs_key(adata, label_key)
    batch = check_obs_key(adata, batch_key)
    check_labels_batches(adata, labels, batch, label_key, batch_key, metrics)
    return np.ascontiguousarray(X, dtype=np.float32), _codes(labels), _codes(batch)


def check_labels_batches(adata, labels, batch, label_key, batch_key, metrics) -> None:
    """Raise for a single label, a single batch (batch metrics), batch = label or too few cells."""
    if labels.nunique() < 2:
        raise DfmInputError(
            f"adata.obs[{label_key!r}] has a single label ({labels.iloc[0]!r}); the "
            "integration metrics need at least two cell labels."
        )
    batch_metrics = [m for m in metrics if m in BATCH_METRICS]
    if batch_metrics and batch_key == label_key:
        raise DfmInputError(
            f"batch_key and label_key are both {batch_key!r}: the batch metrics "
            f"{batch_metrics} compare batches within each label and are undefined. Pass "
            "the batch column as batch_key, or metrics= with bio-conservation metrics only."
        )
    if batch_metrics and batch.nunique() < 2:
        raise DfmInputError(
            f"adata.obs[{batch_key!r}] has a single batch ({batch.iloc[0]!r}), so the batch "
            f"metrics {batch_metrics} are undefined. Pass metrics= with bio-conservation "
            f"metrics only ({list(BIO_METRICS)}) or use score_annotation."
        )
    k = _max_neighbors(metrics)
    if k and adata.n_obs <= k:
        raise DfmInputError(
            f"The graph metrics need {k} neighbours per cell but the AnnData has only "
            f"{adata.n_obs} cells; score at least {k + 1} cells or drop "
            f"{[m for m in metrics if _NEIGHBORS_NEEDED.get(m, 0) >= adata.n_obs]}."
        )


def resolve_pre_integrated(
    adata,
    pre_integrated,
    *,
    layer: str | None,
    seed: int,
    n_comps: int = 50,
    n_top_genes: int = 2000,
) -> tuple[np.ndarray, str]:
    """Return the unintegrated reference embedding and a description of where it came from."""
    if pre_integrated is None:
        from ._baselines import pca_baseline

        X_pre = pca_baseline(
            adata, layer=layer, n_comps=n_comps, n_top_genes=n_top_genes, seed=seed
        )
        return X_pre, "pca_baseline (computed)"
    if isinstance(pre_integrated, str):
        return get_rep(adata, pre_integrated), f"obsm:{pre_integrated}"
    X_pre = np.asarray(pre_integrated)
    if X_pre.ndim != 2 or X_pre.shape[0] != adata.n_obs or X_pre.dtype.kind not in "iuf":
        raise DfmInputError(
            f"pre_integrated must be a numeric (n_cells={adata.n_obs}, n_dims) array, an "
            f".obsm key or None, got shape {X_pre.shape} of dtype {X_pre.dtype}."
        )
    if not np.isfinite(X_pre).all():
        raise DfmInputError("pre_integrated holds NaN or infinite values.")
    return X_pre, "array"


def score_integration(
    adata,
    use_rep: str,
    batch_key: str,
    label_key: str,
    *,
    metrics: Sequence[str] | None = None,
    pre_integrated: str | np.ndarray | None = None,
    layer: str | None = None,
    knn_method: str = "auto",
    neighbors=None,
    seed: int = 0,
    n_jobs: int = 1,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Score batch correction and bio conservation of an embedding with scib-metrics.

    Metrics (scib-metrics functions on arrays, higher is better, in [0, 1] except
    ``kmeans_ari`` / ``leiden_ari``, which can dip slightly below 0 at chance):

    * bio conservation: ``isolated_labels`` (silhouette-based), ``kmeans_nmi``,
      ``kmeans_ari``, ``silhouette_label``, ``clisi``; optionally ``leiden_nmi``
      and ``leiden_ari`` (resolution-optimised Leiden, slower);
    * batch correction: ``bras`` (the 0.5.10 ``Benchmarker``'s batch silhouette),
      ``silhouette_batch`` (scIB's ASW_batch, for avg_batch), ``ilisi``, ``kbet``
      (scib-metrics' ``kbet_per_label``), ``graph_connectivity`` and
      ``pcr_comparison`` (against the unintegrated reference).

    One neighbour search at the largest k needed (90 for LISI; 50 for kBET and 15
    for graph connectivity and Leiden are its first columns) serves every graph
    metric, and one silhouette pass serves both ``silhouette_label`` and
    ``isolated_labels``. The values equal the scib-metrics functions called on the
    same arrays and neighbours (KMeans and Leiden use ``seed``; scib-metrics' own
    defaults are 0 and 42). NaN metrics are possible where scib-metrics returns
    them (kBET when no label has 10 cells in two batches; BRAS / silhouette batch
    when no label mixes batches) and are skipped by the group means, as in the
    ``Benchmarker``. kBET's diffusion map calls ARPACK without a start vector, so
    it can vary slightly between calls (scib-metrics takes no seed for it).

    Parameters
    ----------
    adata
        AnnData with the embedding in ``.obsm[use_rep]``, batches in
        ``.obs[batch_key]`` and labels in ``.obs[label_key]``. Not modified.
    use_rep
        Key of ``adata.obsm`` to score.
    batch_key, label_key
        Columns of ``adata.obs``.
    metrics
        Metric names (see above); ``None`` is the ``Benchmarker`` default set plus
        ``silhouette_batch``.
    pre_integrated
        Unintegrated reference for ``pcr_comparison``: an ``.obsm`` key, an array,
        or ``None`` to compute :func:`~diffbio_sc.tl._baselines.pca_baseline` from
        the counts in ``.X`` / ``layer`` (50 PCs of 2,000 log-normalised HVGs).
    layer
        Layer with the raw counts for the computed reference.
    knn_method
        ``'auto'`` (exact up to 50,000 cells, else pynndescent), ``'exact'`` or
        ``'pynndescent'`` (the ``Benchmarker``'s choice).
    neighbors
        Precomputed ``scib_metrics.nearest_neighbors.NeighborsResults`` of
        ``use_rep`` with at least the neighbours needed (self included), sorted
        by distance; the first 15 / 50 / 90 columns are used.
    seed
        Seed of the KMeans, Leiden, pynndescent and reference PCA steps.
    n_jobs
        Threads of the neighbour search.
    chunk_size
        Rows per chunk of the silhouette distance computation.

    Returns
    -------
    dict
        ``'metrics'`` (name -> value), ``'groups'`` (name -> ``'bio'``/``'batch'``),
        ``'aggregate'`` (``bio_conservation``, ``batch_correction``, ``total`` =
        0.6 bio + 0.4 batch, ``avg_bio``, ``avg_batch``; see
        :func:`aggregate_scores`), ``'aggregate_inputs'``, ``'timings'`` (seconds
        per step), ``'params'`` (keys, metrics, neighbours, seed, reference) and
        ``'scib_metrics_version'``. Nothing is written to ``adata``.
    """
    metrics = _check_metrics(metrics)
    X, labels, batch = _check_integration_inputs(adata, use_rep, batch_key, label_key, metrics)
    if knn_method not in _KNN_METHODS:
        raise DfmInputError(f"Unknown knn_method {knn_method!r}; use one of {list(_KNN_METHODS)}.")
    if neighbors is not None and _max_neighbors(metrics):
        check_neighbors(neighbors, X.shape[0], _max_neighbors(metrics))
    pcr_pre, pre_source = None, None
    if "pcr_comparison" in metrics:
        X_pre, pre_source = resolve_pre_integrated(adata, pre_integrated, layer=layer, seed=seed)
    with timed(f"scoring integration of {use_rep!r} with scib-metrics"):
        if "pcr_comparison" in metrics:
            pcr_pre = pcr_score(X_pre, batch)
        values, timings = _integration_kernel(
            X,
            labels,
            batch,
            metrics=metrics,
            neighbors=neighbors,
            pcr_pre=pcr_pre,
            seed=int(seed),
            knn_method=knn_method,
            n_jobs=int(n_jobs),
            chunk_size=int(chunk_size),
        )
    agg, agg_inputs = aggregate_scores(values)
    return {
        "metrics": values,
        "groups": {m: _group_of(m) for m in values},
        "aggregate": agg,
        "aggregate_inputs": agg_inputs,
        "timings": timings,
        "params": {
            "use_rep": use_rep,
            "batch_key": batch_key,
            "label_key": label_key,
            "metrics": metrics,
            "n_neighbors": _max_neighbors(metrics),
            "knn_method": knn_method,
            "seed": int(seed),
            "pre_integrated": pre_source,
            "pcr_pre": pcr_pre,
        },
        "scib_metrics_version": _scib_version(),
    }
