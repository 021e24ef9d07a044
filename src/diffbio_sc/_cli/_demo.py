"""``dfm demo``: the main job on the bundled demo data, end to end."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: The bundled data, as the results name it (figure title, report, printed verdict).
DATASET = "sc_mixology cell lines (5 lung-cancer lines x 5 protocols)"


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    import diffbio_sc as dfm

    from ..io._atomic import atomic_path
    from ..io._embeddings import make_parent_dirs

    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise SystemExit(f"dfm demo: --out {str(out)!r} is a file; pass a folder for the results.")
    try:
        make_parent_dirs(out / "summary.json")
    except OSError as err:
        raise SystemExit(f"dfm demo: {err}") from None
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    dfm.settings.progress_bar = not args.no_progress
    step("loading the bundled demo data (5 lung-cancer cell lines x 5 protocols)")
    adata = dfm.datasets.celllines_demo()
    if args.n_cells and args.n_cells < adata.n_obs:
        rng = np.random.default_rng(args.seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, args.n_cells, replace=False))].copy()
    step(f"  {adata.n_obs} cells x {adata.n_vars} genes, raw counts")

    step("dfm.pp.gene_medians + dfm.pp.tokenize (Geneformer rank-value encoding)")
    dfm.pp.gene_medians(adata)
    dfm.pp.tokenize(adata, recipe="geneformer_v1")
    n_tok = adata.obs["dfm_n_tokens"].to_numpy()
    step(
        f"  tokens: .obsm['dfm_tokens'] {adata.obsm['dfm_tokens'].shape}, "
        f"median {int(np.median(n_tok))} genes per cell"
    )
    step("dfm.pp.bin_expression (scGPT per-cell bins)")
    dfm.pp.bin_expression(adata)

    step("dfm.tl.pretrain + dfm.tl.embed (native masked-expression transformer)")
    model = dfm.tl.pretrain(adata, seed=args.seed, epochs=args.epochs)
    dfm.tl.embed(adata, model)
    model_dir = out / "model"
    model.save(model_dir)
    step(f"  embedding .obsm['X_dfm'] {adata.obsm['X_dfm'].shape}; model saved to {model_dir}")

    step("dfm.tl.benchmark: native embedding vs PCA baseline (kNN annotation + scib-metrics)")
    results = dfm.tl.benchmark(
        adata,
        ["X_dfm"],
        batch_key="batch",
        label_key="cell_type",
        baselines=("pca",),
        name="demo",
        seed=args.seed,
        dataset=DATASET,
    )
    table = results.pivot_table(index="metric", columns="embedding", values="value")
    # Every output goes through atomic_path: a crash or a full disk leaves the
    # previous file (or none), never a half-written one.
    with atomic_path(out / "scores.csv", what="scores table") as tmp:
        results.to_csv(tmp, index=False)
    try:
        fig = dfm.pl.benchmark(results)  # titled by the dataset, with the verdict
        import matplotlib.pyplot as plt

        with atomic_path(out / "scores.png", what="scores figure") as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", facecolor="white")
        plt.close(fig)
    except Exception as err:  # plotting is a convenience: report, do not fail the demo
        step(f"  (plot skipped: {err})")
    with atomic_path(out / "demo.h5ad", what="demo AnnData") as tmp:
        adata.write_h5ad(tmp)
    summary = {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "seconds": round(time.perf_counter() - t0, 1),
        "scores": {c: table[c].dropna().round(4).to_dict() for c in table.columns},
    }
    with atomic_path(out / "summary.json", what="summary") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    from ..tl._scoring._verdict import format_results

    print()
    print(format_results(results, title=f"{DATASET}, {adata.n_obs:,} cells"))
    print()
    step("done. Wrote:")
    for name in ("demo.h5ad", "scores.csv", "scores.png", "summary.json", "model"):
        if (out / name).exists():
            print(f"    {out / name}")
    return 0


def add_parser(sub) -> None:
    """Register ``dfm demo`` (its options are unchanged from the first release)."""
    from ._common import command

    demo = command(
        sub,
        "demo",
        _demo,
        help="tokenize -> pretrain -> embed -> score against PCA on the bundled demo data",
        description="Run the main job on the bundled demo data (5 lung-cancer cell lines x 5 "
        "protocols): tokenize, pretrain the native model, embed, and score the embedding "
        "against PCA. Writes demo.h5ad, scores.csv, scores.png, summary.json and the model.",
    )
    demo.add_argument("--out", default="dfm_demo_results", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random step")
    demo.add_argument("--epochs", type=int, default=None, help="override the training budget")
    demo.add_argument("--n-cells", type=int, default=None, help="subsample cells (quick runs)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
