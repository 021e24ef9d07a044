"""Leave-one-gene-out attribution: statistics against references, simulated MT cohorts."""

from __future__ import annotations

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.ops._logo import fold_scores


def gram_variants(X, G):
    """Gram matrices with all genes, then without each gene (independent of the module)."""
    d = X.shape[1] // G
    out = [X @ X.T]
    for g in range(G):
        keep = np.ones(X.shape[1], bool)
        keep[g * d : (g + 1) * d] = False
        out.append(X[:, keep] @ X[:, keep].T)
    return np.stack(out)


@pytest.mark.parametrize("n_components", [100, 25, 5])
def test_gram_path_equals_explicit_pca_plus_ridge(n_components):
    rng = np.random.default_rng(1)
    n, G, d = 40, 3, 7
    X = rng.normal(size=(n, G * d))
    y = rng.random(n) < 0.5
    Ks = gram_variants(X, G)
    tr, te = np.arange(30), np.arange(30, 40)
    got = fold_scores(
        Ks,
        tr,
        te,
        y[tr, None],
        n_components=n_components,
        alpha=0.7,
        classifier="ridge",
        n_features=G * d,
    )
    for v in range(G + 1):
        cols = np.ones(G * d, bool)
        if v:
            cols[(v - 1) * d : v * d] = False
        F = X[:, cols]
        mu = F[tr].mean(0)
        _, sv, vt = np.linalg.svd(F[tr] - mu, full_matrices=False)
        k = min(n_components, len(sv))
        V = vt[:k].T
        Ztr, Zte = (F[tr] - mu) @ V, (F[te] - mu) @ V
        yc = np.where(y[tr], 1.0, -1.0)
        yc -= yc.mean()
        lam = 0.7 * (sv**2).sum() / tr.size
        w = np.linalg.solve(Ztr.T @ Ztr + lam * np.eye(k), Ztr.T @ yc)
        np.testing.assert_allclose(got[v, :, 0], Zte @ w, atol=1e-8)


def simulate(mt, path, n_subjects, seed):
    c = dfm.datasets.simulate_genetic_cohort(
        mt["fasta"],
        mt["gtf"],
        mt["genes"],
        path,
        n_subjects=n_subjects,
        contig_map=mt["contig_map"],
        seed=seed,
    )
    md = dfm.tl.embed_genes(
        mt["fasta"],
        mt["gtf"],
        path,
        genes=mt["genes"],
        contig_map=mt["contig_map"],
        projection=None,
    )
    return c, md


@pytest.mark.parametrize("n_components", [100, 6])
def test_feature_path_equals_gram_path(n_components):
    from diffbio_sc.ops._logo import fold_scores_primal

    rng = np.random.default_rng(2)
    n, G, d = 60, 4, 5  # 20 features < 60 subjects
    X = rng.normal(size=(n, G * d)) * rng.uniform(0.5, 2.0, size=G * d)
    Y = rng.random((n, 7)) < 0.5  # several labelings at once
    Ks = gram_variants(X, G)
    tr, te = np.arange(45), np.arange(45, 60)
    dual = fold_scores(
        Ks,
        tr,
        te,
        Y[tr],
        n_components=n_components,
        alpha=0.3,
        classifier="ridge",
        n_features=G * d,
    )
    primal = fold_scores_primal(X, G, tr, te, Y[tr], n_components=n_components, alpha=0.3)
    np.testing.assert_allclose(primal, dual, atol=1e-8)


@pytest.fixture(scope="module")
def cohort(mt, tmp_path_factory):
    return simulate(mt, tmp_path_factory.mktemp("cohort") / "cohort.vcf", 120, seed=1)


def test_causal_gene_is_flagged_and_ranked_first(cohort):
    c, md = cohort
    y = dfm.datasets.simulate_phenotype(c, "MT-ND2", effect=2.0, seed=3)
    res = dfm.tl.logo_attribution(md, y, n_repeats=10, n_folds=5, n_permutations=399, seed=0)
    assert list(res.columns[:9]) == [
        "gene",
        "delta_auc",
        "ci_low",
        "ci_high",
        "t",
        "p",
        "q",
        "significant",
        "rank",
    ]
    top = res.iloc[0]
    assert top["gene"] == "MT-ND2" and top["q"] < 0.05 and top["significant"]
    assert top["ci_low"] > 0
    assert res["significant"].sum() == 1
    assert res.attrs["auc_all"] > 0.5 and res.attrs["n_repeats"] * res.attrs["n_folds"] == 50
    # the corrected t-test sees the same deltas; same seed, same table
    t = dfm.tl.logo_attribution(md, y, n_repeats=10, n_folds=5, test="corrected_t", seed=0)
    a1 = dfm.tl.logo_attribution(md, y, n_repeats=2, n_permutations=19, seed=5)
    a2 = dfm.tl.logo_attribution(md, y, n_repeats=2, n_permutations=19, seed=5)
    np.testing.assert_array_equal(a1["p"], a2["p"])
    np.testing.assert_array_equal(a1["delta_auc"], a2["delta_auc"])
    np.testing.assert_allclose(
        t.set_index("gene")["delta_auc"], res.set_index("gene")["delta_auc"].loc[t["gene"]]
    )
    assert t.iloc[0]["gene"] == "MT-ND2" and t.iloc[0]["q"] < 0.05


@pytest.mark.slow
def test_null_cohorts_keep_false_positives_at_nominal_rate(mt, tmp_path):
    flagged, total = 0, 0
    for rep in range(20):
        c, md = simulate(mt, tmp_path / f"null{rep}.vcf", 100, seed=100 + rep)
        y = dfm.datasets.simulate_phenotype(c, None, seed=rep)
        res = dfm.tl.logo_attribution(md, y, n_permutations=199, seed=rep)
        flagged += int(res["significant"].sum())
        total += len(res)
    assert flagged / total <= 0.05


def test_logistic_classifier_and_bad_input(cohort):
    c, md = cohort
    y = dfm.datasets.simulate_phenotype(c, "MT-ND2", effect=2.0, seed=3)
    res = dfm.tl.logo_attribution(
        md, y, n_repeats=2, n_folds=2, classifier="logistic", test="corrected_t", n_components=10
    )
    assert set(res["gene"]) == set(md["genetics"].uns["dfm"]["genetics"]["gene_list"])
    with pytest.raises(DfmInputError, match="needs classifier='ridge'"):
        dfm.tl.logo_attribution(md, y, classifier="logistic")
    with pytest.raises(DfmInputError, match="binary phenotype; labels has 3 classes"):
        dfm.tl.logo_attribution(md, np.arange(len(y)) % 3)
    rare = np.zeros(len(y), bool)
    rare[:3] = True
    with pytest.raises(DfmInputError, match="rarer class has 3 subjects"):
        dfm.tl.logo_attribution(md, rare)
    with pytest.raises(DfmInputError, match="no modality 'dna'"):
        dfm.tl.logo_attribution(md, y, mod="dna")
    with pytest.raises(DfmInputError, match="one label per subject"):
        dfm.tl.logo_attribution(md, y[:-1])
    with pytest.raises(DfmInputError, match="Label column 'pheno' not found"):
        dfm.tl.logo_attribution(md, "pheno")
    md["genetics"].obs["pheno"] = np.where(y, "case", "control")
    by_col = dfm.tl.logo_attribution(md, "pheno", n_repeats=2, test="corrected_t")
    assert by_col.attrs["positive_class"] == "control"
    del md["genetics"].obs["pheno"]
