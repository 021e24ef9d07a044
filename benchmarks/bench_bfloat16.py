"""Accuracy of the opt-in bfloat16 path of ``dfm.tl.embed_checkpoint`` against float32.

A random-weight Geneformer-sized checkpoint (built with transformers, as in
``bench_checkpoints.py``) embeds the same real cells twice through the user
path, ``dtype='float32'`` (the default) and ``dtype='bfloat16'`` (bfloat16
matrix-product inputs, float32 accumulation); printed per configuration:

* the largest absolute difference of the pooled embeddings and their scale
  (largest absolute value), the minimum and median cosine between a cell's two
  embeddings;
* kNN agreement: the mean fraction of each cell's ``--k`` nearest neighbours
  (Euclidean, the cell itself excluded) that the two embeddings share;
* the CPU seconds of each warm call (one process, not a peer comparison: see
  ``bench_checkpoints.py --dtypes float32,bfloat16`` for the timed comparison).

    python benchmarks/bench_bfloat16.py [--n-cells 512] [--deep-cells 64] [--k 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_checkpoints import CONFIGS, build_checkpoint, prepare  # noqa: E402


def knn_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean fraction of shared ``k`` nearest neighbours (Euclidean, self excluded)."""

    def neighbours(x):
        sq = (x * x).sum(1)
        d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    na, nb = neighbours(a.astype(np.float64)), neighbours(b.astype(np.float64))
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(na, nb, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=512, help="PBMC cells")
    ap.add_argument("--deep-cells", type=int, default=64, help="deep cell-line cells (0: skip)")
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()

    import diffbio_sc as dfm

    dfm.settings.progress_bar = False
    sets = [("pbmc_3batch_symphony", args.n_cells, 0)]
    if args.deep_cells:
        sets.append(("celllines_5tech_mixology", args.deep_cells, 2048))
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.configs:
            cfg = dict(CONFIGS[name])
            v2 = cfg.pop("v2")
            for dataset, n, min_genes in sets:
                sub, medians, _ = prepare(dataset, n, args.seed, tmp, min_genes)
                ckpt = tmp / f"ckpt_{int(v2)}_{dataset}"  # a dictionary of the data's genes
                build_checkpoint(args.torch_python, ckpt, cfg, sub, medians, v2=v2)
                model = dfm.models.load_checkpoint(ckpt)
                max_tokens = 2048 if min_genes else None
                emb, cpu = {}, {}
                for dt in ("float32", "bfloat16"):
                    for _ in range(2):  # the second (warm) call is timed
                        c = time.process_time()
                        dfm.tl.embed_checkpoint(
                            sub, model, dtype=dt, max_tokens=max_tokens, key_added="e"
                        )
                        cpu[dt] = time.process_time() - c
                    emb[dt] = sub.obsm["e"].copy()
                a, b = emb["float32"], emb["bfloat16"]
                cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
                rows.append(
                    (
                        f"{name}, {dataset}, {n} cells"
                        + (f" (>= {min_genes} genes, 2,048 tokens)" if min_genes else ""),
                        f"{np.abs(a - b).max():.1e} (scale {np.abs(a).max():.2f})",
                        f"{cos.min():.6f} / {np.median(cos):.6f}",
                        f"{knn_agreement(a, b, args.k):.3f}",
                        f"{cpu['float32']:.1f} / {cpu['bfloat16']:.1f}",
                    )
                )
                print(rows[-1], flush=True)
    print(
        f"\nCommand: python benchmarks/bench_bfloat16.py --n-cells {args.n_cells} "
        f"--deep-cells {args.deep_cells} --k {args.k}; {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {os.getloadavg()}\n"
    )
    print(
        f"| model, cells | max abs diff | cosine min / median | kNN agreement (k={args.k}) "
        "| warm CPU s float32 / bfloat16 |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, diff, cos, knn, cpu in rows:
        print(f"| {label} | {diff} | {cos} | {knn} | {cpu} |")


if __name__ == "__main__":
    main()
