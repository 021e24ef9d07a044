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

    from ..io._atomic import atomic_dir, atomic_path
    from ._common import is_disk_full, write_h5ad

    out = _check_out(args.out, force=args.force)
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
    step(f"  embedding .obsm['X_dfm'] {adata.obsm['X_dfm'].shape}")

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
    # The whole results folder is written at once (atomic_dir): a crash, a full disk
    # or Ctrl-C leaves the previous folder (or none), never a half-written one.
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, what="demo results folder") as stage:
        model.save(stage / "model")
        with atomic_path(stage / "scores.csv", what="scores table") as tmp:
            results.to_csv(tmp, index=False)
        try:
            fig = dfm.pl.benchmark(results)  # titled by the dataset, with the verdict
            import matplotlib.pyplot as plt

            with atomic_path(stage / "scores.png", what="scores figure") as tmp:
                fig.savefig(tmp, dpi=150, bbox_inches="tight", facecolor="white")
            plt.close(fig)
        except Exception as err:  # plotting is a convenience: report, do not fail the demo
            if is_disk_full(err):
                raise
            step(f"  (plot skipped: {err})")
        write_h5ad(adata, stage / "demo.h5ad")  # atomic, and an HDF5 crash cannot take us down
        summary = {
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "seconds": round(time.perf_counter() - t0, 1),
            "scores": {c: table[c].dropna().round(4).to_dict() for c in table.columns},
        }
        with atomic_path(stage / "summary.json", what="summary") as tmp:
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


def _check_out(path: str, *, force: bool) -> Path:
    """Check ``--out`` before any work: a folder, not there yet unless ``force``.

    Missing parent folders are created only when the results are written; the
    nearest existing one must be writable.
    """
    import os

    out = Path(path).resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {path!r} is a file; pass a folder for the results.")
    if out.exists() and not force:
        raise FileExistsError(
            f"--out {path!r} already exists; pass --force to replace it (the whole folder) or "
            "choose another name."
        )
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"--out {path!r} cannot be created: {str(ancestor)!r} is not a writable folder. "
            "Choose a writable location."
        )
    return out


def add_parser(sub) -> None:
    """Register ``dfm demo``."""
    from ._common import EPOCH_BUDGET_CELLS, add_common, command, positive_int, seed

    demo = command(
        sub,
        "demo",
        _demo,
        help="tokenize -> pretrain -> embed -> score against PCA on the bundled demo data",
        description="Run the main job on the bundled demo data (5 lung-cancer cell lines x 5 "
        "protocols): tokenize, pretrain the native model, embed, and score the embedding "
        "against PCA. Writes demo.h5ad, scores.csv, scores.png, summary.json and the model.",
    )
    demo.add_argument(
        "--out",
        default="dfm_demo_results",
        help="output folder, written whole at the end (an existing one needs --force)",
    )
    demo.add_argument("--seed", type=seed, default=0, help="seed of every random step")
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"training epochs (default: the library's budget; {EPOCH_BUDGET_CELLS})",
    )
    demo.add_argument(
        "--n-cells",
        type=positive_int,
        default=None,
        help="subsample cells (quick runs; default: all 1,408)",
    )
    add_common(demo, quiet=False)
