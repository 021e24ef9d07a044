"""Benchmark several embeddings against baselines, and guard against regressions.

* :func:`benchmark` scores ``.obsm`` embeddings plus baselines computed on the
  fly (unintegrated PCA, Harmony) with the annotation probes and the
  scib-metrics integration metrics, returns a tidy table and stores a report in
  ``.uns['dfm']['benchmarks'][name]``.
* :func:`save_baseline` / :func:`compare_to_baseline` keep a JSON baseline of the
  scores and flag metrics that got worse: a promotion review that fails closed.

Every metric is "higher is better".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys, _uns
from .._logging import logger, timed
from .._validate import DfmInputError, check_adata, check_obs_key
from . import _scoring

#: Baselines that :func:`benchmark` can compute, and their embedding names.
BASELINE_KEYS = {"pca": _keys.PCA_BASELINE_KEY, "harmony": _keys.HARMONY_BASELINE_KEY}
#: Tasks of the foundation-model evaluations that :func:`benchmark` does not run.
DEFERRED_TASKS = {
    "grn_transfer": "gene regulatory network inference from model attention or "
    "gene embeddings; needs gene-level outputs and a reference network",
    "perturbation_prediction": "in-silico perturbation response; needs perturbation "
    "data and a model that predicts expression",
    "gene_function_prediction": "gene-level classification (dosage sensitivity, "
    "bivalent promoters); needs gene embeddings and curated labels",
}
#: Column order of the tidy results table.
RESULT_COLUMNS = ("embedding", "metric", "group", "value", "sd")
_BASELINE_FORMAT = "diffbio_sc.benchmark_baseline"
_BASELINE_FORMAT_VERSION = 1


def _versions(extra: Sequence[str] = ()) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__

    out = {"diffbio_sc": __version__}
    for pkg in ("scib-metrics", "scanpy", "anndata", "scikit-learn", "numpy", "jax", *extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - depends on the environment
            out[pkg] = "not installed"
    return out


def _check_baselines(baselines) -> list[str]:
    if baselines is None:
        return []
    if isinstance(baselines, str):
        baselines = [baselines]
    out = list(dict.fromkeys(baselines))
    bad = [b for b in out if b not in BASELINE_KEYS]
    if bad:
        raise DfmInputError(f"Unknown baseline(s) {bad}; choose from {list(BASELINE_KEYS)}.")
    if "harmony" in out:
        try:
            import harmonypy  # noqa: F401
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "baselines=('harmony',) needs harmonypy, which is not installed: "
                "pip install diffbio_sc[harmony]"
            ) from err
    return out


def _baseline_targets(baseline_key_added, baselines: list[str], use_reps: list[str]) -> dict:
    """Map baseline -> ``.obsm`` key to write (empty when nothing is written)."""
    if baseline_key_added is False or baseline_key_added is None:
        return {}
    if baseline_key_added is True:
        targets = {b: BASELINE_KEYS[b] for b in baselines}
    elif isinstance(baseline_key_added, Mapping):
        unknown = [b for b in baseline_key_added if b not in baselines]
        if unknown:
            raise DfmInputError(
                f"baseline_key_added names baselines {unknown} that are not computed; "
                f"baselines={baselines}."
            )
        targets = {str(b): str(k) for b, k in baseline_key_added.items()}
    else:
        raise TypeError(
            "baseline_key_added must be False, True or a mapping baseline -> .obsm key, "
            f"got {type(baseline_key_added).__name__}."
        )
    clash = [k for k in targets.values() if k in use_reps]
    if clash:
        raise DfmInputError(
            f"baseline_key_added would overwrite {clash}, which are scored as use_reps; "
            "choose other keys."
        )
    return targets


def _embedding_sources(adata, keys: Sequence[str]) -> dict[str, dict]:
    emb = adata.uns.get(_keys.UNS_KEY, {}).get(_keys.UNS_EMBEDDINGS, {})
    out = {}
    for k in keys:
        meta = emb.get(k) if isinstance(emb, Mapping) else None
        if isinstance(meta, Mapping):
            out[k] = {
                f: str(meta[f])
                for f in ("source", "model_family", "adapter_mode", "artifact_id")
                if f in meta
            }
    return out


def benchmark(
    adata,
    use_reps: str | Sequence[str],
    batch_key: str,
    label_key: str,
    *,
    baselines: Sequence[str] | None = ("pca",),
    name: str = "default",
    annotation: bool = True,
    integration: bool = True,
    seed: int = 0,
    layer: str | None = None,
    metrics: Sequence[str] | None = None,
    annotation_methods: str | Sequence[str] = ("knn", "logreg"),
    n_splits: int = 5,
    probe_neighbors: int = 15,
    pre_integrated: str | np.ndarray | None = None,
    knn_method: str = "auto",
    n_jobs: int = 1,
    n_comps: int = 50,
    n_top_genes: int = 2000,
    baseline_key_added: bool | Mapping[str, str] = False,
) -> pd.DataFrame:
    """Score embeddings and baselines for cell-type annotation and batch integration.

    Each embedding in ``use_reps`` and each baseline is scored with
    :func:`~diffbio_sc.tl.score_annotation` (kNN and logistic-regression probes,
    seeded stratified k-fold) and :func:`~diffbio_sc.tl.score_integration`
    (scib-metrics). Baselines are computed from the counts in ``.X`` / ``layer``:

    * ``'pca'``: the unintegrated PCA of log-normalised highly variable genes
      (:func:`~diffbio_sc.tl._baselines.pca_baseline`), named ``X_pca_baseline``;
    * ``'harmony'``: Harmony on that PCA (needs ``pip install diffbio_sc[harmony]``),
      named ``X_harmony_baseline``.

    The unintegrated PCA is also the reference of ``pcr_comparison`` unless
    ``pre_integrated`` names another; it is computed once and shared, and its own
    ``pcr_comparison`` is 0 by construction. Shared work is done once: label
    checks, the reference PCR and the fold split.

    Parameters
    ----------
    adata
        AnnData with embeddings in ``.obsm``, counts in ``.X`` or ``layer`` (needed
        for the baselines and the computed PCR reference), and ``batch_key`` /
        ``label_key`` columns in ``.obs``.
    use_reps
        ``.obsm`` key or keys to score (may be empty when baselines are given).
    batch_key, label_key
        Columns of ``adata.obs``.
    baselines
        Any of ``'pca'`` and ``'harmony'``; ``()`` for none.
    name
        Report name under ``.uns['dfm']['benchmarks']`` (replaced if present).
    annotation, integration
        Run the annotation probes / the integration metrics.
    seed
        Seed of every random step: folds, probes, KMeans, Leiden, neighbour
        search, PCA and Harmony.
    layer
        Layer holding the raw counts; ``None`` uses ``.X``.
    metrics
        Integration metrics (see :func:`~diffbio_sc.tl.score_integration`);
        ``None`` for the default set.
    annotation_methods
        ``'knn'``, ``'logreg'`` or both.
    n_splits
        Cross-validation folds of the probes.
    probe_neighbors
        Neighbours of the kNN probe.
    pre_integrated
        Unintegrated reference for ``pcr_comparison``: ``.obsm`` key, array, or
        ``None`` for the PCA baseline.
    knn_method
        Neighbour search of the graph metrics (``'auto'``, ``'exact'``,
        ``'pynndescent'``).
    n_jobs
        Threads of the neighbour search.
    n_comps, n_top_genes
        PCA components and highly variable genes of the baselines.
    baseline_key_added
        ``False`` (default): computed baselines are not written to ``adata``.
        ``True``: write them to ``.obsm['X_pca_baseline']`` /
        ``.obsm['X_harmony_baseline']``; a mapping such as
        ``{'pca': 'X_pca_hvg'}`` chooses the keys. Existing keys are overwritten.

    Returns
    -------
    pandas.DataFrame
        Tidy scores, one row per embedding x metric, with columns ``embedding``,
        ``metric``, ``group`` (``'annotation'``, ``'bio'``, ``'batch'`` or
        ``'aggregate'``), ``value`` and ``sd`` (standard deviation over folds for
        annotation scores, NaN otherwise). Annotation metrics are named
        ``<probe>_<score>``, e.g. ``knn_macro_f1``; aggregates are
        ``bio_conservation``, ``batch_correction``, ``total``, ``avg_bio`` and
        ``avg_batch``. Higher is better for every metric.

        Writes ``adata.uns['dfm']['benchmarks'][name]``: ``created_by``,
        ``inputs`` (embeddings, baselines, keys, layer, cell / label / batch
        counts, embedding sources), ``params``, ``seeds``, ``versions`` (including
        scib-metrics, whose defaults changed across versions),
        ``scores`` (the table as columns), ``aggregate_inputs``,
        ``excluded_classes``, ``timings``, ``not_evaluated`` and ``deferred``
        (tasks such as GRN transfer that are not evaluated here), and
        ``higher_is_better``. With ``baseline_key_added``, also the baseline
        ``.obsm`` keys.
    """
    # ---- validate everything first --------------------------------------------
    check_adata(adata, check_var_names=False)
    if not isinstance(name, str) or not name or "/" in name:
        raise DfmInputError(f"name must be a non-empty string without '/', got {name!r}.")
    if not (annotation or integration):
        raise DfmInputError("Nothing to do: annotation and integration are both False.")
    reps = [use_reps] if isinstance(use_reps, str) else list(use_reps or [])
    if len(set(reps)) != len(reps):
        raise DfmInputError(f"use_reps has duplicates: {reps}.")
    baselines = _check_baselines(baselines)
    if not reps and not baselines:
        raise DfmInputError("Nothing to score: pass use_reps and/or baselines.")
    clash = [BASELINE_KEYS[b] for b in baselines if BASELINE_KEYS[b] in reps]
    if clash:
        raise DfmInputError(
            f"use_reps {clash} share a name with a computed baseline; drop the baseline "
            "from baselines= or rename the .obsm key."
        )
    arrays = {k: np.ascontiguousarray(_scoring.get_rep(adata, k), dtype=np.float32) for k in reps}
    labels_col = check_obs_key(adata, label_key)
    batch_col = check_obs_key(adata, batch_key)
    targets = _baseline_targets(baseline_key_added, baselines, reps)
    methods = _scoring._check_methods(annotation_methods) if annotation else []
    n_splits = _scoring.check_n_splits(n_splits)
    probe_neighbors = _scoring.check_probe_neighbors(probe_neighbors)
    metrics = _scoring._check_metrics(metrics) if integration else []
    if knn_method not in _scoring._KNN_METHODS:
        raise DfmInputError(
            f"Unknown knn_method {knn_method!r}; use one of {list(_scoring._KNN_METHODS)}."
        )
    if integration:
        _scoring.check_labels_batches(adata, labels_col, batch_col, label_key, batch_key, metrics)
    if "harmony" in baselines and batch_col.nunique() < 2:
        raise DfmInputError(
            f"adata.obs[{batch_key!r}] has a single batch; drop 'harmony' from baselines."
        )
    X_pre, pre_source = None, None
    if "pcr_comparison" in metrics and pre_integrated is not None:
        X_pre, pre_source = _scoring.resolve_pre_integrated(
            adata, pre_integrated, layer=layer, seed=seed
        )
    labels = _scoring._codes(labels_col)
    batch = _scoring._codes(batch_col)
    if annotation:
        ann_mask, ann_y, excluded, _ = _scoring.prepare_annotation_labels(
            labels_col.astype(str).to_numpy(), n_splits, label_key
        )
    else:
        excluded = np.array([], dtype=str)

    # ---- compute (nothing is written until every score exists) ---------------
    with timed(f"benchmarking {len(reps)} embedding(s) and {len(baselines)} baseline(s)") as info:
        need_pca = (
            "pca" in baselines
            or "harmony" in baselines
            or ("pcr_comparison" in metrics and pre_integrated is None)
        )
        pca = None
        if need_pca:
            from ._baselines import pca_baseline

            pca = pca_baseline(
                adata, layer=layer, n_comps=n_comps, n_top_genes=n_top_genes, seed=seed
            )
        computed: dict[str, np.ndarray] = {}
        if "pca" in baselines:
            computed["pca"] = pca
        if "harmony" in baselines:
            from ._baselines import harmony_baseline

            computed["harmony"] = harmony_baseline(adata, batch_key, pca=pca, seed=seed)
        for b, X in computed.items():
            arrays[BASELINE_KEYS[b]] = X
        pcr_pre = None
        if "pcr_comparison" in metrics:
            if X_pre is None:
                X_pre, pre_source = pca, "pca_baseline (computed)"
            pcr_pre = _scoring.pcr_score(X_pre, batch)

        rows: list[tuple] = []
        timings: dict[str, dict[str, float]] = {}
        agg_inputs: dict[str, list[str]] = {}
        for emb, X in arrays.items():
            if annotation:
                folds = _scoring._annotation_kernel(
                    X[ann_mask].astype(np.float64),
                    ann_y,
                    methods=methods,
                    n_splits=n_splits,
                    seed=int(seed),
                    n_neighbors=int(probe_neighbors),
                    max_iter=1000,
                    C=1.0,
                )
                for m, d in folds.items():
                    for k, v in d.items():
                        rows.append((emb, f"{m}_{k}", "annotation", v.mean(), v.std(ddof=1)))
            if integration:
                values, tms = _scoring._integration_kernel(
                    X,
                    labels,
                    batch,
                    metrics=metrics,
                    pcr_pre=pcr_pre,
                    seed=int(seed),
                    knn_method=knn_method,
                    n_jobs=int(n_jobs),
                )
                timings[emb] = tms
                for m in metrics:
                    rows.append((emb, m, _scoring._group_of(m), values[m], np.nan))
                agg, agg_inputs = _scoring.aggregate_scores(values)
                for m, v in agg.items():
                    rows.append((emb, m, "aggregate", v, np.nan))
        df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        df["value"] = df["value"].astype(float)
        df["sd"] = df["sd"].astype(float)

        not_evaluated = {}
        if not annotation:
            not_evaluated["annotation"] = "annotation=False"
        if not integration:
            not_evaluated["integration"] = "integration=False"
        extra_versions = ("harmonypy",) if "harmony" in baselines else ()
        report: dict[str, Any] = {
            "created_by": _uns.provenance("tl.benchmark"),
            "inputs": {
                "use_reps": reps,
                "baselines": [BASELINE_KEYS[b] for b in baselines],
                "batch_key": batch_key,
                "label_key": label_key,
                "layer": layer,
                "n_cells": int(adata.n_obs),
                "n_labels": int(labels_col.nunique()),
                "n_batches": int(batch_col.nunique()),
                "embedding_sources": _embedding_sources(adata, reps),
                "pre_integrated": pre_source,
            },
            "params": {
                "annotation": bool(annotation),
                "integration": bool(integration),
                "metrics": metrics,
                "annotation_methods": methods,
                "n_splits": n_splits,
                "probe_neighbors": int(probe_neighbors),
                "knn_method": knn_method,
                "n_neighbors": _scoring._max_neighbors(metrics) if integration else 0,
                "n_comps": int(n_comps),
                "n_top_genes": int(n_top_genes),
                "pcr_pre": pcr_pre,
                "aggregate": "total = 0.6 * bio_conservation + 0.4 * batch_correction "
                "(scib-metrics Benchmarker; NaN metrics skipped in the group means); "
                "avg_bio = mean(NMI, ARI, silhouette_label); "
                "avg_batch = mean(silhouette_batch, graph_connectivity)",
            },
            "seeds": {"seed": int(seed)},
            "versions": _versions(extra_versions),
            "scores": {c: df[c].to_numpy() for c in RESULT_COLUMNS},
            "aggregate_inputs": agg_inputs,
            "excluded_classes": [str(c) for c in excluded],
            "timings": timings,
            "not_evaluated": not_evaluated,
            "deferred": DEFERRED_TASKS,
            "higher_is_better": True,
        }
        # ---- write last --------------------------------------------------------
        for b, key in targets.items():
            adata.obsm[key] = computed[b]
        if targets:
            report["inputs"]["baseline_obsm_keys"] = targets
        _uns.set_entry(adata, _keys.UNS_BENCHMARKS, name, report)
        info["added"] = [f"uns['dfm']['benchmarks'][{name!r}]"] + [
            f"obsm[{k!r}]" for k in targets.values()
        ]
    return df


# --------------------------------------------------------------------------
# Results access
# --------------------------------------------------------------------------


def results_frame(results, *, name: str = "default") -> pd.DataFrame:
    """Return the tidy results table from a DataFrame, a report dict or an AnnData.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`benchmark`, a report (``.uns['dfm']
        ['benchmarks'][name]``, also after an ``.h5ad`` round trip), or an AnnData
        holding one.
    name
        Report name when ``results`` is an AnnData.

    Returns
    -------
    pandas.DataFrame with the columns ``embedding``, ``metric``, ``group``,
    ``value``, ``sd``.
    """
    from anndata import AnnData

    if isinstance(results, AnnData):
        reports = results.uns.get(_keys.UNS_KEY, {}).get(_keys.UNS_BENCHMARKS, {})
        if name not in reports:
            raise DfmInputError(
                f"No benchmark report {name!r} in .uns['dfm']['benchmarks']; available: "
                f"{list(reports)}. Run dfm.tl.benchmark(adata, ..., name={name!r}) first."
            )
        results = reports[name]
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
    df["value"] = df["value"].astype(float)
    df["sd"] = df["sd"].astype(float)
    return df[list(RESULT_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------
# Regression guard
# --------------------------------------------------------------------------


def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def save_baseline(results, path: str | os.PathLike, *, name: str = "default") -> Path:
    """Write benchmark scores to a JSON baseline for :func:`compare_to_baseline`.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`benchmark`, a report dict, or an AnnData
        holding the report ``name``.
    path
        JSON file to write (parent folders are created; an existing file is replaced).
    name
        Report name when ``results`` is an AnnData.

    Returns
    -------
    pathlib.Path
        The path written. The file holds ``format``, ``format_version``,
        ``higher_is_better`` (true), ``created_by``, ``versions`` (when the
        report has them) and ``scores`` (a list of ``{embedding, metric, group,
        value, sd}``; NaN is written as null).
    """
    from anndata import AnnData

    df = results_frame(results, name=name)
    versions = None
    report = results
    if isinstance(results, AnnData):
        report = results.uns[_keys.UNS_KEY][_keys.UNS_BENCHMARKS][name]
    if isinstance(report, Mapping) and "versions" in report:
        versions = {str(k): str(v) for k, v in report["versions"].items()}
    payload = {
        "format": _BASELINE_FORMAT,
        "format_version": _BASELINE_FORMAT_VERSION,
        "higher_is_better": True,
        "created_by": _uns.provenance("tl.save_baseline"),
        "versions": versions,
        "scores": [
            {
                "embedding": r.embedding,
                "metric": r.metric,
                "group": r.group,
                "value": _json_float(r.value),
                "sd": _json_float(r.sd),
            }
            for r in df.itertuples(index=False)
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    logger.info("wrote benchmark baseline %s (%d scores)", path, len(df))
    return path


def _read_baseline(path: Path) -> pd.DataFrame:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DfmInputError(f"Baseline {path} is not valid JSON ({err}).") from err
    if not isinstance(payload, dict) or payload.get("format") != _BASELINE_FORMAT:
        raise DfmInputError(
            f"{path} is not a diffbio_sc benchmark baseline (format "
            f"{payload.get('format') if isinstance(payload, dict) else None!r}); write one "
            "with dfm.tl.save_baseline."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > _BASELINE_FORMAT_VERSION:
        raise DfmInputError(
            f"Baseline {path} has format_version {version!r}; this diffbio_sc reads up to "
            f"{_BASELINE_FORMAT_VERSION}. Upgrade diffbio_sc or rewrite the baseline."
        )
    rows = payload.get("scores") or []
    if not rows:
        # An empty baseline would pass every review: fail closed instead.
        raise DfmInputError(
            f"Baseline {path} holds no scores, so nothing can be compared; rewrite it with "
            "dfm.tl.save_baseline from a non-empty benchmark."
        )
    df = pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])
    df["value"] = pd.to_numeric(df["value"]).astype(float)
    _check_unique(df, f"Baseline {path}")
    return df


def _check_unique(df: pd.DataFrame, what: str) -> None:
    dup = df[df.duplicated(["embedding", "metric"])]
    if not dup.empty:
        pairs = ", ".join(
            f"{e}/{m}" for e, m in dup[["embedding", "metric"]].head(5).itertuples(index=False)
        )
        raise DfmInputError(
            f"{what} has several scores for the same embedding and metric ({pairs}); "
            "compare one benchmark (or results with distinct embedding names) at a time."
        )


def compare_to_baseline(
    results,
    baseline_path: str | os.PathLike,
    *,
    tolerance: float = 0.02,
    bootstrap: bool = False,
    name: str = "default",
    raise_on_regression: bool = False,
) -> pd.DataFrame:
    """Compare benchmark scores with a saved baseline and flag what got worse.

    Every metric is "higher is better". A metric is ``'worse'`` when
    ``current < baseline - tolerance`` (absolute difference; all scores lie in
    [0, 1]), ``'improved'`` when ``current > baseline + tolerance``, ``'ok'``
    otherwise. A metric of the baseline that is absent (or NaN) now is
    ``'missing'``; one that is new, or NaN in the baseline, is ``'new'``. The
    review passes only with no ``'worse'`` and no ``'missing'`` metric.

    The review fails closed: without a baseline file it raises
    :class:`FileNotFoundError`, unless ``bootstrap=True`` is passed explicitly, in
    which case the current scores are written as the baseline, every row is
    ``'bootstrapped'`` and the result says so (``attrs['bootstrapped']``). A
    baseline with no scores, of a newer format, or with several scores for one
    embedding and metric is an error rather than a pass.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`benchmark`, a report dict, or an AnnData
        holding the report ``name``.
    baseline_path
        JSON file written by :func:`save_baseline`.
    tolerance
        Largest allowed drop of a metric (absolute, >= 0).
    bootstrap
        Write the baseline when none exists instead of failing.
    name
        Report name when ``results`` is an AnnData.
    raise_on_regression
        Raise a :class:`BaselineRegressionError` when the review fails instead of
        returning the table.

    Returns
    -------
    pandas.DataFrame
        One row per embedding x metric with ``embedding``, ``metric``, ``group``,
        ``baseline``, ``current``, ``delta`` (current - baseline) and ``status``.
        ``attrs`` holds ``passed`` (bool), ``reason`` (str), ``bootstrapped``
        (bool), ``tolerance`` and ``baseline_path``.
    """
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not np.isfinite(tolerance)
        or tolerance < 0
    ):
        raise DfmInputError(f"tolerance must be a finite number >= 0, got {tolerance!r}.")
    current = results_frame(results, name=name)
    _check_unique(current, "The results")
    if current.empty:
        raise DfmInputError("The results hold no scores; nothing to compare.")
    path = Path(baseline_path)
    if not path.exists():
        if not bootstrap:
            raise FileNotFoundError(
                f"No benchmark baseline at {path}: the promotion review fails closed. Pass "
                "bootstrap=True to write the current scores as the first baseline, or point "
                "baseline_path at an existing one."
            )
        save_baseline(results, path, name=name)
        out = current.rename(columns={"value": "current"})[
            ["embedding", "metric", "group", "current"]
        ]
        out.insert(3, "baseline", out["current"])
        out["delta"] = 0.0
        out["status"] = "bootstrapped"
        reason = f"no baseline existed; bootstrapped {path} from the current scores"
        logger.warning("compare_to_baseline: %s", reason)
        out.attrs.update(
            passed=True,
            reason=reason,
            bootstrapped=True,
            tolerance=float(tolerance),
            baseline_path=str(path),
        )
        return out
    base = _read_baseline(path)
    merged = base[["embedding", "metric", "group", "value"]].merge(
        current[["embedding", "metric", "group", "value"]],
        on=["embedding", "metric"],
        how="outer",
        suffixes=("_base", "_cur"),
        indicator=True,
    )
    merged["group"] = merged["group_cur"].fillna(merged["group_base"])
    out = pd.DataFrame(
        {
            "embedding": merged["embedding"],
            "metric": merged["metric"],
            "group": merged["group"],
            "baseline": merged["value_base"].astype(float),
            "current": merged["value_cur"].astype(float),
        }
    )
    out["delta"] = out["current"] - out["baseline"]
    b_ok = np.isfinite(out["baseline"].to_numpy())
    c_ok = np.isfinite(out["current"].to_numpy())
    delta = out["delta"].to_numpy()
    compared = np.where(delta < -tolerance, "worse", np.where(delta > tolerance, "improved", "ok"))
    # A baseline score that is gone or NaN now is a failure (fail closed); a score
    # that was NaN in the baseline and is NaN (or absent) now has nothing to compare.
    status = np.select(
        [b_ok & c_ok, b_ok & ~c_ok, ~b_ok & c_ok],
        [compared, "missing", "new"],
        default="ok",
    )
    out["status"] = status
    out = out.sort_values(["embedding", "metric"], kind="stable").reset_index(drop=True)
    worse = out[out["status"] == "worse"]
    missing = out[out["status"] == "missing"]
    passed = worse.empty and missing.empty
    if passed:
        reason = f"no metric dropped by more than {tolerance} against {path}"
    else:
        parts = []
        if not worse.empty:
            parts.append(
                f"{len(worse)} metric(s) worse by more than {tolerance}: "
                + ", ".join(
                    f"{e}/{m} {b:.3f}->{c:.3f}"
                    for e, m, b, c in worse[
                        ["embedding", "metric", "baseline", "current"]
                    ].itertuples(index=False)
                )
            )
        if not missing.empty:
            parts.append(
                f"{len(missing)} baseline metric(s) missing or NaN now: "
                + ", ".join(
                    f"{e}/{m}" for e, m in missing[["embedding", "metric"]].itertuples(index=False)
                )
            )
        reason = "; ".join(parts)
    out.attrs.update(
        passed=bool(passed),
        reason=reason,
        bootstrapped=False,
        tolerance=float(tolerance),
        baseline_path=str(path),
    )
    if not passed:
        logger.warning("compare_to_baseline failed: %s", reason)
        if raise_on_regression:
            raise BaselineRegressionError(reason)
    return out


class BaselineRegressionError(ValueError):
    """Raised by :func:`compare_to_baseline` with ``raise_on_regression=True``."""
