"""Quality against the default training budget, over seeds (issue 26, item 2).

``dfm.tl.embed(adata, seed=s)`` exactly as ``bench_quality.py`` runs it (method
``dfm``, no ``batch_key``), with the budget rule's ``DEFAULT_STEPS`` set to
``--steps`` (``epochs = clip(ceil(steps / steps_per_epoch), 5, 40)``; the cosine
schedule spans the shorter budget), scored by the same seeds: kNN macro-F1
(``dfm.tl.score_annotation``, as ``bench_quality.py``) and scib bio conservation
(``dfm.tl.score_integration`` with ``BIO_METRICS`` only, as
``bench_native_budget.py``: the mean of 7 metrics, Leiden NMI / ARI included, so
*not* ``bench_quality.py``'s ``bio``, the mean of its 5 default bio metrics; compare
bio between this script's records only). One JSON record per (dataset, seed) in
``benchmarks/results/quality_budget/steps<N>/``; ``--reuse`` skips those there.
The default budget's records are ``bench_quality.py``'s (``results/quality/``);
``--table`` prints both side by side (mean and sd over the seeds found).

    nice -n 10 python benchmarks/bench_budget_curve.py --steps 480 \\
        --datasets pbmc_3batch_symphony pbmc_ifnb_kang --seeds 0 1 2 --reuse
    python benchmarks/bench_budget_curve.py --steps 480 --table
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quality_budget"


def _record_path(steps: int, dataset: str, seed: int) -> Path:
    return RESULTS / f"steps{steps}" / f"{dataset}__seed{seed}.json"


def run_one(dataset: str, seed: int, steps: int, embeddings: Path | None = None) -> dict:
    """Embed with ``DEFAULT_STEPS = steps`` and score; return the record (``embeddings``: save Z)."""
    from bench_quality import LABEL_KEY, _run_dfm, load_dataset

    import diffbio_sc as dfm
    from diffbio_sc._schema import BIO_METRICS
    from diffbio_sc.tl import _pretrain

    adata = load_dataset(dataset)
    old = _pretrain.DEFAULT_STEPS
    _pretrain.DEFAULT_STEPS = steps
    try:
        Z, info = _run_dfm(adata, seed, None)
    finally:
        _pretrain.DEFAULT_STEPS = old
    adata.obsm["X_bench"] = Z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ann = dfm.tl.score_annotation(adata, "X_bench", LABEL_KEY, seed=seed)
        integ = dfm.tl.score_integration(
            adata, "X_bench", "batch", LABEL_KEY, metrics=list(BIO_METRICS), seed=seed
        )
    agg = integ["aggregate"]
    if embeddings is not None:
        embeddings.mkdir(parents=True, exist_ok=True)
        np.save(embeddings / f"{dataset}__seed{seed}__steps{steps}.npy", Z)
    return {
        "dataset": dataset,
        "seed": seed,
        "default_steps": steps,
        "cells": int(adata.n_obs),
        **info,
        "f1": float(ann["scores"]["knn"]["macro_f1"]["mean"]),
        "bio": float(agg["bio_conservation"]),
        "scib_metrics": {k: float(v) for k, v in integ["metrics"].items()},
        "load_avg_1m": os.getloadavg()[0],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(steps: int, datasets: list[str]) -> str:
    """Markdown rows, mean +/- sd over the seeds found: ``bench_quality.py``'s default records
    (its full scoring), this script's ``--steps 600`` and ``--steps steps`` records."""
    from bench_quality import RESULTS as DEFAULT_RESULTS
    from bench_quality import _fmt, _mean_sd

    lines = [
        "| set | budget | seeds | steps | CPU s | kNN macro-F1 | bio |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in datasets:
        for label, paths in (
            ("600, bench_quality records", sorted(DEFAULT_RESULTS.glob(f"{d}__dfm__seed*.json"))),
            *(
                (str(n), sorted((RESULTS / f"steps{n}").glob(f"{d}__seed*.json")))
                for n in sorted({600, steps}, reverse=True)
            ),
        ):
            recs = [json.loads(p.read_text()) for p in paths]
            if not recs:
                continue
            f1, bio, cpu = (_mean_sd([r[k] for r in recs]) for k in ("f1", "bio", "cpu_s"))
            seeds = ",".join(str(r["seed"]) for r in recs)
            lines.append(
                f"| {d} | {label} | {seeds} | {recs[0].get('steps')} | {cpu[0]:.0f} "
                f"| {_fmt(f1, 4)} | {_fmt(bio, 4)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, required=True, help="DEFAULT_STEPS of the budget rule")
    p.add_argument("--datasets", nargs="+", default=["pbmc_3batch_symphony", "pbmc_ifnb_kang"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--table", action="store_true")
    p.add_argument("--embeddings", type=Path, default=None, help="folder to save each X_dfm (.npy)")
    args = p.parse_args(argv)
    if not args.table:
        for seed in args.seeds:
            for d in args.datasets:
                path = _record_path(args.steps, d, seed)
                if args.reuse and path.is_file():
                    continue
                print(
                    f"[{time.strftime('%H:%M:%S')}] {d} seed {seed} steps {args.steps}", flush=True
                )
                rec = run_one(d, seed, args.steps, args.embeddings)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, path)
                print(
                    f"    steps {rec.get('steps')} f1 {rec['f1']:.4f} bio {rec['bio']:.4f} "
                    f"cpu {rec['cpu_s']:.0f}s",
                    flush=True,
                )
    print(table(args.steps, args.datasets))


if __name__ == "__main__":
    main()
