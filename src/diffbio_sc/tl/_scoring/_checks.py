"""Argument checks and input extraction shared by the scores and the benchmark.

One ``knn_method`` check, one metric-list check, one ``use_rep`` extraction
(:func:`get_rep`), label preparation, and the unintegrated reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..._schema import ANNOTATION_METHODS, BATCH_METRICS, BIO_METRICS, DEFAULT_METRICS
from ..._validate import (
    DfmInputError,
    check_int,
    check_obsm_rep,
)
from ...ops._scoring import NEIGHBORS_NEEDED, max_neighbors


def scib_version() -> str:
    """Return the installed scib-metrics version."""
    from importlib.metadata import version

    return version("scib-metrics")


def check_n_jobs(n_jobs) -> int:
    """Return ``n_jobs`` if it is ``-1`` (all cores) or an integer >= 1."""
    n_jobs = check_int("n_jobs", n_jobs, minimum=-1)
    if n_jobs == 0:
        raise DfmInputError("n_jobs must be -1 (all cores) or an integer >= 1, got 0.")
    return n_jobs


def check_n_splits(n_splits) -> int:
    """Return ``n_splits`` as an int >= 2 or raise."""
    return check_int("n_splits", n_splits, minimum=2)


def check_probe_neighbors(n_neighbors, name: str = "n_neighbors") -> int:
    """Return the kNN probe's neighbours as an int >= 1 or raise."""
    return check_int(name, n_neighbors, minimum=1)


def _names(value, what: str) -> list:
    """Return a name or a sequence of names as a list (strings only)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, np.ndarray, pd.Index)) or not all(
        isinstance(v, str) for v in items
    ):
        raise TypeError(f"{what} must be a string or a list of strings, got {value!r}.")
    return list(items)


def check_methods(method) -> list[str]:
    """Return the annotation probes as a list without repeats, or raise."""
    methods = _names(method, "method")
    if not methods:
        raise DfmInputError("method is empty; use 'knn', 'logreg' or ['knn', 'logreg'].")
    bad = [m for m in methods if m not in ANNOTATION_METHODS]
    if bad:
        raise DfmInputError(
            f"Unknown annotation method(s) {bad}; use 'knn', 'logreg' or ['knn', 'logreg']."
        )
    return list(dict.fromkeys(methods))


def check_metrics(metrics) -> list[str]:
    """Return the integration metrics in display order, or raise (``None``: the default set)."""
    metrics = list(DEFAULT_METRICS) if metrics is None else _names(metrics, "metrics")
    if not metrics:
        raise DfmInputError("metrics is empty; pass None for the default set.")
    order = list(BIO_METRICS) + list(BATCH_METRICS)
    bad = [m for m in metrics if m not in order]
    if bad:
        raise DfmInputError(f"Unknown metric(s) {bad}; choose from {order}.")
    if "bras" in metrics:
        import scib_metrics

        if not hasattr(scib_metrics, "bras"):
            raise ImportError(
                f"The 'bras' metric needs scib-metrics >= 0.5.6; {scib_version()} is "
                "installed. Upgrade it (pip install 'scib-metrics>=0.5.6,<0.6') or pass "
                "metrics= without 'bras'."
            )
    return sorted(dict.fromkeys(metrics), key=order.index)


def get_rep(adata, use_rep: str, dtype=np.float32) -> np.ndarray:
    """Return ``use_rep`` as a finite ``(n_cells, d)`` float array (the one extraction).

    ``'X'`` uses ``.X`` (read in chunks when the AnnData is backed); any numeric
    dtype (float16, integers) becomes ``dtype``; non-numeric or non-finite values
    raise :class:`DfmInputError` (via :func:`diffbio_sc._validate.check_obsm_rep`).
    """
    if not isinstance(use_rep, str):
        raise TypeError(f"use_rep must be an .obsm key (a string) or 'X', got {use_rep!r}.")
    rep = check_obsm_rep(adata, use_rep)
    check_magnitude(rep, repr(use_rep), adata.obs_names)
    return np.ascontiguousarray(rep, dtype=dtype)


def check_magnitude(X: np.ndarray, what: str, obs_names=None) -> None:
    """Raise if values are so large that the metrics' float32 distances would overflow.

    The probes and scib-metrics compute in float32: a value above about 3.4e38
    becomes infinite on conversion, and squared distances overflow long before
    that. Values beyond ``sqrt(float32 max / (4 d))`` (about 9e18 / sqrt(d)) are
    refused up front, instead of surfacing as scikit-learn's "Input contains NaN".
    """
    if X.size == 0:
        return
    limit = float(np.sqrt(np.finfo(np.float32).max / (4.0 * max(1, X.shape[1]))))
    with np.errstate(over="ignore", invalid="ignore"):
        peak = np.abs(X, dtype=np.float64).max(axis=1)
    bad = np.flatnonzero(~(peak <= limit))
    if bad.size:
        where = ""
        if obs_names is not None:
            names = [str(n) for n in obs_names[bad[:5]]]
            where = f", e.g. {names}" + (" ..." if bad.size > 5 else "")
        raise DfmInputError(
            f"{what} holds values up to {float(peak.max()):.3g} in {bad.size} cells{where}; "
            f"the scores compute distances in float32, which overflow beyond about "
            f"{limit:.2g} in {X.shape[1]} dimensions. An embedding is not expected to be "
            "this large: rescale it (e.g. divide by its standard deviation) or recompute it."
        )


def codes(col: pd.Series) -> np.ndarray:
    """Return the integer codes of a label or batch column (compared as text)."""
    return np.asarray(pd.Categorical(col.astype(str)).codes, dtype=np.int64)


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
            stacklevel=4,
        )
    mask = np.isin(labels, keep_classes)
    y = np.searchsorted(keep_classes, labels[mask])
    return mask, y, small, int(keep_classes.size)


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
    k = max_neighbors(metrics)
    if k and adata.n_obs <= k:
        raise DfmInputError(
            f"The graph metrics need {k} neighbours per cell but the AnnData has only "
            f"{adata.n_obs} cells; score at least {k + 1} cells or drop "
            f"{[m for m in metrics if NEIGHBORS_NEEDED.get(m, 0) >= adata.n_obs]}."
        )


def check_pre_integrated(adata, pre_integrated) -> np.ndarray | str | None:
    """Check the unintegrated reference (an ``.obsm`` key, an array or ``None``) up front."""
    if pre_integrated is None:
        return None
    if isinstance(pre_integrated, str):
        return get_rep(adata, pre_integrated)
    X_pre = np.asarray(pre_integrated)
    if X_pre.ndim != 2 or X_pre.shape[0] != adata.n_obs or X_pre.dtype.kind not in "iuf":
        raise DfmInputError(
            f"pre_integrated must be a numeric (n_cells={adata.n_obs}, n_dims) array, an "
            f".obsm key or None, got shape {X_pre.shape} of dtype {X_pre.dtype}."
        )
    if not np.isfinite(X_pre).all():
        raise DfmInputError("pre_integrated holds NaN or infinite values.")
    check_magnitude(X_pre, "pre_integrated", adata.obs_names)
    return np.ascontiguousarray(X_pre, dtype=np.float32)


def describe_pre_integrated(pre_integrated) -> str:
    """Describe how the reference was given, for the report."""
    if pre_integrated is None:
        return "pca_baseline (computed)"
    return f"obsm:{pre_integrated}" if isinstance(pre_integrated, str) else "array"


def check_seq(name: str, value: Sequence | str | None) -> list[str]:
    """Return a key or a list of keys as a list without duplicates (``None``: empty)."""
    items = [] if value is None else _names(value, name)
    if len(set(items)) != len(items):
        raise DfmInputError(f"{name} has duplicates: {items}.")
    return items
