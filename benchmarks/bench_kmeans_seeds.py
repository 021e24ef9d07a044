"""How much scib's KMeans terms move with the scoring seed alone, on fixed embeddings (issue 26).

Scores the PCA baselines (``dfm.tl.pca_baseline``, seeds 0-2) of each dataset with
``dfm.tl.score_integration(metrics=['kmeans_nmi', 'kmeans_ari'], seed=s,
kmeans_n_init=n)`` at scoring seeds 0-11, with one KMeans start (scib-metrics'
own behaviour, ``n = 1``) and with the best of ten (``n = 10``). The embedding
never changes with the scoring seed, so every spread is the scorer's.

Bio conservation and the total follow from the other metrics of the same
embedding, which do not depend on the scoring seed (silhouettes, cLISI, the
graph and batch metrics; the PCR reference is the seed-0 PCA): they are read
from ``bench_quality.py``'s cached PCA record of the same PCA seed
(``benchmarks/results/quality``) and only the two KMeans terms are replaced.

Printed per dataset and number of starts: the KMeans ARI at each scoring seed
(PCA seed 0), the sd over scoring seeds 0-11 of ARI / NMI / bio / total (PCA
seed 0), and the three-seed protocol of ``bench_quality.py`` (PCA seed ``s``
scored at seed ``s``, s = 0-2: mean and sd of bio and total). The numbers are
also written to ``benchmarks/results/kmeans_seeds.json``.

    python benchmarks/bench_kmeans_seeds.py celllines_5tech_mixology demo
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

N_INITS = (1, 10)
SCORING_SEEDS = tuple(range(12))
PCA_SEEDS = (0, 1, 2)
OUT = Path(__file__).resolve().parent / "results" / "kmeans_seeds.json"


def kmeans_terms(adata, Z, seed: int, n_init: int) -> dict[str, float]:
    """``kmeans_nmi`` and ``kmeans_ari`` of ``Z`` as ``dfm.tl.score_integration`` scores them."""
    import numpy as np
    from bench_quality import BATCH_KEY, LABEL_KEY

    import diffbio_sc as dfm

    work = adata.copy()
    work.obsm["X_fixed"] = np.asarray(Z, np.float32)
    res = dfm.tl.score_integration(
        work, "X_fixed", BATCH_KEY, LABEL_KEY, metrics=["kmeans_nmi", "kmeans_ari"],
        seed=seed, kmeans_n_init=n_init,
    )  # fmt: skip
    return res["metrics"]


def with_kmeans(record: dict, terms: dict[str, float]) -> tuple[float, float]:
    """Bio conservation and total of a cached record with its KMeans terms replaced."""
    from diffbio_sc.ops._scoring import aggregate_scores

    agg, _ = aggregate_scores({**record["scib_metrics"], **terms})
    return agg["bio_conservation"], agg["total"]


def _sd(values) -> float:
    import numpy as np

    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1))


def main(names: list[str]) -> dict:
    import numpy as np
    from bench_quality import load_dataset, load_records

    from diffbio_sc.tl import pca_baseline

    warnings.simplefilter("ignore")
    cached = {(r["dataset"], r["seed"]): r for r in load_records() if r["method"] == "pca"}
    report: dict = {}
    for name in names:
        adata = load_dataset(name)
        embeddings = {p: np.asarray(pca_baseline(adata, seed=p), np.float32) for p in PCA_SEEDS}
        for n in N_INITS:
            # PCA seed 0 at every scoring seed
            rows = [kmeans_terms(adata, embeddings[0], s, n) for s in SCORING_SEEDS]
            bio_total = [with_kmeans(cached[(name, 0)], t) for t in rows]
            # the three-seed protocol: PCA seed s scored at seed s
            paired = [
                with_kmeans(cached[(name, p)], kmeans_terms(adata, embeddings[p], p, n))
                for p in PCA_SEEDS
            ]
            entry = {
                "ari": [round(t["kmeans_ari"], 4) for t in rows],
                "nmi": [round(t["kmeans_nmi"], 4) for t in rows],
                "bio": [round(b, 4) for b, _ in bio_total],
                "total": [round(t, 4) for _, t in bio_total],
                "sd_ari": _sd([t["kmeans_ari"] for t in rows]),
                "sd_nmi": _sd([t["kmeans_nmi"] for t in rows]),
                "sd_bio": _sd([b for b, _ in bio_total]),
                "sd_total": _sd([t for _, t in bio_total]),
                "paired_bio": [round(b, 4) for b, _ in paired],
                "paired_total": [round(t, 4) for _, t in paired],
                "paired_sd_total": _sd([t for _, t in paired]),
            }
            report[f"{name}/n_init={n}"] = entry
            print(
                f"{name}, {n} KMeans start(s), PCA seed 0 at scoring seeds 0-11: ARI {entry['ari']}\n"
                f"    sd over scoring seeds: ARI {entry['sd_ari']:.3f} NMI {entry['sd_nmi']:.3f} "
                f"bio {entry['sd_bio']:.3f} total {entry['sd_total']:.3f}; bio mean "
                f"{np.mean(entry['bio']):.3f}, total mean {np.mean(entry['total']):.3f}\n"
                f"    PCA seed s at scoring seed s (s = 0-2): bio {entry['paired_bio']} "
                f"total {entry['paired_total']} (sd {entry['paired_sd_total']:.3f})",
                flush=True,
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:] or ["celllines_5tech_mixology", "demo"])
