"""Metric names and the benchmark result schema, shared by ``tl`` and ``pl``.

``tl`` writes results and ``pl`` draws them; neither imports the other's
private modules.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import _keys
from ._validate import DfmInputError

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
#: Aggregate scores, in display order.
AGGREGATES = ("bio_conservation", "batch_correction", "total", "avg_bio", "avg_batch")
#: Scores of the annotation probes and the probes themselves.
ANNOTATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
ANNOTATION_METHODS = ("knn", "logreg")
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
#: What each aggregate is, in words (figure footnotes and reports).
AGGREGATE_FORMULAS = {
    "bio_conservation": "mean of the bio-conservation metrics",
    "batch_correction": "mean of the batch-correction metrics (without silhouette batch)",
    "total": "0.6 * bio conservation + 0.4 * batch correction",
    "avg_bio": "mean(NMI, ARI, silhouette label)",
    "avg_batch": "mean(silhouette batch, graph connectivity)",
}
_PROBE_NAMES = {"knn": "kNN", "logreg": "LogReg"}
_PROBE_SCORES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "bal. accuracy",
    "macro_f1": "macro F1",
}

#: Groups of the results table, in display order.
GROUPS = ("annotation", "bio", "batch", "aggregate")
#: Column order of the tidy results table.
RESULT_COLUMNS = ("embedding", "metric", "group", "value", "sd")


def group_of(metric: str) -> str:
    """Group of an integration metric: ``'bio'`` or ``'batch'``."""
    return "bio" if metric in BIO_METRICS else "batch"


def metric_label(metric: str) -> str:
    """Display name of a metric (``knn_macro_f1`` -> ``kNN macro F1``)."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    for probe, nice in _PROBE_NAMES.items():
        if metric.startswith(probe + "_"):
            rest = metric[len(probe) + 1 :]
            return f"{nice} {_PROBE_SCORES.get(rest, rest)}"
    return metric


def results_frame(results, *, name: str = "default") -> pd.DataFrame:
    """Return the tidy results table from a DataFrame, a report dict or an AnnData.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`diffbio_sc.tl.benchmark`, a report
        (``.uns['dfm']['benchmarks'][name]``, also after an ``.h5ad`` round trip),
        or an AnnData holding one.
    name
        Report name when ``results`` is an AnnData.

    Returns
    -------
    pandas.DataFrame
        Columns ``embedding``, ``metric``, ``group``, ``value``, ``sd``.
    """
    from anndata import AnnData

    if isinstance(results, AnnData):
        results = report_of(results, name)
    if isinstance(results, pd.DataFrame):
        df = results
    elif isinstance(results, Mapping) and "scores" in results:
        scores = results["scores"]
        df = pd.DataFrame({c: np.asarray(scores[c]) for c in RESULT_COLUMNS if c in scores})
    else:
        raise TypeError(
            "Expected the DataFrame from dfm.tl.benchmark, a benchmark report dict or an "
            f"AnnData, got {type(results).__name__}."
        )
    missing = [c for c in ("embedding", "metric", "value") if c not in df.columns]
    if missing:
        raise DfmInputError(f"The results table lacks the columns {missing}.")
    df = df.copy()
    for c in ("embedding", "metric"):
        df[c] = df[c].astype(str)
    if "group" not in df.columns:
        df["group"] = ""
    df["group"] = df["group"].astype(str)
    if "sd" not in df.columns:
        df["sd"] = np.nan
    try:
        df["value"] = df["value"].astype(float)
        df["sd"] = df["sd"].astype(float)
    except (TypeError, ValueError) as err:
        raise DfmInputError(
            f"The results table's value/sd columns must be numbers ({err})."
        ) from None
    return df[list(RESULT_COLUMNS)].reset_index(drop=True)


def report_of(adata, name: str) -> Mapping:
    """Return the benchmark report ``name`` stored in ``adata.uns['dfm']['benchmarks']``."""
    reports = adata.uns.get(_keys.UNS_KEY, {}).get(_keys.UNS_BENCHMARKS, {})
    if name not in reports:
        raise DfmInputError(
            f"No benchmark report {name!r} in .uns['dfm']['benchmarks']; available: "
            f"{list(reports)}. Run dfm.tl.benchmark(adata, ..., name={name!r}) first."
        )
    return reports[name]
