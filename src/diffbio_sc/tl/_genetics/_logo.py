r"""``dfm.tl.logo_attribution``: leave-one-gene-out delta-AUC with valid statistics.

Protocol
--------
For each of ``n_repeats`` seeded stratified ``n_folds``-fold splits, and in
every fold: fit the projection (PCA to ``n_components``, centred on the
training subjects) and a linear classifier on the training subjects with all
genes, then again without each gene, and score every model by AUC on the
held-out subjects. The per-fold difference ``AUC(all genes) - AUC(without g)``
is gene ``g``'s delta-AUC.

Because the ``J = n_repeats * n_folds`` delta-AUCs share training data they are
not independent, and a naive t-test (or a per-fold test) is wrong in both
directions. We use the corrected resampled t-test of Nadeau & Bengio (2003),
as recommended by Bouckaert & Frank (2004) for repeated k-fold CV:

.. math::

    t = \frac{\bar d}{\sqrt{(1/J + n_{test}/n_{train})\, s^2}}, \qquad
    \text{df} = J - 1,

with :math:`s^2` the sample variance of the :math:`d_j`. p-values are one-sided
(``alternative='greater'``, "the gene helps") by default, and corrected for the
number of genes by Benjamini-Hochberg. By default the p-values come from a
permutation test instead (see Test).

Computation
-----------
Everything is linear in the features, so it runs on Gram matrices: with
:math:`K_g = X_g X_g^T` for each gene block, the model without gene ``g``
uses :math:`K - K_g`. PCA of the training rows is the eigendecomposition of
the centred training Gram matrix, and the ridge classifier (least squares on
:math:`\pm 1` labels, penalty :math:`\lambda = \alpha\,\mathrm{tr}(K_c)/n_{train}`,
which makes it invariant to the scale of the embeddings) on the top ``k``
principal scores predicts

.. math::

    f(x) = \sum_{j \le k} \frac{(k_c(x)^T u_j)(u_j^T y_c)}{e_j + \lambda}.

When ``n_components`` is at least the number of training subjects or of
features, the PCA keeps every informative axis and this equals kernel ridge,
:math:`f = K_{c,te}(K_c + \lambda I)^{-1} y_c`, solved directly. All genes of
a fold are batched into one stacked solve. With fewer features than subjects
the same fit runs on ``(features x features)`` covariance matrices instead
(PCA axes from each variant's training covariance), so memory does not grow
with the square of the cohort. Since the fit is linear in the labels, the
permutation test's relabelings share each solve (one extra matrix product).
Held-out scores are compared by AUC (Mann-Whitney, ties count half).

Test
----
``test='permutation'`` (default): the statistic is each gene's mean
delta-AUC over all resamples; the labels are permuted ``n_permutations``
times (the same folds, all genes refitted), and
``p = (1 + #{perm >= observed}) / (1 + n_permutations)``. Under "no gene
carries information about the phenotype" this is a valid test whatever the
dependence between folds. ``test='corrected_t'`` is the Nadeau-Bengio
corrected resampled t-test above (cheaper, approximate: a chance association in
the sample recurs in every fold, which its variance correction only partly
covers). The confidence interval is the corrected-t interval in both cases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ... import _keys
from ..._logging import tqdm
from ..._settings import settings
from ..._validate import (
    DfmInputError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_seed,
)
from ...ops._logo import fold_scores, fold_scores_primal
from ...ops._stats import auc_rows, benjamini_hochberg, nadeau_bengio
from ...ops._threads import single_thread_blas
from .._target import check_mod
from ._embed_genes import genetics_record

__all__ = ["logo_attribution"]

logger = logging.getLogger("diffbio_sc")


def _get_data(data, mod: str | None, labels):
    """Return ``(X_genes, gene_list, gene_dim, labels array, obs_names)``."""
    import anndata as ad

    obs_extra = None
    if type(data).__name__ == "MuData":
        if mod not in data.mod:
            raise DfmInputError(
                f"The MuData has no modality {mod!r}; modalities: {list(data.mod)}. Run "
                "dfm.tl.embed_genes first or pass mod=."
            )
        obs_extra = data.obs
        adata = data.mod[mod]
    elif isinstance(data, ad.AnnData):
        adata = data
    else:
        raise TypeError(
            f"data must be the MuData (or its genetics AnnData) from dfm.tl.embed_genes, got "
            f"{type(data).__name__}."
        )
    if _keys.GENE_EMBEDDINGS_KEY not in adata.obsm:
        raise DfmInputError(
            f"No per-gene embeddings (.obsm[{_keys.GENE_EMBEDDINGS_KEY!r}]) found; run "
            "dfm.tl.embed_genes first."
        )
    X = np.asarray(adata.obsm[_keys.GENE_EMBEDDINGS_KEY], dtype=np.float64)
    genes = genetics_record(adata)[_keys.GENE_LIST_KEY]
    if X.shape[1] % len(genes):
        raise DfmInputError(
            f"{X.shape[1]} embedding columns do not split into {len(genes)} equal gene blocks."
        )
    if isinstance(labels, str):
        if labels in adata.obs.columns:
            y = adata.obs[labels]
        elif obs_extra is not None and labels in obs_extra.columns:
            y = obs_extra.loc[adata.obs_names, labels]
        else:
            raise DfmInputError(
                f"Label column {labels!r} not found in .obs; available: {list(adata.obs.columns)}."
            )
        y = y.to_numpy()
    else:
        y = np.asarray(labels)
        if y.shape != (adata.n_obs,):
            raise DfmInputError(
                f"labels has shape {y.shape}; expected one label per subject ({adata.n_obs})."
            )
    return X, genes, X.shape[1] // len(genes), y, adata.obs_names


def logo_attribution(
    data,
    labels: str | Sequence | np.ndarray,
    *,
    mod: str = _keys.GENETICS_MOD,
    n_repeats: int = 10,
    n_folds: int = 5,
    n_components: int = 512,
    classifier: str = "ridge",
    alpha: float = 1.0,
    alternative: str = "greater",
    ci: float = 0.95,
    fdr: float = 0.05,
    test: str = "permutation",
    n_permutations: int = 999,
    seed: int = 0,
    return_deltas: bool = False,
    progress_bar: bool | None = None,
) -> pd.DataFrame:
    """Attribute a binary phenotype to genes by leave-one-gene-out delta-AUC.

    Parameters
    ----------
    data
        The MuData from :func:`embed_genes` (or its genetics AnnData): uses
        ``.obsm['X_dfm_genes']`` and the gene list in ``.uns['dfm']['genetics']``. The projection is
        refitted from these per-gene vectors inside every fold, never taken
        from the stored (all-subject) projection.
    labels
        An ``.obs`` column (of the modality, or of the MuData) or an array, one
        binary label per subject. The rarer class needs at least ``n_folds``
        subjects.
    mod
        Modality name in a MuData (default ``'genetics'``); with an AnnData, a
        value other than the default is an error.
    n_repeats, n_folds
        Repeated stratified K-fold (at least 2 x 2; 10 x 5 by default).
    n_components
        PCA width, fitted on the training subjects of each fold.
    classifier
        ``'ridge'`` (closed form, vectorised; default) or ``'logistic'``
        (scikit-learn, L2, on standardised principal scores; slower).
    alpha
        Regularisation: ridge penalty relative to the mean training variance
        (``lambda = alpha * tr(K_c) / n_train``), or ``C = 1/alpha`` for logistic.
    alternative
        ``'greater'`` (the gene improves AUC), ``'two-sided'`` or ``'less'``.
    ci
        Confidence level of the interval on the mean delta-AUC.
    fdr
        Benjamini-Hochberg level for ``significant``.
    test
        ``'permutation'`` (default) or ``'corrected_t'`` (module notes).
    n_permutations
        Label permutations for ``test='permutation'`` (the smallest p-value is
        ``1 / (1 + n_permutations)``: with many genes, use enough to pass the
        BH threshold, e.g. 999 for 15 genes at 5%).
    seed
        Seed of the fold assignment and of the permutations.
    return_deltas
        Also return the ``(n_genes, n_repeats * n_folds)`` delta-AUC array.
    progress_bar
        Show a tqdm bar over the folds; ``None`` follows ``dfm.settings.progress_bar``.

    Returns
    -------
    pandas.DataFrame
        One row per gene, sorted by mean delta-AUC (largest first): ``gene``,
        ``delta_auc`` (mean), ``ci_low``, ``ci_high``, ``t``, ``p``, ``q`` (BH),
        ``significant`` (``q < fdr``), ``rank``. ``p`` is the permutation
        p-value (or the corrected t-test's); ``t`` and the CI are always the
        corrected t-test's. ``.attrs`` holds ``auc_all``
        (mean held-out AUC with all genes), ``auc_all_sd`` and the settings.
        With ``return_deltas``, ``(table, deltas)``.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    n_repeats = check_int("n_repeats", n_repeats, minimum=1)
    n_folds = check_int("n_folds", n_folds, minimum=2)
    if n_repeats * n_folds < 4:
        raise DfmInputError("Use at least 4 resamples (e.g. n_repeats=10, n_folds=5).")
    n_components = check_int("n_components", n_components, minimum=1)
    check_choice("classifier", classifier, ("ridge", "logistic"))
    alpha = check_float("alpha", alpha, minimum=0.0, strict_min=True)
    check_choice("alternative", alternative, ("greater", "two-sided", "less"))
    ci = check_float("ci", ci, minimum=0.0, maximum=1.0, strict_min=True)
    fdr = check_float("fdr", fdr, minimum=0.0, maximum=1.0, strict_min=True)
    check_choice("test", test, ("permutation", "corrected_t"))
    n_permutations = check_int("n_permutations", n_permutations, minimum=19)
    if test == "permutation" and classifier != "ridge":
        raise DfmInputError(
            "test='permutation' refits every labeling through one shared factorisation, "
            "which needs classifier='ridge'; use test='corrected_t' with 'logistic'."
        )
    seed = check_seed(seed)
    show_bar = (
        settings.progress_bar if progress_bar is None else check_bool("progress_bar", progress_bar)
    )
    check_mod(data, mod, _keys.GENETICS_MOD)
    X, genes, d, y_raw, _ = _get_data(data, mod, labels)
    if pd.isna(pd.Series(y_raw)).any():
        raise DfmInputError("labels has missing values; drop those subjects first.")
    classes = np.unique(y_raw)
    if classes.size != 2:
        raise DfmInputError(
            f"logo_attribution needs a binary phenotype; labels has {classes.size} classes "
            f"({list(classes[:5])})."
        )
    y = y_raw == classes[1]
    if min(y.sum(), (~y).sum()) < n_folds:
        raise DfmInputError(
            f"The rarer class has {int(min(y.sum(), (~y).sum()))} subjects; stratified "
            f"{n_folds}-fold CV needs at least {n_folds}."
        )
    if not np.isfinite(X).all():
        raise DfmInputError("The gene embeddings hold NaN or infinite values.")
    n, G = X.shape[0], len(genes)
    if G < 2:
        raise DfmInputError("Leave-one-gene-out needs at least 2 genes.")

    primal = classifier == "ridge" and G * d < n
    if not primal:
        blocks = X.reshape(n, G, d)
        K_gene = np.einsum("igd,jgd->gij", blocks, blocks)  # (G, n, n)
        K_all = K_gene.sum(axis=0)
        Ks = np.concatenate([K_all[None], K_all[None] - K_gene], axis=0)  # all, then minus g
        del K_gene

    splitter = RepeatedStratifiedKFold(n_splits=n_folds, n_repeats=n_repeats, random_state=seed)
    rng = np.random.default_rng(seed)
    n_perm = n_permutations if test == "permutation" else 0
    Y = np.column_stack([y] + [rng.permutation(y) for _ in range(n_perm)])  # (n, 1 + B)
    fold_aucs = []  # per fold: (1 + B, G + 1)
    n_tr_list, n_te_list = [], []
    bar = tqdm(
        total=n_repeats * n_folds, desc="logo", unit="fold", disable=not show_bar, leave=False
    )
    with single_thread_blas(n), bar:
        for tr, te in splitter.split(np.zeros(n), y):
            bar.update(1)
            if primal:
                scores = fold_scores_primal(
                    X, G, tr, te, Y[tr], n_components=n_components, alpha=alpha
                )
            else:
                scores = fold_scores(
                    Ks,
                    tr,
                    te,
                    Y[tr],
                    n_components=n_components,
                    alpha=alpha,
                    classifier=classifier,
                    n_features=G * d,
                )  # (G + 1, m, 1 + B)
            fold_aucs.append(auc_rows(scores.transpose(2, 0, 1), Y[te].T[:, None, :]))
            n_tr_list.append(tr.size)
            n_te_list.append(te.size)
    aucs = np.asarray(fold_aucs)  # (J, 1 + B, G + 1)
    all_deltas = aucs[:, :, :1] - aucs[:, :, 1:]  # (J, 1 + B, G)
    deltas = all_deltas[:, 0].T  # observed, (G, J)
    stats = nadeau_bengio(
        deltas,
        float(np.mean(n_tr_list)),
        float(np.mean(n_te_list)),
        alternative=alternative,
        ci=ci,
    )
    if test == "permutation":
        T = np.nanmean(all_deltas, axis=0)  # (1 + B, G)
        obs, null = T[0], T[1:]
        if alternative == "greater":
            exceed = null >= obs - 1e-12
        elif alternative == "less":
            exceed = null <= obs + 1e-12
        else:
            exceed = np.abs(null) >= np.abs(obs) - 1e-12
        stats["p"] = (1.0 + exceed.sum(axis=0)) / (1.0 + n_perm)
    aucs = aucs[:, 0]  # observed labels, (J, G + 1)
    q = benjamini_hochberg(stats["p"])
    table = pd.DataFrame(
        {
            "gene": genes,
            "delta_auc": stats["mean"],
            "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"],
            "t": stats["t"],
            "p": stats["p"],
            "q": q,
            "significant": q < fdr,
        }
    )
    table = table.sort_values(["delta_auc", "p"], ascending=[False, True], kind="stable")
    table["rank"] = np.arange(1, G + 1)
    table = table.reset_index(drop=True)
    table.attrs.update(
        {
            "auc_all": float(aucs[:, 0].mean()),
            "auc_all_sd": float(aucs[:, 0].std(ddof=1)),
            "n_repeats": n_repeats,
            "n_folds": n_folds,
            "n_subjects": n,
            "positive_class": str(classes[1]),
            "test": test,
            "n_permutations": n_perm,
            "alternative": alternative,
            "fdr": fdr,
            "ci": ci,
            "classifier": classifier,
            "n_components": n_components,
            "alpha": alpha,
            "seed": seed,
        }
    )
    logger.info(
        "logo_attribution: %d genes, %d resamples, AUC(all) %.3f, %d significant at q<%.2g",
        G,
        aucs.shape[0],
        table.attrs["auc_all"],
        int(table["significant"].sum()),
        fdr,
    )
    if return_deltas:
        return table, deltas
    return table
