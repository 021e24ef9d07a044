"""How much scib's KMeans terms move with the scoring seed alone, on one fixed embedding (issue 26).

Scores the seed-0 PCA baseline (``dfm.tl.pca_baseline``) of each dataset with
scib-metrics' ``KMeans`` (as ``dfm.tl.score_integration`` runs it: one
initialisation, k = number of cell types) at seeds 0-11 and prints the KMeans ARI
of each seed. The embedding never changes, so every spread is the scorer's.

    python benchmarks/bench_kmeans_seeds.py celllines_5tech_mixology demo
"""

from __future__ import annotations

import sys
import warnings


def main(names: list[str]) -> None:
    import numpy as np
    from bench_quality import load_dataset
    from scib_metrics.utils import KMeans
    from sklearn.metrics import adjusted_rand_score

    from diffbio_sc.tl import pca_baseline

    warnings.simplefilter("ignore")
    for name in names:
        adata = load_dataset(name)
        X = np.asarray(pca_baseline(adata, seed=0), np.float32)
        y = np.unique(adata.obs["cell_type"].astype(str), return_inverse=True)[1]
        aris = []
        for seed in range(12):
            km = KMeans(int(y.max() + 1), seed=seed)
            km.fit(X.copy())
            aris.append(round(float(adjusted_rand_score(y, np.asarray(km.labels_))), 2))
        print(f"{name}: KMeans ARI of the seed-0 PCA at scoring seeds 0-11: {aris}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["celllines_5tech_mixology", "demo"])
