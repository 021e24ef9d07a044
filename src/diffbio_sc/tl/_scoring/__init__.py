"""Scores of embeddings: annotation probes, scib-metrics integration, benchmark, regression guard.

* ``_kernels``: array kernels (probes, the metric table, aggregates), no AnnData;
* ``_checks``: argument checks, the one ``use_rep`` extraction, label preparation;
* ``_annotation`` / ``_integration``: :func:`score_annotation`,
  :func:`score_integration` (a plan built once, then run per embedding);
* ``_benchmark``: :func:`benchmark`, several embeddings and baselines with the same plans;
* ``_guard``: :func:`save_baseline` / :func:`compare_to_baseline`.
* ``_verdict``: the verdict of a results table (best embedding per aggregate, margin
  over PCA) and its text report, shared by the CLI and ``dfm.pl.benchmark``.

Metric names and the result schema live in :mod:`diffbio_sc._schema` (shared with ``pl``).
"""

from __future__ import annotations

from ..._schema import (
    BATCH_METRICS,
    BENCHMARKER_METRICS,
    BIO_METRICS,
    DEFAULT_METRICS,
    METRIC_NAMES,
    RESULT_COLUMNS,
    results_frame,
)
from ...ops._scoring import aggregate_scores, compute_neighbors, pcr_score
from ._annotation import score_annotation
from ._benchmark import BASELINE_KEYS, DEFERRED_TASKS, benchmark
from ._guard import BaselineRegressionError, compare_to_baseline, save_baseline
from ._integration import score_integration

__all__ = [
    "BASELINE_KEYS",
    "BATCH_METRICS",
    "BENCHMARKER_METRICS",
    "BIO_METRICS",
    "DEFAULT_METRICS",
    "DEFERRED_TASKS",
    "METRIC_NAMES",
    "RESULT_COLUMNS",
    "BaselineRegressionError",
    "aggregate_scores",
    "benchmark",
    "compare_to_baseline",
    "compute_neighbors",
    "pcr_score",
    "results_frame",
    "save_baseline",
    "score_annotation",
    "score_integration",
]
