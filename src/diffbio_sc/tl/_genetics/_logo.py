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
from ..._validate import DfmInputError, check_choice, check_float, check_int, check_seed
from ._embed_genes import genetics_record
from ._threads import single_thread_blas

__all__ = ["logo_attribution", "nadeau_bengio", "benjamini_hochberg", "auc_rows"]

logger = logging.getLogger("diffbio_sc")


def auc_rows(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores (..., m)`` against binary labels ``y`` (``(m,)`` or ``(..., m)``).

    Ties count one half (Mann-Whitney U). NaN where a row has one class only.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    ranks = rankdata(scores, axis=-1)
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def nadeau_bengio(
    deltas: np.ndarray,
    n_train: float,
    n_test: float,
    *,
    alternative: str = "greater",
    ci: float = 0.95,
) -> dict[str, np.ndarray]:
    """Corrected resampled t-test over the last axis of ``deltas`` (one row per gene).

    Returns ``mean``, ``t``, ``p``, ``ci_low``, ``ci_high`` arrays. A row with
    zero variance gets ``p = 1`` when its mean is 0 (the gene never changes a
    prediction) and ``p = 0`` otherwise.
    """
    from scipy import stats

    d = np.atleast_2d(np.asarray(deltas, dtype=np.float64))
    J = d.shape[-1]
    mean = d.mean(axis=-1)
    var = d.var(axis=-1, ddof=1)
    se = np.sqrt((1.0 / J + n_test / n_train) * var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    df = J - 1
    if alternative == "greater":
        p = stats.t.sf(t, df)
    elif alternative == "less":
        p = stats.t.cdf(t, df)
    else:
        p = 2 * stats.t.sf(np.abs(t), df)
    p = np.where((se == 0) & (mean == 0), 1.0, p)
    half = stats.t.ppf(0.5 + ci / 2, df) * se
    return {"mean": mean, "t": t, "p": p, "ci_low": mean - half, "ci_high": mean + half}


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), monotone and capped at 1."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def _center(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre train Grams ``A (v, n, n)`` and test-train Grams ``B (v, m, n)``.

    Both are centred on the training mean in feature space.
    """
    col = A.mean(axis=-2, keepdims=True)  # (v, 1, n)
    row = A.mean(axis=-1, keepdims=True)  # (v, n, 1)
    tot = A.mean(axis=(-2, -1), keepdims=True)
    Ac = A - col - row + tot
    Bc = B - col - B.mean(axis=-1, keepdims=True) + tot
    return Ac, Bc


def _fold_scores(
    Ks: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    Y_tr: np.ndarray,
    *,
    n_components: int,
    alpha: float,
    classifier: str,
    n_features: int | None = None,
) -> np.ndarray:
    """Held-out decision scores ``(v, n_test, n_labelings)`` for each Gram in ``Ks (v, n, n)``.

    ``Y_tr (n_train, n_labelings)`` holds boolean labelings of the training
    subjects (the observed one first, then permutations); the ridge fit is
    linear in the labels, so all labelings share one factorisation per Gram.
    """
    A = Ks[:, tr[:, None], tr]  # one gather, no intermediate copy
    B = Ks[:, te[:, None], tr]
    Ac, Bc = _center(A, B)
    n_tr = tr.size
    Yc = np.where(Y_tr, 1.0, -1.0)
    Yc = Yc - Yc.mean(axis=0, keepdims=True)
    trace = np.trace(Ac, axis1=-2, axis2=-1)
    lam = alpha * np.maximum(trace, 1e-300) / n_tr
    lossless = n_components >= min(n_tr, n_features or n_tr)
    if classifier == "ridge" and lossless:
        # scores = Bc (Ac + lam I)^-1 Yc; solve for the (test x train) map first, so the
        # many labelings cost one matrix product.
        M = np.linalg.solve(
            Ac + lam[:, None, None] * np.eye(n_tr), Bc.transpose(0, 2, 1)
        ).transpose(0, 2, 1)
        return M @ Yc
    e, U = np.linalg.eigh(Ac)  # ascending
    e, U = e[:, ::-1], U[:, :, ::-1]
    k = min(n_components, n_tr)
    e, U = e[:, :k], U[:, :, :k]
    keep = e > np.maximum(e[:, :1] * n_tr * np.finfo(np.float64).eps, 0)
    if classifier == "ridge":
        w = np.where(keep, 1.0 / (e + lam[:, None]), 0.0)  # (v, k)
        M = ((Bc @ U) * w[:, None, :]) @ U.transpose(0, 2, 1)  # (v, m, n_train)
        return M @ Yc
    from sklearn.linear_model import LogisticRegression

    out = np.empty((len(Ks), te.size, Y_tr.shape[1]))
    for v in range(len(Ks)):
        kv = keep[v]
        s = np.sqrt(e[v, kv])
        Z_tr = U[v][:, kv] * s
        Z_te = (Bc[v] @ U[v][:, kv]) / s
        scale = Z_tr.std(axis=0)
        scale[scale == 0] = 1.0
        for j in range(Y_tr.shape[1]):
            model = LogisticRegression(C=1.0 / alpha, max_iter=5000)
            model.fit(Z_tr / scale, Y_tr[:, j])
            out[v, :, j] = model.decision_function(Z_te / scale)
    return out


def _fold_scores_primal(
    X: np.ndarray,
    G: int,
    tr: np.ndarray,
    te: np.ndarray,
    Y_tr: np.ndarray,
    *,
    n_components: int,
    alpha: float,
) -> np.ndarray:
    """Compute the scores of :func:`_fold_scores` (ridge) from features, not Gram matrices.

    Used when there are fewer features than subjects: the work is on
    ``(features x features)`` covariance matrices and memory does not grow with
    the square of the cohort. With ``n_components`` below the number of
    features the PCA axes are the top eigenvectors of each variant's training
    covariance; otherwise the PCA is lossless and ridge is solved directly.
    """
    n_tr, D = tr.size, X.shape[1]
    d = D // G
    mu = X[tr].mean(axis=0)
    Xtr, Xte = X[tr] - mu, X[te] - mu
    Yc = np.where(Y_tr, 1.0, -1.0)
    Yc = Yc - Yc.mean(axis=0, keepdims=True)
    C = Xtr.T @ Xtr  # (D, D)
    XtY = Xtr.T @ Yc  # (D, L)
    keep = np.ones((G + 1, D), dtype=bool)
    for g in range(G):
        keep[g + 1, g * d : (g + 1) * d] = False
    out = np.empty((G + 1, te.size, Yc.shape[1]))
    eye_full, eye_minus = np.eye(D), np.eye(D - d)
    for v in range(G + 1):
        cols = np.flatnonzero(keep[v])
        Cv = C[np.ix_(cols, cols)]
        lam = alpha * max(np.trace(Cv), 1e-300) / n_tr
        if n_components >= min(n_tr, cols.size):
            eye = eye_full if v == 0 else eye_minus
            # (Cv + lam I) is symmetric: solve for whichever side has fewer columns.
            if te.size < XtY.shape[1]:
                out[v] = np.linalg.solve(Cv + lam * eye, Xte[:, cols].T).T @ XtY[cols]
            else:
                out[v] = Xte[:, cols] @ np.linalg.solve(Cv + lam * eye, XtY[cols])
            continue
        e, V = np.linalg.eigh(Cv)
        e, V = e[::-1][:n_components], V[:, ::-1][:, :n_components]
        ok = e > max(e[0], 0.0) * cols.size * np.finfo(np.float64).eps
        W = V[:, ok] @ ((V[:, ok].T @ XtY[cols]) / (e[ok] + lam)[:, None])
        out[v] = Xte[:, cols] @ W
    return out


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
        Modality name in a MuData.
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
    with single_thread_blas(n):
        for tr, te in splitter.split(np.zeros(n), y):
            if primal:
                scores = _fold_scores_primal(
                    X, G, tr, te, Y[tr], n_components=n_components, alpha=alpha
                )
            else:
                scores = _fold_scores(
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
