"""Quality of the native embedding (dfm.tl.embed, default budget) against the PCA baseline.

For each dataset in ../shared/data/singlecell: kNN annotation macro-F1
(dfm.tl.score_annotation, 5-fold stratified CV, k=15) and the scib-metrics
bio-conservation / batch-correction aggregates (dfm.tl.score_integration) of
``X_dfm`` and of the PCA baseline (50 PCs of log-normalised HVGs), plus the
wall and process CPU time of ``dfm.tl.embed(adata)`` (pretraining included).

    python benchmarks/bench_quality.py [--datasets pbmc_3batch_symphony ...]
        [--batch-key] [--json out.json] [pretrain options as key=value ...]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np

import diffbio_sc as dfm
from diffbio_sc.tl._baselines import pca_baseline

DATA = Path(
    os.environ.get("DFM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DATASETS = ("pbmc_3batch_symphony", "celllines_5tech_mixology", "pbmc_ifnb_kang")


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(v, v)


def run(name: str, *, use_batch_key: bool, pretrain_kwargs: dict) -> dict:
    adata = ad.read_h5ad(DATA / "singlecell" / f"{name}.h5ad")
    adata.obsm["X_pca_baseline"] = pca_baseline(adata)
    kw = dict(pretrain_kwargs)
    if use_batch_key:
        kw["batch_key"] = "batch"
    w0, c0 = time.perf_counter(), time.process_time()
    dfm.tl.embed(adata, progress_bar=False, **kw)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    training = adata.uns["dfm"]["embeddings"]["X_dfm"]["training"]
    row = {
        "dataset": name,
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "embed_wall_s": wall,
        "embed_cpu_s": cpu,
        "epochs": int(training["epochs_run"]),
        "steps": int(training["steps"]),
        "vocab": int(training["n_vocab_genes"]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rep, tag in (("X_dfm", "dfm"), ("X_pca_baseline", "pca")):
            ann = dfm.tl.score_annotation(adata, rep, "cell_type")
            row[f"{tag}_f1"] = ann["scores"]["knn"]["macro_f1"]["mean"]
            integ = dfm.tl.score_integration(adata, rep, "batch", "cell_type")
            row[f"{tag}_bio"] = integ["aggregate"]["bio_conservation"]
            row[f"{tag}_batch"] = integ["aggregate"]["batch_correction"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--batch-key", action="store_true", help="pretrain with batch_key='batch'")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("options", nargs="*", help="pretrain options, key=value")
    args = p.parse_args()
    # `--datasets a b epochs=3` hands the key=value options to --datasets too.
    options = [d for d in args.datasets if "=" in d] + list(args.options)
    datasets = [d for d in args.datasets if "=" not in d]
    missing = [d for d in datasets if not (DATA / "singlecell" / f"{d}.h5ad").is_file()]
    if missing:
        p.error(f"datasets not found in {DATA / 'singlecell'}: {missing}")
    kw = {k: _parse_value(v) for k, v in (o.split("=", 1) for o in options)}
    rows = [run(d, use_batch_key=args.batch_key, pretrain_kwargs=kw) for d in datasets]
    print(
        "| dataset | cells x genes | vocab | epochs (steps) | embed wall s | embed CPU s "
        "| kNN macro-F1 dfm | PCA | bio dfm | PCA | batch dfm | PCA |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['cells']} x {r['genes']} | {r['vocab']} | "
            f"{r['epochs']} ({r['steps']}) | {r['embed_wall_s']:.0f} | {r['embed_cpu_s']:.0f} | "
            f"{r['dfm_f1']:.3f} | {r['pca_f1']:.3f} | {r['dfm_bio']:.3f} | {r['pca_bio']:.3f} | "
            f"{r['dfm_batch']:.3f} | {r['pca_batch']:.3f} |"
        )
    wins = sum(r["dfm_f1"] >= r["pca_f1"] for r in rows)
    print(f"\nX_dfm macro-F1 >= PCA on {wins} of {len(rows)} datasets.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
