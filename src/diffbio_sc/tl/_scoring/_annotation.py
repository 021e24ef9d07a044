"""Cell-type annotation probes on one embedding (AnnData wrapper over the probe kernel).

:func:`plan_annotation` validates the arguments and prepares the labels once;
:func:`run_annotation` scores one embedding array with that plan. Both
:func:`score_annotation` and :func:`~diffbio_sc.tl.benchmark` use the pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._logging import timed
from ..._validate import check_adata, check_float, check_int, check_key, check_obs_key, check_seed
from ...ops._scoring import annotation_kernel
from ._checks import (
    check_methods,
    check_n_splits,
    check_probe_neighbors,
    get_rep,
    prepare_annotation_labels,
)


@dataclass(frozen=True)
class AnnotationPlan:
    """Validated probe options and the prepared labels of one AnnData."""

    label_key: str
    methods: list[str]
    n_splits: int
    seed: int
    n_neighbors: int
    max_iter: int
    C: float
    mask: np.ndarray
    y: np.ndarray
    excluded: np.ndarray
    n_classes: int

    def params(self) -> dict[str, Any]:
        """Return the options as recorded in results."""
        return {
            "label_key": self.label_key,
            "methods": self.methods,
            "n_splits": self.n_splits,
            "seed": self.seed,
            "n_neighbors": self.n_neighbors,
            "max_iter": self.max_iter,
            "C": self.C,
        }


def plan_annotation(
    adata,
    label_key: str,
    *,
    method: str | Sequence[str] = "knn",
    n_splits: int = 5,
    seed: int = 0,
    n_neighbors: int = 15,
    max_iter: int = 1000,
    C: float = 1.0,
    neighbors_name: str = "n_neighbors",
    prepare: bool = True,
) -> AnnotationPlan:
    """Check the probe options and prepare the labels (rare classes excluded, with a warning).

    With ``prepare=False`` only the options are checked (the benchmark with
    ``annotation=False``); the plan then holds no labels.
    """
    check_key("label_key", label_key)
    methods = check_methods(method)
    n_splits = check_n_splits(n_splits)
    n_neighbors = check_probe_neighbors(n_neighbors, neighbors_name)
    seed = check_seed(seed)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    C = check_float("C", C, minimum=0.0, strict_min=True)
    labels = check_obs_key(adata, label_key).astype(str).to_numpy()
    if prepare:
        mask, y, small, n_classes = prepare_annotation_labels(labels, n_splits, label_key)
    else:
        mask, y, small, n_classes = np.ones(labels.size, bool), np.zeros(0, int), np.zeros(0), 0
    return AnnotationPlan(
        label_key, methods, n_splits, seed, n_neighbors, max_iter, C, mask, y, small, n_classes
    )


def run_annotation(X: np.ndarray, plan: AnnotationPlan) -> dict[str, dict[str, dict]]:
    """Probe scores of one embedding: ``{method: {metric: {'mean', 'sd', 'folds'}}}``."""
    folds = annotation_kernel(
        np.asarray(X[plan.mask], dtype=np.float64),
        plan.y,
        methods=plan.methods,
        n_splits=plan.n_splits,
        seed=plan.seed,
        n_neighbors=plan.n_neighbors,
        max_iter=plan.max_iter,
        C=plan.C,
    )
    return {
        m: {
            k: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "folds": v}
            for k, v in d.items()
        }
        for m, d in folds.items()
    }


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
        Key of ``adata.obsm`` holding the embedding (any numeric dtype; scored as
        float).
    label_key
        Column of ``adata.obs`` with the cell labels.
    method
        ``'knn'``, ``'logreg'`` or a list of both.
    n_splits
        Number of cross-validation folds (an integer >= 2).
    seed
        Seed of the fold shuffling and of the logistic regression.
    n_neighbors
        Neighbours of the kNN probe (capped at the training-fold size).
    max_iter, C
        Iterations and inverse regularisation strength (> 0) of the logistic
        regression.

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
    plan = plan_annotation(
        adata,
        label_key,
        method=method,
        n_splits=n_splits,
        seed=seed,
        n_neighbors=n_neighbors,
        max_iter=max_iter,
        C=C,
    )
    X = get_rep(adata, use_rep, dtype=np.float64)
    with timed(f"scoring annotation of {use_rep!r} ({', '.join(plan.methods)})"):
        scores = run_annotation(X, plan)
    return {
        "scores": scores,
        "excluded_classes": plan.excluded.tolist(),
        "n_excluded_cells": int((~plan.mask).sum()),
        "n_cells": int(plan.mask.sum()),
        "n_classes": plan.n_classes,
        "params": {"use_rep": use_rep, **plan.params()},
    }
