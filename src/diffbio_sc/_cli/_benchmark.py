"""``dfm benchmark``: score embeddings against baselines; write ``scores.csv`` + ``scores.png``."""

from __future__ import annotations

import argparse
import contextlib

from ._common import (
    Reporter,
    add_common,
    command,
    input_file,
    positive_int,
    read_h5ad,
    report_dir,
    seed,
)

REPORT_FILES = ("scores.csv", "scores.png")


def _benchmark(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    import diffbio_sc as dfm

    from ..io._atomic import atomic_path

    say = Reporter(args)
    src = input_file(args.input, "input AnnData")
    out = report_dir(args.out, REPORT_FILES, force=args.force)
    adata = read_h5ad(src)
    say(f"read {adata.n_obs} cells x {adata.n_vars} genes from {src}")
    say(f"scoring {', '.join(args.use_rep)} and baselines {', '.join(args.baselines) or '-'}")
    results = dfm.tl.benchmark(
        adata,
        args.use_rep,
        batch_key=args.batch_key,
        label_key=args.label_key,
        baselines=tuple(args.baselines),
        name=args.name,
        annotation=not args.no_annotation,
        integration=not args.no_integration,
        seed=args.seed,
        layer=args.layer,
        metrics=args.metrics,
        annotation_methods=tuple(args.annotation_methods),
        n_splits=args.n_splits,
        n_jobs=args.n_jobs,
        dataset=args.dataset or src.stem,
    )
    fig = dfm.pl.benchmark(results, name=args.name, dpi=args.dpi)
    created = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        # both files are written before either is committed (the inner one first)
        with (
            atomic_path(out / "scores.csv", what="scores table") as csv_tmp,
            atomic_path(out / "scores.png", what="scores figure") as png_tmp,
        ):
            results.to_csv(csv_tmp, index=False)
            fig.savefig(png_tmp, dpi=args.dpi, facecolor="white", bbox_inches="tight")
    except BaseException:
        if created:  # a folder made for this run and left empty by the failure
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        plt.close(fig)
    if not args.quiet:  # the verdict first, then the scores grouped under their aggregate
        from ..tl._scoring._verdict import format_results

        print(format_results(results, title=f"{args.dataset or src.stem}"), flush=True)
    say(f"wrote {out / 'scores.csv'} and {out / 'scores.png'}")
    return 0


def add_parser(sub) -> None:
    """Register ``dfm benchmark``."""
    p = command(
        sub,
        "benchmark",
        _benchmark,
        help="score embeddings against PCA/Harmony baselines: scores.csv + scores.png",
        description="Score embeddings in .obsm for cell-type annotation (kNN / logistic probes, "
        "cross-validated) and batch integration (scib-metrics) against baselines computed on "
        "the same cells (dfm.tl.benchmark), and draw the results table (dfm.pl.benchmark). "
        "Writes OUT_DIR/scores.csv (one row per embedding and metric) and OUT_DIR/scores.png.",
    )
    p.add_argument("input", metavar="IN.h5ad", help="AnnData with the embeddings (never modified)")
    p.add_argument("--use-rep", nargs="+", required=True, metavar="KEY", help=".obsm keys to score")
    p.add_argument("--batch-key", required=True, help=".obs column with the batch")
    p.add_argument("--label-key", required=True, help=".obs column with the cell types")
    p.add_argument(
        "--baselines",
        nargs="*",
        choices=("pca", "harmony"),
        default=["pca"],
        help="baselines computed from the counts (none: pass --baselines with no names)",
    )
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="OUT_DIR",
        help="folder for scores.csv and scores.png (created if missing)",
    )
    p.add_argument("--name", default="default", help="report name (in .uns and the figure)")
    p.add_argument("--dataset", help="dataset name in the figure title (default: the file name)")
    p.add_argument("--layer", help="layer with raw counts for the baselines (default: .X)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the splits and baselines")
    p.add_argument("--n-splits", type=positive_int, default=5, help="cross-validation folds")
    p.add_argument("--n-jobs", type=positive_int, default=1, help="threads for the metrics")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="integration metrics to compute, e.g. kbet ilisi (default: the full scib set)",
    )
    p.add_argument(
        "--annotation-methods",
        nargs="+",
        choices=("knn", "logreg"),
        default=["knn", "logreg"],
        help="annotation probes",
    )
    p.add_argument("--no-annotation", action="store_true", help="skip the annotation probes")
    p.add_argument("--no-integration", action="store_true", help="skip the scib-metrics")
    p.add_argument("--dpi", type=positive_int, default=150, help="resolution of scores.png")
    add_common(p)
