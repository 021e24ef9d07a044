"""scib-metrics integration scores of one embedding (AnnData wrapper over the metric kernels).

:func:`plan_integration` validates the arguments and encodes labels and batches
once; :func:`run_integration` scores one embedding array with that plan. Both
:func:`score_integration` and :func:`~diffbio_sc.tl.benchmark` use the pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._logging import quiet_library, timed
from ..._schema import group_of
from ..._validate import (
    DfmInputError,
    check_adata,
    check_int,
    check_key,
    check_obs_key,
    check_seed,
)
from ...ops._scoring import (
    aggregate_scores,
    check_knn_method,
    check_neighbors,
    integration_kernel,
    max_neighbors,
    pcr_score,
)
from ._checks import (
    check_labels_batches,
    check_metrics,
    check_n_jobs,
    check_pre_integrated,
    codes,
    describe_pre_integrated,
    get_rep,
    scib_version,
)


@dataclass(frozen=True)
class IntegrationPlan:
    """Validated metric options and the encoded labels and batches of one AnnData."""

    batch_key: str
    label_key: str
    metrics: list[str]
    labels: np.ndarray
    batch: np.ndarray
    knn_method: str
    seed: int
    n_jobs: int
    chunk_size: int
    kmeans_n_init: int = 1

    @property
    def n_neighbors(self) -> int:
        """Neighbours of the shared search (0 when no graph metric is asked for)."""
        return max_neighbors(self.metrics)

    def params(self) -> dict[str, Any]:
        """Return the options as recorded in results."""
        return {
            "batch_key": self.batch_key,
            "label_key": self.label_key,
            "metrics": self.metrics,
            "n_neighbors": self.n_neighbors,
            "knn_method": self.knn_method,
            "seed": self.seed,
            "kmeans_n_init": self.kmeans_n_init,
        }


def plan_integration(
    adata,
    batch_key: str,
    label_key: str,
    *,
    metrics: Sequence[str] | None = None,
    knn_method: str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
    chunk_size: int = 256,
    check_batches: bool = True,
    kmeans_n_init: int = 1,
) -> IntegrationPlan:
    """Check the metric options, the label and batch columns, and encode them.

    ``check_batches=False`` skips the checks that the labels and batches suit the
    metrics (the benchmark with ``integration=False``).
    """
    check_key("batch_key", batch_key)
    check_key("label_key", label_key)
    metrics = check_metrics(metrics)
    knn_method = check_knn_method(knn_method)
    seed = check_seed(seed)
    n_jobs = check_n_jobs(n_jobs)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    kmeans_n_init = check_kmeans_n_init(kmeans_n_init)
    labels = check_obs_key(adata, label_key)
    batch = check_obs_key(adata, batch_key)
    if check_batches:
        check_labels_batches(adata, labels, batch, label_key, batch_key, metrics)
    return IntegrationPlan(
        batch_key, label_key, metrics, codes(labels), codes(batch), knn_method, seed, n_jobs,
        chunk_size, kmeans_n_init,
    )  # fmt: skip


def check_kmeans_n_init(kmeans_n_init) -> int:
    """Return ``kmeans_n_init`` as an int >= 1, or raise a :class:`DfmInputError` naming the fix."""
    try:
        return check_int("kmeans_n_init", kmeans_n_init, minimum=1)
    except DfmInputError as err:
        raise type(err)(
            f"{err} Pass 1 for scib-metrics' single KMeans start, or e.g. 10 to keep the "
            "best (lowest-inertia) of 10 seeded starts."
        ) from None


def run_integration(
    X: np.ndarray, plan: IntegrationPlan, *, pcr_pre: float | None = None, neighbors=None
) -> dict[str, Any]:
    """Metrics, groups, aggregates and timings of one embedding array under ``plan``."""
    with quiet_library("scib_metrics"):  # its INFO lines only where verbosity asks
        values, timings = integration_kernel(
            X,
            plan.labels,
            plan.batch,
            metrics=plan.metrics,
            neighbors=neighbors,
            pcr_pre=pcr_pre,
            seed=plan.seed,
            knn_method=plan.knn_method,
            n_jobs=plan.n_jobs,
            chunk_size=plan.chunk_size,
            kmeans_n_init=plan.kmeans_n_init,
        )
    agg, agg_inputs = aggregate_scores(values)
    return {
        "metrics": values,
        "groups": {m: group_of(m) for m in values},
        "aggregate": agg,
        "aggregate_inputs": agg_inputs,
        "timings": timings,
    }


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
    kmeans_n_init: int = 1,
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
        Key of ``adata.obsm`` to score (any numeric dtype; scored as float32).
    batch_key, label_key
        Columns of ``adata.obs``.
    metrics
        Metric names (see above); ``None`` is the ``Benchmarker`` default set plus
        ``silhouette_batch``.
    pre_integrated
        Unintegrated reference for ``pcr_comparison``: an ``.obsm`` key, an array,
        or ``None`` to compute :func:`~diffbio_sc.tl.pca_baseline` from the counts
        in ``.X`` / ``layer`` (50 PCs of 2,000 log-normalised HVGs).
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
        Threads of the neighbour search (``-1``: all cores).
    chunk_size
        Rows per chunk of the silhouette distance computation.
    kmeans_n_init
        KMeans starts (k-means++ initialisations, seeded from ``seed``) behind
        ``kmeans_nmi`` / ``kmeans_ari``; the run with the lowest inertia is kept.
        ``1`` (default) is scib-metrics' ``Benchmarker`` (one start), whose KMeans
        terms can move by 0.4 in ARI with the seed alone on a fixed embedding;
        ``10`` is the usual k-means practice (scikit-learn's classic default) and
        costs about ``kmeans_n_init`` times the KMeans step. An integer >= 1.

    Returns
    -------
    dict
        ``'metrics'`` (name -> value), ``'groups'`` (name -> ``'bio'``/``'batch'``),
        ``'aggregate'`` (``bio_conservation``, ``batch_correction``, ``total`` =
        0.6 bio + 0.4 batch, ``avg_bio``, ``avg_batch``; see
        :func:`~diffbio_sc.tl._scoring.aggregate_scores`), ``'aggregate_inputs'``,
        ``'timings'`` (seconds per step), ``'params'`` (keys, metrics, neighbours,
        seed, reference) and ``'scib_metrics_version'``. Nothing is written to
        ``adata``.
    """
    check_adata(adata, check_var_names=False)
    plan = plan_integration(
        adata,
        batch_key,
        label_key,
        metrics=metrics,
        knn_method=knn_method,
        seed=seed,
        n_jobs=n_jobs,
        chunk_size=chunk_size,
        kmeans_n_init=kmeans_n_init,
    )
    X = get_rep(adata, use_rep)
    if neighbors is not None and plan.n_neighbors:
        check_neighbors(neighbors, X.shape[0], plan.n_neighbors)
    pcr_pre, pre_source = None, None
    if "pcr_comparison" in plan.metrics:
        X_pre = check_pre_integrated(adata, pre_integrated)
        pre_source = describe_pre_integrated(pre_integrated)
        if X_pre is None:
            from .._baselines import pca_baseline

            X_pre = pca_baseline(adata, layer=layer, seed=plan.seed)
    with timed(f"scoring integration of {use_rep!r} with scib-metrics"):
        if "pcr_comparison" in plan.metrics:
            pcr_pre = pcr_score(X_pre, plan.batch)
        result = run_integration(X, plan, pcr_pre=pcr_pre, neighbors=neighbors)
    result["params"] = {
        "use_rep": use_rep,
        **plan.params(),
        "pre_integrated": pre_source,
        "pcr_pre": pcr_pre,
    }
    result["scib_metrics_version"] = scib_version()
    return result
