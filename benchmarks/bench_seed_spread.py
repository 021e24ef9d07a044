"""The native model's spread over training seeds, and checkpoint averaging, from one run (issue 26).

One default ``dfm.tl.pretrain(adata, seed=s)`` run (no ``batch_key``) per
dataset and seed. A hook on the trainer's ``epoch_end`` (it only reads the
model, so the weights are those of a plain run) embeds every cell with the
weights at the end of each epoch from the middle of the run on, and keeps a
copy of the weights at the ends of the epochs where 75%, 90% and 100% of the
step budget are done (``dfm.tl.pretrain(average_checkpoints=...)``'s
default fractions). From that one run, three embeddings are scored the same
way as ``bench_quality.py`` does (kNN macro-F1, scib bio / batch / total with
one and with ten KMeans starts; same seed for method and scoring):

* ``default``: ``dfm.tl.embed(adata, model)`` with the weights the run returns
  (the best validation loss): what ``dfm.tl.embed(adata, seed=s)`` writes;
* ``weight_mean``: the model with the mean of the three checkpoints' weights
  (what ``average_checkpoints`` returns);
* ``embedding_mean``: the mean of the three checkpoints' embeddings.

So the default and the variants are paired exactly (same training run). Per
epoch, the snapshot's kNN macro-F1 and its KMeans ARI / NMI (ten starts)
show whether a seed's merged clusters are there at every checkpoint or come
late. CPU: the run's pretraining CPU without the hook's work, and the CPU of
averaging the weights. Results as JSON in
``benchmarks/results/seed_spread/<dataset>__seed<s>.json``.

    python benchmarks/bench_seed_spread.py celllines_5tech_mixology --seed 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "seed_spread"
FRACTIONS = (0.75, 0.9, 1.0)


def checkpoint_epochs(total_steps: int, steps_per_epoch: int, fractions=FRACTIONS) -> list[int]:
    """1-based epochs at whose end ``f`` of ``total_steps`` are done, for each fraction ``f``."""
    return sorted({math.ceil(f * total_steps / steps_per_epoch) for f in fractions})


def score_bio(adata, Z, seed: int, batch_metrics: dict) -> dict:
    """:func:`bench_quality.score` with scib's bio metrics only; the batch metrics are taken
    from ``batch_metrics`` (another embedding's), so ``batch`` and ``total`` are not this one's."""
    import diffbio_sc as dfm
    from diffbio_sc.ops._scoring import aggregate_scores

    work = adata.copy()
    work.obsm["X_bench"] = np.asarray(Z, dtype=np.float32)
    bio = ["silhouette_label", "isolated_labels", "clisi", "kmeans_nmi", "kmeans_ari"]
    ann = dfm.tl.score_annotation(work, "X_bench", "cell_type", seed=seed)
    integ = dfm.tl.score_integration(work, "X_bench", "batch", "cell_type", metrics=bio, seed=seed)
    values = {**batch_metrics, **{k: float(v) for k, v in integ["metrics"].items()}}
    agg, _ = aggregate_scores(values)
    return {
        "f1": ann["scores"]["knn"]["macro_f1"]["mean"],
        "bio": agg["bio_conservation"],
        "batch": agg.get("batch_correction", math.nan),
        "total": agg.get("total", math.nan),
        "scib_metrics": values,
        "kmeans_n_init": 1,
    }


def record_variant(rec: dict, name: str, row: dict) -> None:
    """Store a variant's scores in ``rec['variants']`` and print them (rounded)."""
    rec["variants"][name] = row
    print(name, json.dumps({k: round(v, 4) for k, v in row.items() if k != "metrics_10"}),
          flush=True)  # fmt: skip


def score_epochs(adata, snaps: dict, late: int, args, rec: dict) -> None:
    """Score the per-epoch snapshots into ``rec['epochs_scored']``: kNN F1, KMeans (10 starts).

    Every epoch from ``late`` (the first checkpoint) on, every second one before it;
    nothing with ``--no-epoch-scores``.
    """
    import diffbio_sc as dfm

    for e in [] if args.no_epoch_scores else sorted(snaps):
        if e < late and e % 2:
            continue
        work = adata.copy()
        work.obsm["Z"] = snaps[e]
        ann = dfm.tl.score_annotation(work, "Z", "cell_type", seed=args.seed)
        km = dfm.tl.score_integration(
            work, "Z", "batch", "cell_type", metrics=["kmeans_nmi", "kmeans_ari"],
            seed=args.seed, kmeans_n_init=10,
        )["metrics"]  # fmt: skip
        row = {
            "epoch": e,
            "f1": round(float(ann["scores"]["knn"]["macro_f1"]["mean"]), 4),
            "kmeans_ari_10": round(float(km["kmeans_ari"]), 4),
            "kmeans_nmi_10": round(float(km["kmeans_nmi"]), 4),
        }
        rec["epochs_scored"].append(row)
        print(json.dumps(row), flush=True)


def rescore_bio(adata, args) -> dict:
    """Score a kept run's embeddings with kNN F1 and the bio metrics (1 and 10 KMeans starts)."""
    import diffbio_sc as dfm
    from diffbio_sc.ops._scoring import aggregate_scores

    out = args.results / f"{args.dataset}__seed{args.seed}.json"
    rec = json.loads(out.with_suffix(".partial.json").read_text())
    rec["scoring"] = "bio metrics and kNN F1 only (--rescore-bio): no batch / total"
    with np.load(out.with_suffix(".npz")) as f:
        Z = {k: f[k] for k in ("default", "weight_mean", "embedding_mean")}
        snaps = {int(k[5:]): f[k] for k in f.files if k.startswith("epoch")}
    for name, z in Z.items():
        s1 = score_bio(adata, z, args.seed, {})
        work = adata.copy()
        work.obsm["Z"] = np.asarray(z, np.float32)
        km = dfm.tl.score_integration(
            work, "Z", "batch", "cell_type", metrics=["kmeans_nmi", "kmeans_ari"],
            seed=args.seed, kmeans_n_init=10,
        )["metrics"]  # fmt: skip
        values = {**s1["scib_metrics"], **{k: float(v) for k, v in km.items()}}
        s10 = {"bio": aggregate_scores(values)[0]["bio_conservation"], "scib_metrics": values}
        row = {
            "f1": s1["f1"],
            "bio_1": s1["bio"],
            "bio_10": s10["bio"],
            "kmeans_ari_1": s1["scib_metrics"]["kmeans_ari"],
            "kmeans_ari_10": s10["scib_metrics"]["kmeans_ari"],
            "metrics_10": s10["scib_metrics"],
        }
        record_variant(rec, name, row)
    score_epochs(adata, snaps, min(rec["checkpoint_epochs"]), args, rec)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, out)
    return rec


def main(argv: list[str] | None = None) -> dict:
    import jax
    from bench_quality import load_dataset, rescore_kmeans, score
    from flax import nnx

    import diffbio_sc as dfm
    from diffbio_sc.models._train import _restore
    from diffbio_sc.tl import _pretrain, pca_baseline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "--no-epoch-scores", action="store_true",
        help="skip scoring the per-epoch snapshots (they are still kept in the .npz)",
    )  # fmt: skip
    p.add_argument(
        "--rescore-bio", action="store_true",
        help="score the embeddings kept by an earlier run (its .npz and .partial.json) with "
        "the kNN F1 and scib's bio metrics only (no batch metrics: kBET alone is ~55 CPU-s), "
        "for a machine too loaded to finish the full scoring",
    )  # fmt: skip
    p.add_argument(
        "--no-score", action="store_true",
        help="stop after training: keep the embeddings (.npz, .partial.json) for --rescore-bio",
    )  # fmt: skip
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    adata = load_dataset(args.dataset)
    if args.rescore_bio:
        return rescore_bio(adata, args)
    n = adata.n_obs
    snaps: dict[int, np.ndarray] = {}
    ckpts: dict[int, dict] = {}
    hook_cpu = [0.0]
    plan = {}

    def with_snapshots(data, val_idx, seed, stop, min_epochs):
        everything = data(np.arange(n))
        n_val = len(val_idx)
        n_train = n - n_val
        bs = min(64, n_train)
        spe = max(n_train // bs, 1)
        epochs = _pretrain.auto_epochs(n_train, bs)
        plan.update(
            steps_per_epoch=spe,
            epochs=epochs,
            checkpoints=checkpoint_epochs(epochs * spe, spe),
        )

        def epoch_end(model, epoch):
            c0 = time.process_time()
            e = epoch + 1
            if e >= plan["epochs"] // 2:
                z = _pretrain._embed_step()(model, everything["ids"], everything["vals"])
                snaps[e] = np.asarray(z)
            if e in plan["checkpoints"]:
                pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
                ckpts[e] = jax.tree.map(lambda x: np.array(x, copy=True), pure)
            hook_cpu[0] += time.process_time() - c0
            return {}, False

        return epoch_end

    monitor = _pretrain._agreement_monitor
    _pretrain._agreement_monitor = with_snapshots
    c0, w0 = time.process_time(), time.perf_counter()
    load0 = os.getloadavg()[0]
    try:
        model = dfm.tl.pretrain(adata, seed=args.seed, progress_bar=False)
    finally:
        _pretrain._agreement_monitor = monitor
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    tr = model.metadata["training"]
    best = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    best = jax.tree.map(lambda x: np.array(x, copy=True), best)

    def embed_now() -> np.ndarray:
        work = adata.copy()
        dfm.tl.embed(work, model, progress_bar=False)
        return np.asarray(work.obsm["X_dfm"], np.float32)

    Z = {"default": embed_now()}
    used = [e for e in plan["checkpoints"] if e in ckpts]
    c1 = time.process_time()
    mean_w = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *[ckpts[e] for e in used])
    avg_cpu = time.process_time() - c1
    _restore(model, mean_w)
    Z["weight_mean"] = embed_now()
    Z["embedding_mean"] = np.mean(np.stack([snaps[e] for e in used]), axis=0)
    _restore(model, best)

    pca_ref = pca_baseline(adata, seed=0)
    rec = {
        "dataset": args.dataset,
        "seed": args.seed,
        "cells": n,
        "pretrain_cpu_s": round(cpu, 1),
        "hook_cpu_s": round(hook_cpu[0], 1),
        "pretrain_cpu_s_without_hook": round(cpu - hook_cpu[0], 1),
        "weight_average_cpu_s": round(avg_cpu, 3),
        "pretrain_wall_s": round(wall, 1),
        "load_avg_1m_start": load0,
        "load_avg_1m_end": os.getloadavg()[0],
        **{k: tr[k] for k in ("epochs", "epochs_run", "steps", "best_epoch", "stopped_early")},
        "checkpoint_epochs": used,
        "val_loss": model.history["val_loss"],
        "variants": {},
        "epochs_scored": [],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{args.dataset}__seed{args.seed}.json"
    np.savez(
        out.with_suffix(".npz"), **{k: v for k, v in Z.items()},
        **{f"epoch{e}": v for e, v in snaps.items()},
    )  # fmt: skip
    out.with_suffix(".partial.json").write_text(json.dumps(rec, indent=1) + "\n")
    if args.no_score:
        return rec
    for name, z in Z.items():
        if name == "embedding_mean":  # secondary: bio metrics and F1 only (kBET is ~55 CPU-s)
            s1 = score_bio(adata, z, args.seed, rec["variants"]["default"]["metrics_10"])
        else:
            s1 = score(adata, z, args.seed, pca_ref, 1)
        s10 = rescore_kmeans(adata, z, args.seed, s1, 10)
        row = {
            "f1": s1["f1"],
            "bio_1": s1["bio"],
            "total_1": s1["total"],
            "bio_10": s10["bio"],
            "batch": s10["batch"],
            "total_10": s10["total"],
            "kmeans_ari_1": s1["scib_metrics"]["kmeans_ari"],
            "kmeans_ari_10": s10["scib_metrics"]["kmeans_ari"],
            "metrics_10": s10["scib_metrics"],
        }
        record_variant(rec, name, row)
    score_epochs(adata, snaps, min(used), args, rec)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, out)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in rec.items() if k not in ("epochs_scored", "val_loss")}))
    return rec


if __name__ == "__main__":
    main()
