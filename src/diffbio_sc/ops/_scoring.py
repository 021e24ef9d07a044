"""Array kernels of the scores (``dfm.tl.score_*``, ``dfm.tl.benchmark``): probes, the integration metrics (a table of steps), aggregates.

Everything here takes NumPy arrays (labels and batches as integer codes) and
returns numbers; nothing touches an AnnData.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._schema import ANNOTATION_METRICS, BATCH_METRICS, BIO_METRICS
from .._validate import DfmInputError, check_choice

#: Neighbours each graph metric uses (the Benchmarker's 15 / 50 / 90).
NEIGHBORS_NEEDED = {
    "clisi": 90,
    "ilisi": 90,
    "kbet": 50,
    "graph_connectivity": 15,
    "leiden_nmi": 15,
    "leiden_ari": 15,
}
KNN_METHODS = ("auto", "exact", "pynndescent")
EXACT_KNN_MAX_CELLS = 50_000


def check_knn_method(knn_method) -> str:
    """Return ``knn_method`` if it is ``'auto'``, ``'exact'`` or ``'pynndescent'``."""
    return check_choice("knn_method", knn_method, KNN_METHODS)


def max_neighbors(metrics: Sequence[str]) -> int:
    """Return the largest number of neighbours the graph metrics among ``metrics`` need (0: none)."""
    return max((NEIGHBORS_NEEDED.get(m, 0) for m in metrics), default=0)


# --------------------------------------------------------------------------- probes


def annotation_kernel(
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
    from sklearn.exceptions import ConvergenceWarning
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
        m: {k: [] for k in ANNOTATION_METRICS} for m in methods
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


# --------------------------------------------------------------------------- neighbours


def compute_neighbors(
    X: np.ndarray,
    n_neighbors: int,
    *,
    method: str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
):
    """Compute the k nearest neighbours of every row of ``X`` (self included) for the graph metrics.

    ``'exact'`` is a brute-force Euclidean search (scikit-learn); ``'pynndescent'``
    is scib-metrics' approximate search with ``random_state=seed`` (what the
    ``Benchmarker`` uses); ``'auto'`` is exact up to 50,000 cells.

    Returns
    -------
    scib_metrics.nearest_neighbors.NeighborsResults
    """
    from scib_metrics.nearest_neighbors import NeighborsResults, pynndescent

    method = check_knn_method(method)
    if method == "auto":
        method = "exact" if X.shape[0] <= EXACT_KNN_MAX_CELLS else "pynndescent"
    Xf = np.ascontiguousarray(X, dtype=np.float32)
    if method == "pynndescent":
        return pynndescent(Xf, n_neighbors=n_neighbors, random_state=seed, n_jobs=n_jobs)
    from sklearn.neighbors import NearestNeighbors

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


# --------------------------------------------------------------------------- metric steps


def isolated_label_set(labels: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Return the labels present in no more batches than the least-spread label (scIB's rule)."""
    pairs = pd.DataFrame({"l": labels, "b": batch}).drop_duplicates()
    per_label = pairs.groupby("l")["b"].count()
    return per_label.index[per_label <= per_label.min()].to_numpy()


def pcr_score(X: np.ndarray, batch: np.ndarray) -> float:
    """Return the variance of ``X`` explained by the batch (scib-metrics' principal component regression)."""
    from scib_metrics.utils import principal_component_regression

    return float(principal_component_regression(np.asarray(X), np.asarray(batch), categorical=True))


@dataclass
class _Inputs:
    """What the metric steps read: the embedding, codes, neighbours and options."""

    X: np.ndarray
    labels: np.ndarray
    batch: np.ndarray
    wanted: set[str]
    seed: int
    chunk_size: int
    pcr_pre: float | None
    neighbors: object = None
    kmeans_n_init: int = 1
    cache: dict = field(default_factory=dict)

    def mixable(self) -> bool:
        """Whether some label has cells in two batches without one batch per cell.

        scib-metrics' silhouette batch skips other labels and raises on an empty
        concat when it skips them all; BRAS and silhouette batch are NaN then.
        """
        if "mixable" not in self.cache:
            per = (
                pd.DataFrame({"l": self.labels, "b": self.batch})
                .groupby("l")["b"]
                .agg(["nunique", "size"])
            )
            self.cache["mixable"] = bool(
                ((per["nunique"] > 1) & (per["nunique"] < per["size"])).any()
            )
        return self.cache["mixable"]


def _silhouettes(d: _Inputs) -> dict[str, float]:
    from scib_metrics.utils import silhouette_samples

    sil = (np.asarray(silhouette_samples(d.X, d.labels, chunk_size=d.chunk_size)) + 1.0) / 2.0
    out = {"silhouette_label": float(np.mean(sil))}
    iso = isolated_label_set(d.labels, d.batch)
    out["isolated_labels"] = float(np.mean([sil[d.labels == lab].mean() for lab in iso]))
    return out


def _kmeans(d: _Inputs) -> dict[str, float]:
    from scib_metrics.utils import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    # n_init > 1: the best inertia of n_init k-means++ starts (scib-metrics' own
    # n_init; its default, 1, is what the Benchmarker runs).
    km = KMeans(int(np.unique(d.labels).size), n_init=d.kmeans_n_init, seed=d.seed)
    # scib-metrics' KMeans.fit centres its input in place (X -= mean; X += mean),
    # which leaves float32 round-off in the caller's array: give it a copy.
    km.fit(np.array(d.X, dtype=np.float32, copy=True))
    pred = np.asarray(km.labels_)
    return {
        "kmeans_nmi": float(
            normalized_mutual_info_score(d.labels, pred, average_method="arithmetic")
        ),
        "kmeans_ari": float(adjusted_rand_score(d.labels, pred)),
    }


def _leiden(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    res = scib_metrics.nmi_ari_cluster_labels_leiden(
        d.neighbors.subset_neighbors(15), d.labels, seed=d.seed
    )
    return {"leiden_nmi": float(res["nmi"]), "leiden_ari": float(res["ari"])}


def _clisi(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    return {"clisi": float(scib_metrics.clisi_knn(d.neighbors.subset_neighbors(90), d.labels))}


def _ilisi(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    return {"ilisi": float(scib_metrics.ilisi_knn(d.neighbors.subset_neighbors(90), d.batch))}


def _bras(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    if not d.mixable():
        return {"bras": float("nan")}
    return {"bras": float(scib_metrics.bras(d.X, d.labels, d.batch, chunk_size=d.chunk_size))}


def _silhouette_batch(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    if not d.mixable():
        return {"silhouette_batch": float("nan")}
    value = scib_metrics.silhouette_batch(d.X, d.labels, d.batch, chunk_size=d.chunk_size)
    return {"silhouette_batch": float(value)}


def _kbet(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        value = scib_metrics.kbet_per_label(d.neighbors.subset_neighbors(50), d.batch, d.labels)
    return {"kbet": float(value)}


def _graph_connectivity(d: _Inputs) -> dict[str, float]:
    import scib_metrics

    value = scib_metrics.graph_connectivity(d.neighbors.subset_neighbors(15), d.labels)
    return {"graph_connectivity": float(value)}


def _pcr_comparison(d: _Inputs) -> dict[str, float]:
    if d.pcr_pre is None:
        raise DfmInputError("pcr_comparison needs the PCR of the unintegrated reference.")
    post = pcr_score(d.X, d.batch)
    # scib-metrics' pcr_comparison(scale=True): relative drop, clipped at 0.
    pre = d.pcr_pre
    return {"pcr_comparison": float(max(0.0, (pre - post) / pre)) if pre > 0 else 0.0}


#: The metric table: (timing name, metrics one step computes, step). One step may
#: serve several metrics (one silhouette pass, one KMeans, one Leiden run).
METRIC_STEPS: tuple[tuple[str, tuple[str, ...], Callable[[_Inputs], dict]], ...] = (
    ("silhouette_label+isolated_labels", ("silhouette_label", "isolated_labels"), _silhouettes),
    ("kmeans_nmi_ari", ("kmeans_nmi", "kmeans_ari"), _kmeans),
    ("leiden_nmi_ari", ("leiden_nmi", "leiden_ari"), _leiden),
    ("clisi", ("clisi",), _clisi),
    ("ilisi", ("ilisi",), _ilisi),
    ("bras", ("bras",), _bras),
    ("silhouette_batch", ("silhouette_batch",), _silhouette_batch),
    ("kbet", ("kbet",), _kbet),
    ("graph_connectivity", ("graph_connectivity",), _graph_connectivity),
    ("pcr_comparison", ("pcr_comparison",), _pcr_comparison),
)


def integration_kernel(
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
    kmeans_n_init: int = 1,
) -> tuple[dict[str, float], dict[str, float]]:
    """Compute ``metrics`` on arrays; labels and batches are integer codes.

    One neighbour search at the largest k needed is shared by every graph metric,
    and one silhouette pass serves both the silhouette label and isolated-label
    scores. The KMeans terms keep the lowest-inertia run of ``kmeans_n_init``
    seeded starts. Returns ``(values, seconds per step)``.
    """
    timings: dict[str, float] = {}
    k_max = max_neighbors(metrics)
    if k_max:
        t = time.perf_counter()
        if neighbors is None:
            neighbors = compute_neighbors(X, k_max, method=knn_method, seed=seed, n_jobs=n_jobs)
        else:
            check_neighbors(neighbors, X.shape[0], k_max)
        timings["neighbors"] = time.perf_counter() - t
    inputs = _Inputs(
        X=X,
        labels=labels,
        batch=batch,
        wanted=set(metrics),
        seed=int(seed),
        chunk_size=int(chunk_size),
        pcr_pre=pcr_pre,
        neighbors=neighbors,
        kmeans_n_init=int(kmeans_n_init),
    )
    values: dict[str, float] = {}
    for name, provides, step in METRIC_STEPS:
        if not inputs.wanted.intersection(provides):
            continue
        t = time.perf_counter()
        out = step(inputs)
        values.update({m: v for m, v in out.items() if m in inputs.wanted})
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
    return values, timings


# --------------------------------------------------------------------------- aggregates


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
    bio = [m for m in BIO_METRICS if m in values]
    batch = [m for m in BATCH_METRICS if m in values and m != "silhouette_batch"]
    for key, group in (("bio_conservation", bio), ("batch_correction", batch)):
        if group:
            used = [m for m in group if np.isfinite(values[m])]
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
