"""Quality of the native embedding against training epochs, with the kNN-agreement criterion (issue 26).

One ``dfm.tl.pretrain`` run (default budget unless ``epochs=`` is given); after
epochs 1, 2 and every ``--every`` epochs, every cell is embedded with the
current weights (eval mode). After training, each snapshot and the final
(best-validation-loss) embedding are scored: kNN macro-F1
(``dfm.tl.score_annotation``, k=15, 5-fold) and scib bio conservation
(``dfm.tl.score_integration`` restricted to the bio metrics: the mean of 7,
Leiden NMI / ARI included, where ``bench_quality.py``'s ``bio`` is the mean of
its 5 default ones, so the two are not comparable). The run's per-epoch
``val_knn_agreement`` (the label-free criterion of ``stop_agreement``) and
validation loss are saved beside them, as JSON in
``benchmarks/results/native_budget/<dataset>__seed<s>__<options>.json``.

    python benchmarks/bench_native_budget.py pbmc_3batch_symphony --seed 0 --every 2
    python benchmarks/bench_native_budget.py demo --seed 0 --every 2 epochs=5

``<name>=<value>`` sets a ``dfm.tl.pretrain`` option. A snapshot costs one
embedding pass plus ~12 CPU-s of scoring on 1,200-1,400 cells.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "native_budget"


def main(argv: list[str] | None = None) -> dict:
    from bench_native_variants import _parse
    from bench_quality import load_dataset

    import diffbio_sc as dfm
    from diffbio_sc._schema import BIO_METRICS
    from diffbio_sc.tl import _pretrain

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("options", nargs="*", help="pretrain options, name=value")
    args = p.parse_args(argv)
    kw = {k: _parse(v) for k, v in (o.split("=", 1) for o in args.options)}
    warnings.simplefilter("ignore")
    adata = load_dataset(args.dataset)
    snaps: dict[str, np.ndarray] = {}
    monitor = _pretrain._agreement_monitor

    def with_snapshots(data, val_idx, seed, stop, min_epochs):
        hook = monitor(data, val_idx, seed, stop, min_epochs, record=True)
        everything = data(np.arange(adata.n_obs))

        def epoch_end(model, epoch):
            out = hook(model, epoch)
            if epoch < 2 or (epoch + 1) % args.every == 0:
                z = _pretrain._embed_step()(model, everything["ids"], everything["vals"])
                snaps[str(epoch + 1)] = np.asarray(z)
            return out

        return epoch_end

    _pretrain._agreement_monitor = with_snapshots
    c0, w0 = time.process_time(), time.perf_counter()
    model = dfm.tl.pretrain(adata, seed=args.seed, progress_bar=False, **kw)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    _pretrain._agreement_monitor = monitor
    tr = model.metadata["training"]
    dfm.tl.embed(adata, model, progress_bar=False)
    snaps["final"] = np.asarray(adata.obsm["X_dfm"])
    rec = {
        "dataset": args.dataset,
        "seed": args.seed,
        "options": kw,
        "pretrain_cpu_s": round(cpu, 1),
        "pretrain_wall_s": round(wall, 1),
        **{k: tr[k] for k in ("epochs", "epochs_run", "steps", "best_epoch", "stopped_early")},
        "val_knn_agreement": model.history["val_knn_agreement"],
        "val_loss": model.history["val_loss"],
        "snapshots": [],
    }
    for ep, Z in snaps.items():
        adata.obsm["Z"] = Z
        ann = dfm.tl.score_annotation(adata, "Z", "cell_type", seed=args.seed)
        agg = dfm.tl.score_integration(
            adata, "Z", "batch", "cell_type", metrics=list(BIO_METRICS), seed=args.seed
        )["aggregate"]
        row = {
            "epoch": ep,
            "f1": round(float(ann["scores"]["knn"]["macro_f1"]["mean"]), 4),
            "bio": round(float(agg["bio_conservation"]), 4),
        }
        rec["snapshots"].append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{k}{v}" for k, v in sorted(kw.items())) or "default"
    path = RESULTS / f"{args.dataset}__seed{args.seed}__{tag}.json"
    path.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "snapshots"}), flush=True)
    return rec


if __name__ == "__main__":
    main()
