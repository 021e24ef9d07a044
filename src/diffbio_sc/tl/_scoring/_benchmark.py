"""``benchmark``: several embeddings and baselines through the annotation and integration scores.

The flow is the single scorers' (:func:`plan_annotation` / :func:`run_annotation`,
:func:`plan_integration` / :func:`run_integration`): arguments are checked and
labels prepared once, then every embedding is scored with the same plan. The
report goes to ``.uns['dfm']['benchmarks'][name]`` last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd

from ... import _keys, _uns
from ..._logging import timed
from ..._schema import AGGREGATE_FORMULAS, RESULT_COLUMNS
from ..._validate import DfmInputError, check_adata, check_bool, check_int, check_key, check_obs_key
from ...ops._scoring import pcr_score
from ._annotation import plan_annotation, run_annotation
from ._checks import check_pre_integrated, check_seq, describe_pre_integrated, get_rep
from ._integration import plan_integration, run_integration

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


def _versions(extra: Sequence[str] = ()) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from ..._version import __version__

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
    out = list(dict.fromkeys(check_seq("baselines", baselines)))
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
        targets = {
            str(b): check_key(f"baseline_key_added[{b!r}]", k)
            for b, k in baseline_key_added.items()
        }
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
    kmeans_n_init: int = 1,
    n_comps: int = 50,
    n_top_genes: int = 2000,
    baseline_key_added: bool | Mapping[str, str] = False,
    dataset: str | None = None,
    progress_bar: bool | None = None,
) -> pd.DataFrame:
    """Score embeddings and baselines for cell-type annotation and batch integration.

    Each embedding in ``use_reps`` and each baseline is scored with
    :func:`~diffbio_sc.tl.score_annotation` (kNN and logistic-regression probes,
    seeded stratified k-fold) and :func:`~diffbio_sc.tl.score_integration`
    (scib-metrics). Baselines are computed from the counts in ``.X`` / ``layer``:

    * ``'pca'``: the unintegrated PCA of log-normalised highly variable genes
      (:func:`~diffbio_sc.tl.pca_baseline`), named ``X_pca_baseline``;
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
    kmeans_n_init
        KMeans starts behind ``kmeans_nmi`` / ``kmeans_ari``, the lowest-inertia
        one kept: ``1`` (default) as scib-metrics' ``Benchmarker``, ``10`` for
        scores that no longer hinge on one start (see
        :func:`~diffbio_sc.tl.score_integration`).
    n_comps, n_top_genes
        PCA components and highly variable genes of the baselines.
    baseline_key_added
        ``False`` (default): computed baselines are not written to ``adata``.
        ``True``: write them to ``.obsm['X_pca_baseline']`` /
        ``.obsm['X_harmony_baseline']``; a mapping such as
        ``{'pca': 'X_pca_hvg'}`` chooses the keys. Existing keys are overwritten.
    dataset
        Name of the dataset, recorded in the report and shown by
        :func:`diffbio_sc.pl.benchmark`.
    progress_bar
        Show a tqdm bar over the (embedding, score group) steps; ``None``
        follows ``dfm.settings.progress_bar``.

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
        ``.obsm`` keys. ``aggregate_inputs`` maps each embedding to the metrics
        behind each of its aggregates (NaN metrics differ between embeddings).

        A progress bar shows the embedding and score group being computed
        (``progress_bar``).
    """
    # ---- validate everything first --------------------------------------------
    check_adata(adata, check_var_names=False)
    if progress_bar is not None:
        check_bool("progress_bar", progress_bar)
    check_key("name", name)
    annotation = check_bool("annotation", annotation)
    integration = check_bool("integration", integration)
    if not (annotation or integration):
        raise DfmInputError("Nothing to do: annotation and integration are both False.")
    reps = check_seq("use_reps", use_reps)
    baselines = _check_baselines(baselines)
    if not reps and not baselines:
        raise DfmInputError("Nothing to score: pass use_reps and/or baselines.")
    clash = [BASELINE_KEYS[b] for b in baselines if BASELINE_KEYS[b] in reps]
    if clash:
        raise DfmInputError(
            f"use_reps {clash} share a name with a computed baseline; drop the baseline "
            "from baselines= or rename the .obsm key."
        )
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        raise DfmInputError(f"dataset must be a non-empty string or None, got {dataset!r}.")
    n_comps = check_int("n_comps", n_comps, minimum=1)
    n_top_genes = check_int("n_top_genes", n_top_genes, minimum=2)
    arrays = {k: get_rep(adata, k) for k in reps}
    targets = _baseline_targets(baseline_key_added, baselines, reps)
    # The single scorers' checks, run whether or not their part is enabled.
    ann = plan_annotation(
        adata,
        label_key,
        method=annotation_methods,
        n_splits=n_splits,
        seed=seed,
        n_neighbors=probe_neighbors,
        neighbors_name="probe_neighbors",
        prepare=annotation,
    )
    integ = plan_integration(
        adata,
        batch_key,
        label_key,
        metrics=metrics,
        knn_method=knn_method,
        seed=seed,
        n_jobs=n_jobs,
        check_batches=integration,
        kmeans_n_init=kmeans_n_init,
    )
    metrics = integ.metrics if integration else []
    seed = integ.seed
    batch_col = check_obs_key(adata, batch_key)
    if "harmony" in baselines and batch_col.nunique() < 2:
        raise DfmInputError(
            f"adata.obs[{batch_key!r}] has a single batch; drop 'harmony' from baselines."
        )
    X_pre = check_pre_integrated(adata, pre_integrated) if "pcr_comparison" in metrics else None
    pre_source = describe_pre_integrated(pre_integrated) if "pcr_comparison" in metrics else None

    # ---- compute (nothing is written until every score exists) ---------------
    with timed(f"benchmarking {len(reps)} embedding(s) and {len(baselines)} baseline(s)") as info:
        computed = _compute_baselines(
            adata, baselines, batch_key, need_pca=X_pre is None and "pcr_comparison" in metrics,
            layer=layer, n_comps=n_comps, n_top_genes=n_top_genes, seed=seed,
        )  # fmt: skip
        for b in baselines:
            arrays[BASELINE_KEYS[b]] = computed[b]
        pcr_pre = None
        if "pcr_comparison" in metrics:
            X_pre = computed["_reference"] if X_pre is None else X_pre
            pcr_pre = pcr_score(X_pre, integ.batch)

        rows: list[tuple] = []
        timings: dict[str, dict[str, float]] = {}
        agg_inputs: dict[str, dict[str, list[str]]] = {}
        groups = (["annotation"] if annotation else []) + (["integration"] if integration else [])
        with _progress(len(arrays) * len(groups), progress_bar) as bar:
            for emb, X in arrays.items():
                if annotation:
                    bar.set_description(f"{emb}: annotation probes")
                    for m, d in run_annotation(X, ann).items():
                        for k, v in d.items():
                            rows.append((emb, f"{m}_{k}", "annotation", v["mean"], v["sd"]))
                    bar.update()
                if integration:
                    bar.set_description(f"{emb}: integration metrics")
                    res = run_integration(X, integ, pcr_pre=pcr_pre)
                    timings[emb] = res["timings"]
                    agg_inputs[emb] = res["aggregate_inputs"]
                    for m in metrics:
                        rows.append((emb, m, res["groups"][m], res["metrics"][m], np.nan))
                    for m, v in res["aggregate"].items():
                        rows.append((emb, m, "aggregate", v, np.nan))
                    bar.update()
        df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        df["value"] = df["value"].astype(float)
        df["sd"] = df["sd"].astype(float)
        df.attrs.update(
            name=name, dataset=dataset, label_key=label_key, batch_key=batch_key,
            n_cells=int(adata.n_obs),
        )  # fmt: skip

        not_evaluated = {}
        if not annotation:
            not_evaluated["annotation"] = "annotation=False"
        if not integration:
            not_evaluated["integration"] = "integration=False"
        extra_versions = ("harmonypy",) if "harmony" in baselines else ()
        report: dict[str, Any] = {
            "created_by": _uns.provenance("tl.benchmark"),
            "inputs": {
                "dataset": dataset,
                "use_reps": reps,
                "baselines": [BASELINE_KEYS[b] for b in baselines],
                "batch_key": batch_key,
                "label_key": label_key,
                "layer": layer,
                "n_cells": int(adata.n_obs),
                "n_labels": int(adata.obs[label_key].nunique()),
                "n_batches": int(batch_col.nunique()),
                "embedding_sources": _embedding_sources(adata, reps),
                "pre_integrated": pre_source,
            },
            "params": {
                "annotation": annotation,
                "integration": integration,
                "metrics": metrics,
                "annotation_methods": ann.methods if annotation else [],
                "n_splits": ann.n_splits,
                "probe_neighbors": ann.n_neighbors,
                "knn_method": integ.knn_method,
                "kmeans_n_init": integ.kmeans_n_init,
                "n_neighbors": integ.n_neighbors if integration else 0,
                "n_comps": n_comps,
                "n_top_genes": n_top_genes,
                "pcr_pre": pcr_pre,
                "aggregate": "; ".join(f"{k} = {v}" for k, v in AGGREGATE_FORMULAS.items())
                + " (NaN metrics skipped in the group means, as the scib-metrics Benchmarker)",
            },
            "seeds": {"seed": seed},
            "versions": _versions(extra_versions),
            "scores": {c: df[c].to_numpy() for c in RESULT_COLUMNS},
            "aggregate_inputs": agg_inputs,
            "excluded_classes": [str(c) for c in ann.excluded] if annotation else [],
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


def _compute_baselines(
    adata, baselines, batch_key, *, need_pca, layer, n_comps, n_top_genes, seed
) -> dict[str, np.ndarray]:
    """Compute the baselines asked for, and the PCA as ``'_reference'`` (the PCR reference)."""
    out: dict[str, np.ndarray] = {}
    if not (need_pca or baselines):
        return out
    from .._baselines import harmony_baseline, pca_baseline

    pca = pca_baseline(adata, layer=layer, n_comps=n_comps, n_top_genes=n_top_genes, seed=seed)
    out["_reference"] = pca
    if "pca" in baselines:
        out["pca"] = pca
    if "harmony" in baselines:
        out["harmony"] = harmony_baseline(adata, batch_key, pca=pca, seed=seed)
    return out


def _progress(total: int, progress_bar: bool | None = None):
    """Return a tqdm bar over the (embedding, score group) steps, or a silent stand-in."""
    from ..._settings import settings

    show = settings.progress_bar if progress_bar is None else progress_bar
    if not show or total <= 1:
        return nullcontext(_NoBar())
    from ..._logging import tqdm

    return tqdm(total=total, desc="benchmark", unit="step", leave=False)


class _NoBar:
    def set_description(self, _desc: str) -> None:
        pass

    def update(self, _n: int = 1) -> None:
        pass
